/**
 * `server.ts --http`: a web server is a wrapper around a socket. These tests
 * drive it with Deno's real HTTP client (`fetch()`), with raw sockets that
 * send exactly the bytes we choose, and with `client.ts --http`.
 */
import assert from "node:assert/strict";
import { randomBytes } from "./lib/bytes.ts";
import { readAll, writeAll } from "./lib/net.ts";
import {
  hasStackTrace,
  type RunningScript,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";

const sanitize = { sanitizeResources: true, sanitizeOps: true };

/** Start `server.ts --http --port 0` (plus `extra` flags). */
function startHttpServer(extra: string[] = []): Promise<RunningScript> {
  return startScript("server.ts", ["--http", "--port", "0", ...extra]);
}

/** A response split into its parts, as it came off the wire. */
interface RawResponse {
  statusLine: string;
  /** Header names in lower case. */
  headers: Map<string, string>;
  body: string;
  bodyBytes: number;
}

function parseResponse(bytes: Uint8Array): RawResponse {
  const text = new TextDecoder().decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  assert.ok(end > 0, `no end of header block in ${JSON.stringify(text)}`);
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    assert.ok(colon > 0, `bad header line ${JSON.stringify(line)}`);
    headers.set(
      line.slice(0, colon).toLowerCase(),
      line.slice(colon + 1).trim(),
    );
  }
  const headBytes = new TextEncoder().encode(text.slice(0, end + 4)).length;
  return {
    statusLine,
    headers,
    body: text.slice(end + 4),
    bodyBytes: bytes.length - headBytes,
  };
}

/**
 * Open a raw TCP connection, send `request` byte for byte, and read until the
 * server closes (EOF). The read has a failure guard, so a server that does
 * not close fails the test instead of hanging it.
 */
async function rawExchange(
  port: number,
  request: string | Uint8Array,
): Promise<{ reply: Uint8Array; localPort: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(
      conn,
      typeof request === "string" ? new TextEncoder().encode(request) : request,
    );
    const reply = await withTimeout(
      readAll(conn),
      10_000,
      () => "the server did not close the connection within 10 s",
    );
    return { reply, localPort: conn.localAddr.port };
  } finally {
    conn.close();
  }
}

