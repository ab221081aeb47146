/**
 * http.ts: a web server is a wrapper around a socket. These tests drive it
 * as a user would (the script started with `--port 0`) with Deno's real HTTP
 * client (`fetch()`), with raw sockets that send exactly the bytes we
 * choose, and with `client.ts --http`; the accept loop and the shutdown are
 * also driven in-process through `serveHttp`.
 */
import assert from "node:assert/strict";
import { randomBytes } from "./lib/bytes.ts";
import { hasIpv6Loopback, readAll, writeAll } from "./lib/net.ts";
import {
  commandFor,
  hasStackTrace,
  OutputCollector,
  type RunningScript,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import {
  HTTP_FLAGS,
  parseResponse,
  type RawResponse,
  startHttp,
} from "./lib/http.ts";
import { delay } from "./lib/time.ts";
import { xxd } from "./lib/tools.ts";
import {
  answerHttp,
  DEFAULTS,
  GRACE_SECONDS,
  MAX_HEAD_BYTES,
  serveHttp,
} from "../http.ts";

const sanitize = { sanitizeResources: true, sanitizeOps: true };
const encode = (text: string) => new TextEncoder().encode(text);

/**
 * What every response must be: HTTP/1.1, `Connection: close`, a Date, and
 * a Content-Length that is exactly the body's size in bytes (0 body bytes
 * for HEAD, which announces the page's size all the same).
 */
function assertWellFormed(res: RawResponse, what: string, head = false) {
  assert.match(res.statusLine, /^HTTP\/1\.1 \d{3} [A-Z]/, what);
  assert.equal(res.headers.get("connection"), "close", what);
  assert.ok(res.headers.get("date"), what);
  const length = Number(res.headers.get("content-length"));
  assert.ok(Number.isInteger(length) && length > 0, what);
  assert.equal(res.bodyBytes, head ? 0 : length, what);
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
      typeof request === "string" ? encode(request) : request,
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

/** One exchange as the server's log line tells it. */
interface Logged {
  clientPort: number;
  id: number;
  bytesIn: number;
  bytesOut: number;
}

/**
 * Wait for the server's log line for one exchange: `outcome` is what follows
 * `(#N) `, e.g. `200 "GET / HTTP/1.1"` or `400 (why)`, as text; `clientPort`
 * pins the connection when known.
 */
async function loggedExchange(
  server: RunningScript,
  outcome: string | RegExp,
  clientPort?: number,
): Promise<Logged> {
  const what = typeof outcome === "string"
    ? escapeRegExp(outcome)
    : outcome.source;
  const line = await server.waitForLine(
    new RegExp(
      `^http local 127\\.0\\.0\\.1:${server.port} remote 127\\.0\\.0\\.1:(${
        clientPort ?? "\\d+"
      }) \\(#(\\d+)\\) ${what}, in (\\d+) bytes, out (\\d+) bytes$`,
    ),
  );
  const m =
    / remote 127\.0\.0\.1:(\d+) \(#(\d+)\) .*, in (\d+) bytes, out (\d+) bytes$/
      .exec(line)!;
  return {
    clientPort: Number(m[1]),
    id: Number(m[2]),
    bytesIn: Number(m[3]),
    bytesOut: Number(m[4]),
  };
}

/** fetch() a page and check it is the 200 page; the body is always read. */
async function fetchOk(port: number, path = "/"): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  const body = await res.text();
  assert.equal(res.status, 200, body);
  return body;
}

/** A request head of exactly `size` bytes, empty line included. */
function headOfSize(size: number): string {
  const start = "GET /sized HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ";
  const end = "\r\n\r\n";
  const head = start + "x".repeat(size - start.length - end.length) + end;
  assert.equal(encode(head).length, size);
  return head;
}

const TRACE_LINE = /^tcp #\d+ (read|wrote) \d+ bytes$/;

Deno.test({
  name:
    "fetch() gets 200 with a page naming both ends of the socket pair, as the server logged them; HEAD has no body; no trace lines without --trace",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
    const port = server.port;

    const res = await fetch(`http://127.0.0.1:${port}/hello?from=fetch`);
    const html = await res.text();
    assert.equal(res.status, 200, html);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(res.headers.get("connection"), "close");
    assert.equal(
      Number(res.headers.get("content-length")),
      encode(html).length,
    );

    // The page shows the server's end (the port we connected to) and the
    // client's end: fetch's ephemeral port, which only the server's log for
    // this connection can confirm.
    assert.equal(pageServer(html), `127.0.0.1:${port}`);
    const { clientPort } = await loggedExchange(
      server,
      '200 "GET /hello?from=fetch HTTP/1.1"',
    );
    assert.equal(pageClient(html), `127.0.0.1:${clientPort}`);
    assert.notEqual(clientPort, port);
    assert.ok(html.includes("GET /hello?from=fetch HTTP/1.1"), html);

    // HEAD through fetch: same status and headers, no body.
    const head = await fetch(`http://127.0.0.1:${port}/`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.ok(Number(head.headers.get("content-length")) > 0);
    assert.equal(await head.text(), "");
    await loggedExchange(server, '200 "HEAD / HTTP/1.1"');

    // HEAD on a raw socket, where nothing hides extra bytes: the reply ends
    // at the empty line although Content-Length announces a page, and the
    // page it announces is exactly as long as the one GET gets.
    const get = `GET /raw HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
    const full = parseResponse((await rawExchange(port, get)).reply);
    assertWellFormed(full, "GET");
    const raw = parseResponse(
      (await rawExchange(port, "HEAD" + get.slice(3))).reply,
    );
    assert.equal(raw.statusLine, "HTTP/1.1 200 OK");
    assertWellFormed(raw, "HEAD", true);
    // (The page shows the request line: "HEAD" is one byte longer.)
    assert.equal(
      Number(raw.headers.get("content-length")),
      Number(full.headers.get("content-length")) + 1,
    );
    assert.ok(!server.stdout.lines.some((l) => TRACE_LINE.test(l)));
  },
});

Deno.test({
  name:
    "two connections open at once get two different client ports, each shown on its own page",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
    const port = server.port;
    // Both connections exist at the same time, so the OS must give them
    // different ports: a socket pair names one connection.
    const a = await Deno.connect({ hostname: "127.0.0.1", port });
    const b = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const request = encode(
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
    const first = await loggedExchange(server, '200 "GET /first HTTP/1.1"');
    const second = await loggedExchange(server, '200 "GET /second HTTP/1.1"');
    assert.notEqual(first.clientPort, second.clientPort);
  },
});

Deno.test({
  name:
    "what RFC 9112 and 9110 say a server MUST reject gets 400 (505 for HTTP/2 and up, 405 with Allow for POST), each with an exact Content-Length; valid variants get 200",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
    const port = server.port;
    const line = "GET / HTTP/1.1\r\n";
    const host = `Host: 127.0.0.1:${port}\r\n`;
    const cases: [string, string, number][] = [
      ["a malformed request line", "HELLO SERVER\r\n\r\n", 400],
      ["a request line without a version", "GET /\r\n\r\n", 400],
      ["HTTP/1.1 without Host", `${line}\r\n`, 400],
      ["two Host lines", `${line}Host: a\r\nHost: b\r\n\r\n`, 400],
      ["an invalid Host", `${line}Host: a b\r\n\r\n`, 400],
      // RFC 3986 host: an IP literal in brackets must be an IPv6 address.
      ["Host: [::1:::]", `${line}Host: [::1:::]\r\n\r\n`, 400],
      ["Host: [1::2::3]:80", `${line}Host: [1::2::3]:80\r\n\r\n`, 400],
      [
        "Host: [1:2:3:4:5:6:7:8:9]",
        `${line}Host: [1:2:3:4:5:6:7:8:9]\r\n\r\n`,
        400,
      ],
      ["Host: [::1", `${line}Host: [::1\r\n\r\n`, 400],
      ["a % not followed by two hex digits", `${line}Host: a%zz\r\n\r\n`, 400],
      ["a NUL in a header value", `${line}${host}X-A: a\0b\r\n\r\n`, 400],
      ["a CR in a header value", `${line}${host}X-A: a\rb\r\n\r\n`, 400],
      ["an ESC in a header value", `${line}${host}X-A: a\x1bb\r\n\r\n`, 400],
      ["a DEL in a header value", `${line}${host}X-A: a\x7fb\r\n\r\n`, 400],
      ["Content-Length: abc", `${line}${host}Content-Length: abc\r\n\r\n`, 400],
      [
        "two different Content-Lengths",
        `${line}${host}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`,
        400,
      ],
      [
        "Content-Length: 1, 2",
        `${line}${host}Content-Length: 1, 2\r\n\r\n`,
        400,
      ],
      // One Number in JavaScript (past 2^53), yet two different lengths.
      [
        "Content-Lengths 9007199254740993 and 9007199254740992",
        `${line}${host}Content-Length: 9007199254740993\r\nContent-Length: 9007199254740992\r\n\r\n`,
        400,
      ],
      [
        "Transfer-Encoding with Content-Length",
        `${line}${host}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n`,
        400,
      ],
      [
        "Transfer-Encoding not ending in chunked",
        `${line}${host}Transfer-Encoding: chunked, gzip\r\n\r\n`,
        400,
      ],
      ["a space before the colon", `${line}Host : a\r\n\r\n`, 400],
      ["a folded header line", `${line}${host}X-A: a\r\n b\r\n\r\n`, 400],
      ["HTTP/9.9", `GET / HTTP/9.9\r\n${host}\r\n`, 505],
      ["HTTP/2.0", `GET / HTTP/2.0\r\n${host}\r\n`, 505],
      ["POST", `POST / HTTP/1.1\r\n${host}\r\n`, 405],
      ["HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 200],
      [
        "the same Content-Length twice",
        `${line}${host}Content-Length: 0\r\nContent-Length: 0\r\n\r\n`,
        200,
      ],
      ["an IPv6 Host", `${line}Host: [::1]:8080\r\n\r\n`, 200],
      ["Host: [0:0::1]", `${line}Host: [0:0::1]\r\n\r\n`, 200],
      [
        "an IPv4-mapped IPv6 Host",
        `${line}Host: [::ffff:127.0.0.1]:80\r\n\r\n`,
        200,
      ],
      ["a percent-encoded Host", `${line}Host: a%2Db\r\n\r\n`, 200],
      ["a tab and UTF-8 in a value", `${line}${host}X-A: a\tcafé\r\n\r\n`, 200],
      ["bare LF line ends", `GET / HTTP/1.1\nHost: a\n\n`, 200],
    ];
    for (const [what, request, status] of cases) {
      const { reply, localPort } = await rawExchange(port, request);
      const res = parseResponse(reply);
      assert.equal(
        res.statusLine.split(" ")[1],
        String(status),
        `${what}: ${res.statusLine}\n${res.body}`,
      );
      assertWellFormed(res, what);
      if (status === 405) assert.equal(res.headers.get("allow"), "GET, HEAD");
      await loggedExchange(server, new RegExp(`${status} [("].*`), localPort);
    }
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
  },
});

Deno.test({
  name:
    "any response to HEAD is headers only, even when the request line itself is rejected: 505 for HEAD HTTP/2.0, 414 for a 9,000-byte path, 400 for two spaces",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
    const port = server.port;
    const host = `Host: 127.0.0.1:${port}\r\n`;
    const cases: [string, string, string][] = [
      ["HEAD / HTTP/2.0", `HEAD / HTTP/2.0\r\n${host}\r\n`, "505"],
      // The head limit is reached before the request line has ended: the
      // target is too long (RFC 9112 section 3: MUST be 414).
      [
        "HEAD with a 9,000-byte path",
        `HEAD /${"a".repeat(9000)} HTTP/1.1\r\n${host}\r\n`,
        "414",
      ],
      ["HEAD with two spaces", `HEAD  / HTTP/1.1\r\n${host}\r\n`, "400"],
      [
        "HEAD with an invalid Host",
        `HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n`,
        "400",
      ],
    ];
    for (const [what, request, status] of cases) {
      const { reply, localPort } = await rawExchange(port, request);
      const res = parseResponse(reply);
      assert.equal(
        res.statusLine.split(" ")[1],
        status,
        `${what}: ${res.statusLine}`,
      );
      // Content-Length announces the body GET would get; none follows.
      assertWellFormed(res, what, true);
      await loggedExchange(server, new RegExp(`${status} \\(.*`), localPort);
    }
  },
});

Deno.test({
  name:
    "a request head of 8,192 bytes (empty line included) is answered, 8,193 bytes is 431, a 9 KiB one too; the server then still answers fetch()",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp(["--quiet"]);
    const port = server.port;
    assert.equal(MAX_HEAD_BYTES, 8192);

    const ok = parseResponse(
      (await rawExchange(port, headOfSize(MAX_HEAD_BYTES))).reply,
    );
    assert.equal(ok.statusLine, "HTTP/1.1 200 OK");
    assertWellFormed(ok, "8192");
    assert.ok(
      ok.body.includes(`a request head of ${MAX_HEAD_BYTES} bytes`),
      ok.body,
    );

    for (
      const request of [
        headOfSize(MAX_HEAD_BYTES + 1),
        // Nine headers of 1 KiB each: well over the limit.
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
        Array.from(
          { length: 9 },
          (_, i) => `X-Pad-${i}: ${"x".repeat(1024)}\r\n`,
        )
          .join("") +
        "\r\n",
      ]
    ) {
      const res = parseResponse((await rawExchange(port, request)).reply);
      assert.equal(
        res.statusLine,
        "HTTP/1.1 431 Request Header Fields Too Large",
        `${encode(request).length} bytes`,
      );
      assertWellFormed(res, "431");
    }
    assert.match(await fetchOk(port), /<!doctype html>/);
    // --quiet: the listening line, and no line per exchange.
    assert.deepEqual(server.stdout.lines, [
      `tcp listening on 127.0.0.1:${port}`,
    ]);
  },
});

Deno.test({
  name:
    "on ::1 the listening line and the page show the IPv6 socket pair in brackets",
  ignore: !hasIpv6Loopback(),
  ...sanitize,
  fn: async () => {
    await using server = await startScript(
      "http.ts",
      ["--hostname", "::1", "--port", "0"],
      { denoFlags: ["--allow-net=[::1]"] },
    );
    assert.equal(
      server.stdout.lines[0],
      `tcp listening on [::1]:${server.port}`,
    );
    const conn = await Deno.connect({ hostname: "::1", port: server.port });
    try {
      await writeAll(conn, encode("GET /v6 HTTP/1.1\r\nHost: [::1]\r\n\r\n"));
      const res = parseResponse(
        await withTimeout(readAll(conn), 10_000, () => "no reply"),
      );
      assert.equal(pageServer(res.body), `[::1]:${server.port}`);
      assert.equal(pageClient(res.body), `[::1]:${conn.localAddr.port}`);
    } finally {
      conn.close();
    }
  },
});

Deno.test({
  name:
    "TCP is a stream: a request written one byte at a time is read in pieces and still answered 200",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp(["--trace"]);
    const port = server.port;
    const request = encode(`GET /bytes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      conn.setNoDelay(true);
      for (let i = 0; i < request.length; i++) {
        await writeAll(conn, request.subarray(i, i + 1));
        // Wait until the server has read this byte, so each byte is a read.
        await server.waitForLine(/^tcp #1 read 1 bytes$/, 10_000, i + 1);
      }
      const res = parseResponse(
        await withTimeout(readAll(conn), 10_000, () => "no reply in 10 s"),
      );
      assert.equal(res.statusLine, "HTTP/1.1 200 OK");
      assertWellFormed(res, "one byte at a time");
    } finally {
      conn.close();
    }
    const reads = server.stdout.lines.filter((l) => /^tcp #1 read /.test(l));
    assert.equal(reads.length, request.length, reads.join("\n"));
    await loggedExchange(server, '200 "GET /bytes HTTP/1.1"');
  },
});

Deno.test({
  name:
    "random binary junk gets 400, even from a client that keeps sending, and the server keeps running and answering",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
    const port = server.port;
    let exited = false;
    server.status.then(() => exited = true);

    // Random bytes, sent whole.
    const junk = randomBytes(4096);
    const first = parseResponse((await rawExchange(port, junk)).reply);
    assert.equal(first.statusLine, "HTTP/1.1 400 Bad Request");
    assertWellFormed(first, "junk");

    // Junk with no newline, from a client that neither closes nor sends
    // more (like an https:// client waiting for the TLS reply): the server
    // must answer from the first bytes, not wait for a line end.
    const noNewline = randomBytes(600).map((b) => b === 0x0a ? 0 : b);
    noNewline[0] = 0x16; // a TLS handshake record starts with this byte
    const second = parseResponse((await rawExchange(port, noNewline)).reply);
    assert.equal(second.statusLine, "HTTP/1.1 400 Bad Request");

    // Still running: a new connection gets the page, and the process has
    // not exited (its status would have resolved).
    assert.match(await fetchOk(port), /<!doctype html>/);
    await loggedExchange(server, '200 "GET / HTTP/1.1"');
    assert.equal(exited, false, "the server exited");
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
  },
});

Deno.test({
  name:
    "slow clients: one that sends nothing is closed by the idle timeout with no reply; one that stops mid-head gets 408 at the idle timeout; one that trickles its head a byte every 0.3 s gets 408 at the head deadline",
  ...sanitize,
  fn: async () => {
    // allSettled: a branch that fails must not leave the others running
    // past the end of the test.
    const settled = await Promise.allSettled([
      (async () => {
        await using server = await startHttp(["--idle-timeout", "1"]);
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        const localPort = conn.localAddr.port;
        try {
          // We send nothing and wait for the server to end the connection.
          const reply = await withTimeout(
            readAll(conn),
            10_000,
            () => "the idle connection was not closed within 10 s",
          );
          assert.equal(reply.length, 0);
        } finally {
          conn.close();
        }
        await loggedExchange(server, "no reply: idle for 1 s", localPort);
        assert.match(await fetchOk(server.port), /<!doctype html>/);
      })(),
      (async () => {
        // Part of a head, then nothing: whichever timer fires first (here
        // the idle one, long before the head deadline), the client is told.
        await using server = await startHttp([
          "--idle-timeout",
          "1",
          "--head-timeout",
          "10",
        ]);
        const started = performance.now();
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        const localPort = conn.localAddr.port;
        try {
          await writeAll(conn, encode("GET / HTTP/1.1\r\nHo"));
          const reply = await withTimeout(
            readAll(conn),
            8_000,
            () => "no reply within 8 s to a head that stopped",
          );
          const elapsed = performance.now() - started;
          const res = parseResponse(reply);
          assert.equal(res.statusLine, "HTTP/1.1 408 Request Timeout");
          assertWellFormed(res, "408 at the idle timeout");
          assert.ok(elapsed >= 900, `${elapsed} ms`);
        } finally {
          conn.close();
        }
        await loggedExchange(
          server,
          "408 (the request head stalled: no byte for 1 s)",
          localPort,
        );
      })(),
      (async () => {
        await using server = await startHttp(["--head-timeout", "1"]);
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        const head = encode(`GET / HTTP/1.1\r\nX-Slow: ${"a".repeat(40)}`);
        let sent = 0;
        let replied = false;
        const started = performance.now();
        // The slowloris: every byte resets an idle timer, never a deadline.
        const trickle = (async () => {
          for (; sent < head.length && !replied; sent++) {
            try {
              await conn.write(head.subarray(sent, sent + 1));
            } catch {
              return; // the server closed: fine
            }
            await delay(300);
          }
        })();
        try {
          const reply = await withTimeout(
            readAll(conn),
            5_000,
            () => `no reply within 5 s while trickling (${sent} bytes sent)`,
          );
          const elapsed = performance.now() - started;
          const res = parseResponse(reply);
          assert.equal(res.statusLine, "HTTP/1.1 408 Request Timeout");
          assertWellFormed(res, "408");
          assert.ok(elapsed >= 900 && elapsed < 4_000, `${elapsed} ms`);
          assert.ok(sent < head.length, `${sent} bytes sent`);
          await loggedExchange(
            server,
            "408 (the request head did not arrive within 1 s)",
            conn.localAddr.port,
          );
        } finally {
          replied = true;
          await trickle;
          conn.close();
        }
      })(),
    ]);
    for (const r of settled) if (r.status === "rejected") throw r.reason;
  },
});

Deno.test({
  name:
    "client.ts --http prints the raw response, status line HTTP/1.1 200, headers and page, and 'sent N bytes' on stderr; page and log count the same bytes",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
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
    assertWellFormed(res, "client.ts --http");
    assert.ok(res.body.startsWith("<!doctype html>"), res.body);

    // The page shows the request client.ts sent, as a browser would send it.
    const page = unescapeHtml(res.body);
    assert.ok(page.includes("GET /from-client HTTP/1.1"), page);
    assert.ok(page.includes(`Host: 127.0.0.1:${port}`), page);
    assert.match(page, /^User-Agent: \S/m);
    assert.match(page, /^Accept: \S/m);
    assert.match(page, /^Connection: close\b/m);
    // What client.ts says it sent is what the server says it received.
    assert.ok(page.includes(`a request head of ${sent[1]} bytes`), page);
    const logged = await loggedExchange(
      server,
      '200 "GET /from-client HTTP/1.1"',
    );
    assert.equal(logged.bytesIn, Number(sent[1]));
    assert.equal(logged.bytesOut, r.stdout.length);
  },
});

Deno.test({
  name:
    "the page is HTML a browser accepts, and every value from the request is HTML-escaped",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp();
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
    await using server = await startHttp();
    const port = server.port;
    const res = await fetch(`http://127.0.0.1:${port}/plain`, {
      headers: { Accept: "text/plain" },
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(
      Number(res.headers.get("content-length")),
      encode(body).length,
    );
    assert.ok(!body.includes("<"), body);
    const { clientPort } = await loggedExchange(
      server,
      '200 "GET /plain HTTP/1.1"',
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

Deno.test({
  name:
    "Accept with q=0 rules a type out: text/html;q=0 gets the text/plain page; text/plain;q=0 gets HTML",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp(["--quiet"]);
    const port = server.port;
    const cases: [string, string][] = [
      ["text/plain, text/html;q=0", "text/plain"],
      ["text/html; q=0.0, text/plain", "text/plain"],
      ["text/plain;q=0, text/html", "text/html"],
      ["text/plain;q=0", "text/html"],
      ["text/plain, text/html;q=0.5", "text/html"],
      ["text/plain;q=0.01", "text/plain"],
    ];
    for (const [accept, type] of cases) {
      const { reply } = await rawExchange(
        port,
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: ${accept}\r\n\r\n`,
      );
      const res = parseResponse(reply);
      assert.equal(res.statusLine, "HTTP/1.1 200 OK", accept);
      assert.equal(
        res.headers.get("content-type"),
        `${type}; charset=utf-8`,
        `Accept: ${accept}`,
      );
    }
  },
});

/** Parse the xxd-layout lines of one dump back into bytes. */
function bytesOfDump(lines: string[]): Uint8Array {
  const out: number[] = [];
  for (const line of lines) {
    const hex = line.slice(10, 50).replaceAll(" ", "");
    for (let i = 0; i < hex.length; i += 2) {
      out.push(parseInt(hex.slice(i, i + 2), 16));
    }
  }
  return new Uint8Array(out);
}

/** The traced reads or writes of connection `id`: each size and its dump. */
function tracedPieces(
  lines: string[],
  id: number,
  what: "read" | "wrote",
): { size: number; dump: string[] }[] {
  const pieces: { size: number; dump: string[] }[] = [];
  let current: string[] | undefined;
  for (const line of lines) {
    const m = /^tcp #(\d+) (read|wrote) (\d+) bytes$/.exec(line);
    if (m) {
      current = undefined;
      if (Number(m[1]) === id && m[2] === what) {
        current = [];
        pieces.push({ size: Number(m[3]), dump: current });
      }
    } else if (current && /^[0-9a-f]{8}: /.test(line)) {
      current.push(line);
    } else {
      current = undefined;
    }
  }
  return pieces;
}

Deno.test({
  name:
    "--hex shows the exact request bytes in xxd's layout (CR LF as 0d0a) and the exact reply; the traced sizes add up to the log line's bytes; SIGTERM then prints the summary and exits 0",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp(["--hex"]);
    const port = server.port;
    const request = encode(
      `GET /hex?q=1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Note: tab\there, café\r\n\r\n`,
    );
    const { reply, localPort } = await rawExchange(port, request);
    assert.equal(parseResponse(reply).statusLine, "HTTP/1.1 200 OK");
    const logged = await loggedExchange(
      server,
      '200 "GET /hex?q=1 HTTP/1.1"',
      localPort,
    );
    assert.equal(logged.bytesIn, request.length);
    assert.equal(logged.bytesOut, reply.length);

    // Each read is one trace line and its dump; together they are the
    // request, byte for byte, and each dump is what xxd prints for it.
    const reads = tracedPieces(server.stdout.lines, logged.id, "read");
    assert.ok(reads.length >= 1, server.stdout.text());
    let offset = 0;
    for (const { size, dump } of reads) {
      const piece = request.subarray(offset, offset + size);
      const expected = (await xxd(piece)).map((l) => l + "\n").join("");
      assert.equal(dump.join("\n") + "\n", expected);
      offset += size;
    }
    assert.equal(offset, request.length);
    assert.match(reads.flatMap((r) => r.dump).join("\n"), / 0d0a/);
    const writes = tracedPieces(server.stdout.lines, logged.id, "wrote");
    assert.deepEqual(
      bytesOfDump(writes.flatMap((w) => w.dump)),
      reply,
    );
    assert.equal(writes.reduce((n, w) => n + w.size, 0), reply.length);

    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr.text());
    assert.equal(
      server.stdout.lines.at(-1),
      `http server stopped: 1 connections, 0 refused, ${request.length} bytes in, ${reply.length} bytes out`,
    );
  },
});

Deno.test({
  name:
    "--max-connections 1: a second connection is closed at once and logged as refused, while the first is still answered",
  ...sanitize,
  fn: async () => {
    await using server = await startHttp(["--max-connections", "1", "--trace"]);
    const port = server.port;
    const a = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(a, encode("GET /a HTTP/1.1\r\n"));
      await server.waitForLine(/^tcp #1 read \d+ bytes$/);
      const b = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        const nothing = await withTimeout(
          readAll(b),
          10_000,
          () => "the connection over the limit was not closed",
        );
        assert.equal(nothing.length, 0);
        await server.waitForLine(
          new RegExp(
            `^http refused local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:${b.localAddr.port}: 1 open, --max-connections 1$`,
          ),
        );
      } finally {
        b.close();
      }
      await writeAll(a, encode("Host: x\r\n\r\n"));
      const res = parseResponse(
        await withTimeout(readAll(a), 10_000, () => "no reply"),
      );
      assert.equal(res.statusLine, "HTTP/1.1 200 OK");
    } finally {
      a.close();
    }
  },
});

Deno.test({
  name:
    "command line: --help lists every flag (exit 0); --hostname 127.0.0.1:8080 is a usage error, exit 2, with no stack trace",
  ...sanitize,
  fn: async () => {
    const help = await runScript("http.ts", ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    for (const flag of HTTP_FLAGS) {
      assert.ok(help.out.includes(flag), `${flag} missing from --help`);
    }
    // Browsers open spare connections and may never use them: --help says,
    // in one line, that those are closed without a reply.
    assert.ok(
      help.out.split("\n").some((l) =>
        /sen(t|ds) nothing/.test(l) && /silently/.test(l)
      ),
      help.out,
    );
    // One case of the shared flag parsing: tests/plumbing_test.ts has them
    // all.
    const cases: [string[], RegExp][] = [
      [["--hostname", "127.0.0.1:8080"], /--hostname takes no port.*--port/],
    ];
    for (const [args, reason] of cases) {
      const r = await runScript("http.ts", args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^error: /);
      assert.match(r.stderr, reason);
      assert.match(r.stderr, /usage: /);
      assert.ok(!hasStackTrace(r.stderr), r.stderr);
      assert.equal(r.out, "");
    }
  },
});

Deno.test({
  name:
    "logging is best effort: with stdout on /dev/full the server warns once on stderr and still answers every request, then stops cleanly",
  ...sanitize,
  fn: async () => {
    // The port cannot be read from stdout, so ask the OS for a free one.
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    const child = commandFor(
      "http.ts",
      ["--port", String(port)],
      { shellPrefix: "exec >/dev/full;" },
      { stdin: "null" },
    ).spawn();
    const stdout = new OutputCollector(child.stdout);
    const stderr = new OutputCollector(child.stderr);
    try {
      // The listening line itself cannot be written: that is the warning.
      await withTimeout(
        stderr.waitFor(/cannot write to stdout/),
        10_000,
        () => `no warning; stderr: ${stderr.text()}`,
      );
      for (let i = 0; i < 3; i++) {
        assert.match(await fetchOk(port, `/${i}`), /<!doctype html>/);
      }
    } finally {
      child.kill("SIGTERM");
    }
    const status = await child.status;
    await Promise.all([stdout.done, stderr.done]);
    assert.equal(status.code, 0, stderr.text());
    assert.equal(stderr.lines.length, 1, stderr.text());
    assert.ok(!hasStackTrace(stderr.text()), stderr.text());
  },
});

Deno.test({
  name:
    "http.ts reads as a lesson: numbered one-line section rules, as in server.ts, in order above the plumbing divider",
  fn: async () => {
    const lines =
      (await Deno.readTextFile(new URL("../http.ts", import.meta.url)))
        .split("\n");
    const divider = lines.indexOf(
      "// ───── plumbing: flags, usage, errors, signals, limits ─────",
    );
    assert.ok(divider > 0, "no plumbing divider");
    // `// ─── 1. Listen ───…` padded with ─ to 79 characters, as server.ts.
    const rules = lines.slice(0, divider).flatMap((line, at) =>
      line.startsWith("// ─") ? [{ line, at }] : []
    );
    for (const { line } of rules) {
      assert.match(line, /^\/\/ ─── \d+\. \S.* ─+$/, line);
      assert.equal(line.length, 79, line);
    }
    assert.deepEqual(
      rules.map(({ line }) => Number(/\d+/.exec(line)![0])),
      rules.map((_, i) => i + 1),
    );
    assert.ok(rules.length >= 5, `${rules.length} sections`);
    // Each rule stands above the step it names.
    const firstAt = (text: string) => lines.findIndex((l) => l.includes(text));
    const sections: [RegExp, string][] = [
      [/ 1\. Listen /, "Deno.listen("],
      [/ 2\. The accept loop /, "await listener.accept()"],
    ];
    for (const [title, code] of sections) {
      const rule = rules.findIndex(({ line }) => title.test(line));
      assert.ok(rule >= 0, `no section ${title}`);
      const at = firstAt(code);
      assert.ok(rules[rule].at < at, `${title} is below ${code}`);
      assert.ok(
        rule + 1 === rules.length || rules[rule + 1].at > at,
        `${code} is not in section ${title}`,
      );
    }
  },
});

// --- in-process: the accept loop and the shutdown ---------------------------

/** Log lines collected in-process, with a wait for one to come. */
class Lines {
  readonly all: string[] = [];
  #waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  readonly add = (line: string): void => {
    this.all.push(line);
    const matched = this.#waiters.filter((w) => w.re.test(line));
    this.#waiters = this.#waiters.filter((w) => !matched.includes(w));
    for (const w of matched) w.resolve(line);
  };
  waitFor(re: RegExp): Promise<string> {
    const found = this.all.find((l) => re.test(l));
    if (found) return Promise.resolve(found);
    return withTimeout(
      new Promise((resolve) => this.#waiters.push({ re, resolve })),
      10_000,
      () => `no line matching ${re}; lines:\n${this.all.join("\n")}`,
    );
  }
}

/** Close a connection that may be closed already. */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* closed already */ }
}

/** A listener whose first accept() calls fail with `failures`, in order. */
function flakyListener(real: Deno.TcpListener, failures: Error[]) {
  return {
    accept: () => {
      const failure = failures.shift();
      return failure ? Promise.reject(failure) : real.accept();
    },
    close: () => real.close(),
  };
}

Deno.test({
  name:
    "accept loop: twelve clients that reset before accept() (ENOTCONN) do not delay the next one; a shortage of file descriptors (EMFILE) backs off briefly, says so, and serving goes on",
  ...sanitize,
  fn: async () => {
    const real = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = real.addr.port;
    const resets = Array.from(
      { length: 12 },
      () =>
        new Deno.errors.NotConnected(
          "Transport endpoint is not connected (os error 107)",
        ),
    );
    const shortage = Array.from(
      { length: 3 },
      () => new Error("Too many open files (os error 24)"),
    );
    const stop = new AbortController();
    const lines = new Lines();
    const warnings = new Lines();
    const listener = flakyListener(real, resets);
    const served = serveHttp(listener, {
      ...DEFAULTS,
      grace: GRACE_SECONDS,
      signal: stop.signal,
      log: lines.add,
      warn: warnings.add,
    });
    try {
      const started = performance.now();
      await fetchOk(port, "/after-resets");
      const elapsed = performance.now() - started;
      // The old loop slept 10+20+...+1000 ms: 6.3 s for twelve resets.
      assert.ok(elapsed < 2_000, `first client waited ${elapsed} ms`);
      assert.deepEqual(warnings.all, []);

      // The accept() already waiting takes the next client; the three
      // after it fail for want of file descriptors, then one succeeds.
      resets.push(...shortage);
      await fetchOk(port, "/before-shortage");
      await fetchOk(port, "/after-shortage");
      assert.deepEqual(
        warnings.all.map((w) => /retrying in (\d+) ms$/.exec(w)?.[1]),
        ["10", "20", "40"],
        warnings.all.join("\n"),
      );
    } finally {
      stop.abort();
      await served;
    }
    await lines.waitFor(/200 "GET \/after-shortage HTTP\/1\.1"/);
  },
});

Deno.test({
  name:
    "shutdown: an exchange in flight finishes within the grace period; one that stalls is closed when the grace is over, and serveHttp returns",
  ...sanitize,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    const stop = new AbortController();
    const lines = new Lines();
    const served = serveHttp(listener, {
      ...DEFAULTS,
      signal: stop.signal,
      grace: 0.5,
      trace: true,
      log: lines.add,
    });
    const finishing = await Deno.connect({ hostname: "127.0.0.1", port });
    const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(finishing, encode("GET /late HTTP/1.1\r\n"));
      await writeAll(stalled, encode("GET /never HTTP/1.1\r\n"));
      await lines.waitFor(/^tcp #1 read /);
      await lines.waitFor(/^tcp #2 read /);
      stop.abort();
      await lines.waitFor(/^http stopping: 2 open, up to 0.5 s to finish$/);
      await writeAll(finishing, encode("Host: x\r\n\r\n"));
      const res = parseResponse(
        await withTimeout(readAll(finishing), 10_000, () => "no reply"),
      );
      assert.equal(res.statusLine, "HTTP/1.1 200 OK");
      closeQuietly(finishing); // our FIN ends the server's lingering close
      const summary = await withTimeout(
        served,
        10_000,
        () => "serveHttp did not return",
      );
      assert.equal(summary.connections, 2);
      await lines.waitFor(
        /\(#\d\) no reply: closed: shutdown, grace of 0.5 s over, in 21 bytes, out 0 bytes$/,
      );
      assert.equal((await readAll(stalled)).length, 0);
      // Nothing listens any more.
      await assert.rejects(
        Deno.connect({ hostname: "127.0.0.1", port }),
        Deno.errors.ConnectionRefused,
      );
    } finally {
      closeQuietly(finishing);
      closeQuietly(stalled);
      stop.abort();
      await served;
    }
  },
});

Deno.test({
  name:
    "answerHttp can be used alone: one exchange on a connection you accepted yourself",
  ...sanitize,
  fn: async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const client = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    const conn = await listener.accept();
    try {
      await writeAll(
        client,
        encode("HEAD / HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"),
      );
      const [ex, reply] = await Promise.all([
        answerHttp(conn, { headTimeout: 10, idleTimeout: 10 }),
        readAll(client).finally(() => closeQuietly(client)),
      ]);
      const res = parseResponse(reply);
      assertWellFormed(res, "HEAD", true);
      assert.equal(
        res.headers.get("content-type"),
        "text/plain; charset=utf-8",
      );
      assert.equal(ex.status, 200);
      assert.equal(ex.outcome, '200 "HEAD / HTTP/1.1"');
      assert.equal(ex.bytesOut, reply.length);
    } finally {
      closeQuietly(client);
    }
  },
});

Deno.test({
  name:
    "timeouts as long as a timer holds: --idle-timeout or --head-timeout 99999999 is a usage error naming 2147483 s, exit 2; under --head-timeout 2147483 --idle-timeout 2147483 a connection is not closed at once, and a head sent after pauses gets 200",
  ...sanitize,
  fn: async () => {
    // A JavaScript timer holds at most 2^31-1 ms (about 24.8 days); a
    // longer one fires after 1 ms, and every connection would be closed
    // as soon as it opened.
    for (const flag of ["--idle-timeout", "--head-timeout"]) {
      const r = await runScript("http.ts", [flag, "99999999", "--port", "0"]);
      assert.equal(r.code, 2, `${flag}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^error: ${flag} .*\\b2147483\\b`));
      assert.match(r.stderr, /usage: /);
      assert.ok(!hasStackTrace(r.stderr), r.stderr);
      assert.equal(r.out, "");
    }

    await using server = await startHttp([
      "--head-timeout",
      "2147483",
      "--idle-timeout",
      "2147483",
    ]);
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    try {
      // Pauses that no timer of these lengths ends: nothing sent yet, then
      // half a head. A timer that fired at once would close the connection
      // (silently, then with 408) long before either is over.
      await delay(300);
      await writeAll(conn, encode("GET /later HTTP/1.1\r\n"));
      await delay(300);
      await writeAll(conn, encode("Host: 127.0.0.1\r\n\r\n"));
      const res = parseResponse(
        await withTimeout(readAll(conn), 10_000, () => "no reply"),
      );
      assert.equal(res.statusLine, "HTTP/1.1 200 OK");
      await loggedExchange(
        server,
        '200 "GET /later HTTP/1.1"',
        conn.localAddr.port,
      );
    } finally {
      conn.close();
    }
  },
});