/** Decode the HTML character references the page may use. */
function unescapeHtml(html: string): string {
  const named: Record<string, string> = {
    lt: "<",
    gt: ">",
    amp: "&",
    quot: '"',
    apos: "'",
  };
  return html.replace(
    /&(?:#(\d+)|#x([0-9a-f]+)|(lt|gt|amp|quot|apos));/gi,
    (_, dec, hex, name) =>
      dec
        ? String.fromCodePoint(Number(dec))
        : hex
        ? String.fromCodePoint(parseInt(hex, 16))
        : named[name.toLowerCase()],
  );
}

/** The client's address:port as the HTML page shows it. */
function pageClient(html: string): string {
  const m = /you \(client\)<\/th><td>([^<]+)<\/td>/.exec(html);
  assert.ok(m, `no client address in the page:\n${html}`);
  return m[1];
}

/** The server's address:port as the HTML page shows it. */
function pageServer(html: string): string {
  const m = /me \(server\)<\/th><td>([^<]+)<\/td>/.exec(html);
  assert.ok(m, `no server address in the page:\n${html}`);
  return m[1];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Wait for the server's `http` log line for `requestLine` and return the
 * client port it names (the remote end of that connection).
 */
async function loggedClientPort(
  server: RunningScript,
  status: number,
  requestLine: string,
): Promise<number> {
  const line = await server.waitForLine(
    new RegExp(
      `^http local 127\\.0\\.0\\.1:${server.port} remote 127\\.0\\.0\\.1:(\\d+) \\(#\\d+\\) ${status} "${
        escapeRegExp(requestLine)
      }"$`,
    ),
  );
  return Number(/ remote 127\.0\.0\.1:(\d+) /.exec(line)![1]);
}

/** fetch() a page and check it is the 200 page; the body is always read. */
async function fetchOk(port: number, path = "/"): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  const body = await res.text();
  assert.equal(res.status, 200, body);
  return body;
}

Deno.test({
  name:
    "fetch() gets 200 with a page naming both ends of the socket pair, as the server logged them; HEAD has no body",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;

    const res = await fetch(`http://127.0.0.1:${port}/hello?from=fetch`);
    const html = await res.text();
    assert.equal(res.status, 200, html);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(res.headers.get("connection"), "close");
    assert.equal(
      Number(res.headers.get("content-length")),
      new TextEncoder().encode(html).length,
    );

    // The page shows the server's end (the port we connected to) and the
    // client's end: fetch's ephemeral port, which only the server's log for
    // this connection can confirm.
    assert.equal(pageServer(html), `127.0.0.1:${port}`);
    const clientPort = await loggedClientPort(
      server,
      200,
      "GET /hello?from=fetch HTTP/1.1",
    );
    assert.equal(pageClient(html), `127.0.0.1:${clientPort}`);
    assert.notEqual(clientPort, port);
    assert.ok(html.includes("GET /hello?from=fetch HTTP/1.1"), html);

    // HEAD through fetch: same status and headers, no body.
    const head = await fetch(`http://127.0.0.1:${port}/`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.ok(Number(head.headers.get("content-length")) > 0);
    assert.equal(await head.text(), "");
    await loggedClientPort(server, 200, "HEAD / HTTP/1.1");

    // HEAD on a raw socket, where nothing hides extra bytes: the reply ends
    // at the blank line although Content-Length announces a page.
    const { reply } = await rawExchange(
      port,
      `HEAD /raw HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`,
    );
    const raw = parseResponse(reply);
    assert.equal(raw.statusLine, "HTTP/1.1 200 OK");
    assert.ok(Number(raw.headers.get("content-length")) > 0);
    assert.equal(raw.bodyBytes, 0);
  },
});

Deno.test({
  name:
    "two connections open at once get two different client ports, each shown on its own page",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;
    // Both connections exist at the same time, so the OS must give them
    // different ports: a socket pair names one connection.
    const a = await Deno.connect({ hostname: "127.0.0.1", port });
    const b = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const request = new TextEncoder().encode(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
      );
      await writeAll(a, request);
      await writeAll(b, request);
      const guard = () => "no reply within 10 s";
      const [replyA, replyB] = await Promise.all([
        withTimeout(readAll(a), 10_000, guard),
        withTimeout(readAll(b), 10_000, guard),
      ]);
      const pageA = parseResponse(replyA).body;
      const pageB = parseResponse(replyB).body;
      assert.equal(pageClient(pageA), `127.0.0.1:${a.localAddr.port}`);
      assert.equal(pageClient(pageB), `127.0.0.1:${b.localAddr.port}`);
      assert.notEqual(pageClient(pageA), pageClient(pageB));
      assert.equal(pageServer(pageA), `127.0.0.1:${port}`);
      assert.equal(pageServer(pageB), `127.0.0.1:${port}`);
    } finally {
      a.close();
      b.close();
    }

    // Two fetch() calls: Connection: close means two connections, and the
    // server's log shows two different client ports.
    await fetchOk(port, "/first");
    await fetchOk(port, "/second");
    const first = await loggedClientPort(server, 200, "GET /first HTTP/1.1");
    const second = await loggedClientPort(server, 200, "GET /second HTTP/1.1");
    assert.notEqual(first, second);
  },
});

Deno.test({
  name:
    "a malformed request line gets 400 and a 9 KiB header block gets 431; both close the connection and the server still answers fetch()",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;

    for (const bad of ["HELLO SERVER\r\n\r\n", "GET /\r\n\r\n"]) {
      // readAll returning at all means the server closed the connection.
      const { reply, localPort } = await rawExchange(port, bad);
      const res = parseResponse(reply);
      assert.equal(res.statusLine, "HTTP/1.1 400 Bad Request");
      assert.equal(res.headers.get("connection"), "close");
      assert.equal(Number(res.headers.get("content-length")), res.bodyBytes);
      await server.waitForLine(
        new RegExp(
          `^http local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:${localPort} \\(#\\d+\\) 400 `,
        ),
      );
    }

    // Nine headers of 1 KiB each: the head is over the 8 KiB limit.
    const pad = "x".repeat(1024);
    const big = `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
      Array.from({ length: 9 }, (_, i) => `X-Pad-${i}: ${pad}\r\n`).join("") +
      "\r\n";
    const { reply, localPort } = await rawExchange(port, big);
    const res = parseResponse(reply);
    assert.equal(
      res.statusLine,
      "HTTP/1.1 431 Request Header Fields Too Large",
    );
    assert.equal(res.headers.get("connection"), "close");
    await server.waitForLine(
      new RegExp(
        `^http local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:${localPort} \\(#\\d+\\) 431 `,
      ),
    );

    assert.match(await fetchOk(port), /<!doctype html>/);
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
  },
});

Deno.test({
  name:
    "random binary junk gets 400, even from a client that keeps sending, and the server does not crash",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;

    // Random bytes, sent whole.
    const junk = randomBytes(4096);
    const first = parseResponse((await rawExchange(port, junk)).reply);
    assert.equal(first.statusLine, "HTTP/1.1 400 Bad Request");

    // Junk with no newline, from a client that neither closes nor sends
    // more (like an https:// client waiting for the TLS reply): the server
    // must answer from the first bytes, not wait for a line end.
    const noNewline = randomBytes(600).map((b) => b === 0x0a ? 0 : b);
    noNewline[0] = 0x16; // a TLS handshake record starts with this byte
    const second = parseResponse((await rawExchange(port, noNewline)).reply);
    assert.equal(second.statusLine, "HTTP/1.1 400 Bad Request");

    assert.match(await fetchOk(port), /<!doctype html>/);
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
    assert.equal(
      await Promise.race([server.status.then(() => "exited"), "running"]),
      "running",
    );
  },
});

Deno.test({
  name:
    "a client that sends nothing is closed by the idle timeout, the close is logged, and the server keeps serving",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer(["--idle-timeout", "1"]);
    const port = server.port;
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const localPort = conn.localAddr.port;
    try {
      // We send nothing and wait for the server to end the connection.
      const reply = await withTimeout(
        readAll(conn),
        15_000,
        () => "the idle connection was not closed within 15 s",
      );
      assert.equal(reply.length, 0);
    } finally {
      conn.close();
    }
    await server.waitForLine(
      new RegExp(
        `^tcp close local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:${localPort} \\(#\\d+\\) in 0 bytes, out 0 bytes: idle for 1 s$`,
      ),
    );
    assert.match(await fetchOk(port), /<!doctype html>/);
  },
});

Deno.test({
  name:
    "client.ts --http prints the raw response, status line HTTP/1.1 200, headers and page, and 'sent N bytes' on stderr",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;
    const r = await runScript("client.ts", [
      "--http",
      "--port",
      String(port),
      "--path",
      "/from-client",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const sent = /^sent (\d+) bytes$/m.exec(r.stderr);
    assert.ok(sent, r.stderr);
    assert.ok(!hasStackTrace(r.stderr), r.stderr);

    assert.ok(r.out.startsWith("HTTP/1.1 200 OK\r\n"), r.out);
    const res = parseResponse(r.stdout);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(res.headers.get("connection"), "close");
    assert.equal(Number(res.headers.get("content-length")), res.bodyBytes);
    assert.ok(res.body.startsWith("<!doctype html>"), res.body);

    // The page shows the request client.ts sent, as a browser would send it.
    const page = unescapeHtml(res.body);
    assert.ok(page.includes("GET /from-client HTTP/1.1"), page);
    assert.ok(page.includes(`Host: 127.0.0.1:${port}`), page);
    assert.match(page, /^User-Agent: \S/m);
    assert.match(page, /^Accept: \S/m);
    assert.match(page, /^Connection: close\b/m);
    // What client.ts says it sent is what the server says it received.
    assert.ok(page.includes(`wrote ${sent[1]} bytes`), page);
    await server.waitForLine(
      new RegExp(
        `^tcp close local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:\\d+ \\(#\\d+\\) in ${
          sent[1]
        } bytes, out ${r.stdout.length} bytes$`,
      ),
    );
  },
});

Deno.test({
  name:
    "the page is HTML a browser accepts, and every value from the request is HTML-escaped",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;
    const path = "/<script>alert(1)</script>";
    const note = `<b>"bold" & 'quoted'</b>`;
    const { reply } = await rawExchange(
      port,
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Note: ${note}\r\n\r\n`,
    );
    const res = parseResponse(reply);
    assert.equal(res.statusLine, "HTTP/1.1 200 OK");
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    const html = res.body;
    assert.match(html, /^<!doctype html>\n/i);
    assert.match(html, /<meta charset="utf-8">/i);
    assert.match(html, /<title>[^<]+<\/title>/);
    assert.match(html, /<\/html>\n$/);
    // Never raw, always escaped: the markup in the request is shown as text.
    assert.doesNotMatch(html, /<script|<b>/i);
    assert.ok(!html.includes(note), html);
    const text = unescapeHtml(html);
    assert.ok(text.includes(`GET ${path} HTTP/1.1`), html);
    assert.ok(text.includes(`X-Note: ${note}`), html);
  },
});

Deno.test({
  name: "Accept: text/plain gets a text/plain page with the socket pair",
  ...sanitize,
  fn: async () => {
    await using server = await startHttpServer();
    const port = server.port;
    const res = await fetch(`http://127.0.0.1:${port}/plain`, {
      headers: { Accept: "text/plain" },
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.ok(!body.includes("<"), body);
    const clientPort = await loggedClientPort(
      server,
      200,
      "GET /plain HTTP/1.1",
    );
    assert.match(
      body,
      new RegExp(`^ +you \\(client\\): +127\\.0\\.0\\.1:${clientPort}$`, "m"),
    );
    assert.match(
      body,
      new RegExp(`^ +me \\(server\\): +127\\.0\\.0\\.1:${port}$`, "m"),
    );
    assert.match(body, /^ +GET \/plain HTTP\/1\.1$/m);
  },
});
