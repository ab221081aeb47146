/**
 * client.ts, run as a user runs it: against a real server.ts, and against
 * small in-process servers that misbehave on purpose (never answer, keep
 * the connection open after a complete response, count their reads).
 * Fault and abuse cases are in tests/stress/client_test.ts.
 */
import assert from "node:assert/strict";
import * as client from "../client.ts";
import { randomBytes, sha256 } from "./lib/bytes.ts";
import {
  fullListenQueue,
  readAll,
  serveOne,
  tcpInfo,
  writeAll,
} from "./lib/net.ts";
import { needsNetns, offline } from "./lib/netns.ts";
import {
  commandFor,
  hasStackTrace,
  projectPath,
  runScript,
  startScript,
} from "./lib/spawn.ts";
import { delay } from "./lib/time.ts";
import { hasXxd, xxd } from "./lib/tools.ts";

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };

const encoder = new TextEncoder();

/** A port where nothing listens: bind a free one, then let it go. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Read until the peer closes or resets; either way it has gone. */
async function untilPeerGoes(conn: Deno.Conn): Promise<void> {
  try {
    await readAll(conn);
  } catch { /* a reset is a way to go */ }
}

/** Read one HTTP request head (up to the empty line). */
async function readHead(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(8192);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) break;
    head += new TextDecoder().decode(buf.subarray(0, n));
  }
  return head;
}

/** The lines of `text`, the empty last one dropped. */
function lines(text: string): string[] {
  return text.split("\n").filter((l, i, all) => l !== "" || i < all.length - 1);
}

// --- command line -----------------------------------------------------------

Deno.test("client --help prints usage and exits 0", async () => {
  const r = await runScript("client.ts", ["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /^usage: deno run --allow-net=127\.0\.0\.1 client\.ts/);
  for (const flag of ["--timeout", "--trace", "--hex", "--chunk", "--delay"]) {
    assert.ok(r.out.includes(`  ${flag} `), `--help shows ${flag}`);
  }
  assert.equal(r.stderr, "");
});

for (
  const [args, reason] of [
    // One case of the shared flag parsing (tests/plumbing_test.ts has
    // them all); the rest are client.ts's own rules.
    [["--bogus"], /unknown flag "--bogus"/],
    [["--http", "hello"], /--http sends its own request/],
    [["--path", "/x"], /--path goes with --http/],
    [
      ["--http", "--path", "/ü"],
      /^error: --path must start with \/ and hold only printable ASCII, no spaces or control characters; percent-encode the rest \(try --path \/%C3%BC\), not "\/ü"$/,
    ],
    [
      ["--http", "--path", "/a\tb"],
      /^error: --path must start with \/ and hold only printable ASCII, no spaces or control characters; percent-encode the rest \(try --path \/a%09b\), not "\/a\\tb"$/,
    ],
    [
      ["--http", "--path", "x y"],
      /^error: --path must start with \/ and hold only printable ASCII, .*\(try --path \/x%20y\), not "x y"$/,
    ],
    [["--port", "0", "hi"], /a client must name the server's port/],
    [["--timeout", "0", "hi"], /--timeout must be a whole number from 1/],
    [["--chunk", "0", "hi"], /--chunk must be a whole number from 1/],
    [["--delay", "100", "hi"], /--delay goes with --chunk/],
    // Timer-backed flags stop well below 2^31-1 ms, where a JS timer fires
    // at once.
    [
      ["--timeout", "3600001", "hi"],
      /^error: --timeout must be a whole number from 1 to 3600000, not "3600001"$/,
    ],
    [
      ["--chunk", "1", "--delay", "60001", "hi"],
      /^error: --delay must be a whole number from 0 to 60000, not "60001"$/,
    ],
    [
      ["--timeout", "2147483648", "hi"],
      /^error: --timeout must be a whole number from 1 to 3600000/,
    ],
  ] as const
) {
  Deno.test(`client ${args.join(" ")} is a usage error: exit 2 and a one-line reason`, async () => {
    const r = await runScript("client.ts", [...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.out, "");
    assert.match(r.stderr.split("\n")[0], reason);
    assert.match(r.stderr, /\n\nusage: /);
    assert.ok(!hasStackTrace(r.stderr));
  });
}

Deno.test("MESSAGE words are joined by single spaces and sent exactly, no newline added", () => {
  const options = client.parseClientArgs(["--port", "9", "hello", "big", "w"]);
  assert.notEqual(options, "help");
  if (options !== "help") assert.equal(options.message, "hello big w");
  const dashes = client.parseClientArgs(["--", "--not-a-flag", "x"]);
  assert.notEqual(dashes, "help");
  if (dashes !== "help") assert.equal(dashes.message, "--not-a-flag x");
});

// --- against server.ts ------------------------------------------------------

Deno.test("MESSAGE mode: the server's echo is on stdout, only 'sent N bytes' on stderr (no trace lines without --trace), exit 0", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const r = await runScript("client.ts", [
    "--port",
    String(server.port),
    "héllo",
    "wörld",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "héllo wörld");
  assert.equal(r.stderr, "sent 13 bytes\n");
  await server.waitForLine(/^tcp close .* in 13 bytes, out 13 bytes$/);
});

Deno.test("netcat mode: 1 MiB of random binary through stdin comes back byte-exact on stdout, nothing on stderr", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const payload = randomBytes(1024 * 1024);
  const r = await runScript("client.ts", ["--port", String(server.port)], {
    stdin: payload,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, payload.length);
  assert.equal(
    await sha256(r.stdout as Uint8Array<ArrayBuffer>),
    await sha256(payload),
  );
  assert.equal(r.stderr, "");
});

Deno.test("netcat mode with empty stdin half-closes at once and exits 0", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const r = await runScript("client.ts", ["--port", String(server.port)], {
    stdin: new Uint8Array(0),
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 0);
});

// --- connect failures: each told apart --------------------------------------

Deno.test({
  name:
    "connection refused: exit 1, one 'error:' line naming the address and both possible causes (nothing listens, or bound to another address)",
  ...SANITIZE,
  fn: async () => {
    // Nothing on the port at all, and a server on 127.0.0.1 reached through
    // 127.0.0.2: both are a reset from the host, both are refused.
    using bound = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const targets = [
      ["127.0.0.1", freePort()],
      ["127.0.0.2", bound.addr.port],
    ] as const;
    for (const [host, port] of targets) {
      const r = await runScript("client.ts", [
        "--hostname",
        host,
        "--port",
        String(port),
        "hello",
      ]);
      assert.equal(r.code, 1);
      assert.equal(r.out, "");
      const all = lines(r.stderr);
      assert.equal(all.length, 1, r.stderr);
      assert.match(
        all[0],
        new RegExp(
          `^error: connection refused by tcp ${
            host.replaceAll(".", "\\.")
          }:${port} \\(after \\d+ ms\\): .*no server listens on port ${port}, or the server is bound to another address`,
        ),
      );
      assert.ok(!hasStackTrace(r.stderr));
    }
  },
});

Deno.test({
  name:
    "connect timeout (the SYN gets no answer: a full listen queue): the error says so, names the address and the time, within the timeout plus a margin",
  ...SANITIZE,
  fn: async () => {
    // A full listen queue: the kernel drops further SYNs (lib/net.ts).
    using full = await fullListenQueue();
    const { port, queue } = full;
    assert.equal(queue.waiting, 2, `the queue is not full: ${queue.line}`);
    const started = performance.now();
    const r = await runScript("client.ts", [
      "--port",
      String(port),
      "--timeout",
      "300",
      "hi",
    ], { timeoutMs: 10_000 });
    const took = performance.now() - started;
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `error: no answer from tcp 127.0.0.1:${port} within 300 ms: the connection request (SYN) got no reply: a firewall may drop it, the server's listen queue may be full, or no host has that address; check --hostname, or wait longer with --timeout MS\n`,
    );
    assert.ok(took < 300 + 4000, `took ${took} ms`);
  },
});

// In a namespace of its own: the lookup fails, and no query leaves.
Deno.test(
  needsNetns("a name that does not resolve: exit 1 and a plain 'error:' line"),
  async () => {
    const r = await runScript("client.ts", [
      "--hostname",
      "no-such-host.invalid",
      "--port",
      "80",
      "x",
    ], offline());
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: cannot connect to tcp no-such-host\.invalid:80: the name "no-such-host\.invalid" does not resolve/,
    );
    assert.ok(!hasStackTrace(r.stderr));
  },
);

Deno.test("connecting outside the --allow-net grant: exit 1, the error names the grant to add", async () => {
  const r = await runScript("client.ts", [
    "--hostname",
    "127.0.0.2",
    "--port",
    "80",
    "x",
  ], {
    denoFlags: ["--allow-net=127.0.0.1"],
  });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: Deno has no permission to connect to tcp 127\.0\.0\.2:80; run again with --allow-net=127\.0\.0\.2\n$/,
  );
});

// --- --timeout bounds every wait --------------------------------------------

Deno.test({
  name:
    "--timeout 500 against a server that accepts and never answers: MESSAGE mode and --http give up with an error naming the address and the wait, exit 1",
  ...SANITIZE,
  fn: async () => {
    // They read what comes, and hold the connection open, silent, until
    // the test is over.
    const silent = async (conn: Deno.TcpConn, released: Promise<void>) => {
      await untilPeerGoes(conn);
      await released;
    };
    const talker = async (conn: Deno.TcpConn, released: Promise<void>) => {
      await writeAll(conn, encoder.encode("hi"));
      await untilPeerGoes(conn);
      await released;
    };
    await using a = serveOne(silent);
    await using b = serveOne(silent);
    await using c = serveOne(talker);
    const run = (port: number, args: string[]) =>
      runScript("client.ts", [
        "--port",
        String(port),
        "--timeout",
        "500",
        ...args,
      ], {
        timeoutMs: 10_000,
      });
    // In parallel: each waits half a second.
    const [message, http, partly] = await Promise.all([
      run(a.port, ["hello"]),
      run(b.port, ["--http"]),
      run(c.port, ["hello"]),
    ]);
    const nothing = (port: number) =>
      `error: no data from tcp 127.0.0.1:${port} for 500 ms (--timeout): the server accepted the connection but has sent nothing\n`;
    assert.equal(message.code, 1, message.stderr);
    assert.equal(message.stderr, "sent 5 bytes\n" + nothing(a.port));
    assert.equal(http.code, 1, http.stderr);
    assert.match(http.stderr, /^sent \d+ bytes\n/);
    assert.equal(lines(http.stderr)[1] + "\n", nothing(b.port));
    assert.equal(http.out, "");
    assert.equal(partly.code, 1, partly.stderr);
    assert.equal(partly.out, "hi");
    assert.match(
      partly.stderr,
      new RegExp(
        `\\nerror: no data from tcp 127\\.0\\.0\\.1:${c.port} for 500 ms \\(--timeout\\): the server sent 2 bytes, then nothing more\\n$`,
      ),
    );
  },
});

// --- --http stops at the end of the response --------------------------------

/**
 * Run `client.ts --http` against a server that answers `response` (written
 * as the given pieces) and then keeps the connection open until the client
 * goes. Returns the client's result and the request the server read.
 */
async function httpAgainst(pieces: string[], extraArgs: string[] = []) {
  let request = "";
  await using server = serveOne(async (conn) => {
    request = await readHead(conn);
    for (const piece of pieces) await writeAll(conn, encoder.encode(piece));
    await untilPeerGoes(conn); // keep-alive: the server does not close
  });
  const r = await runScript("client.ts", [
    "--http",
    "--port",
    String(server.port),
    ...extraArgs,
  ], { timeoutMs: 10_000 });
  await server.done;
  return { r, request, port: server.port };
}

Deno.test({
  name:
    "--http stops at the end of a Content-Length body though the server keeps the connection open: exit 0, exactly the response on stdout",
  ...SANITIZE,
  fn: async () => {
    const response = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    const { r, request, port } = await httpAgainst([response]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, response);
    assert.equal(r.stderr, `sent ${request.length} bytes\n`);
    assert.equal(
      request,
      `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: deno-socket-playground-client/1.0\r\nAccept: text/html,text/plain;q=0.9,*/*;q=0.8\r\nConnection: close\r\n\r\n`,
    );
  },
});

Deno.test({
  name:
    "--http stops after the last chunk and trailers of a chunked body (after a 100 Continue), though the server keeps the connection open",
  ...SANITIZE,
  fn: async () => {
    const pieces = [
      "HTTP/1.1 100 Continue\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
      "5;note=x\r\nde\r\nf\r\n",
      "0\r\nX-Trailer: yes\r\n\r\n",
    ];
    const { r } = await httpAgainst(pieces);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, pieces.join(""));
  },
});

Deno.test({
  name:
    "--http: a response cut short (Content-Length 10, 3 bytes, close) is an error saying what is missing, exit 1",
  ...SANITIZE,
  fn: async () => {
    let port = 0;
    await using server = serveOne(async (conn) => {
      await readHead(conn);
      await writeAll(
        conn,
        encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
      );
    });
    port = server.port;
    const r = await runScript("client.ts", ["--http", "--port", String(port)]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    assert.equal(
      lines(r.stderr)[1],
      `error: tcp 127.0.0.1:${port} closed the connection 7 bytes before the end of the body (Content-Length: 10)`,
    );
  },
});

Deno.test({
  name:
    "--http: a malformed chunked body ('zz' where a chunk size belongs, then close) is an error after printing what arrived, exit 1",
  ...SANITIZE,
  fn: async () => {
    const response =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    await using server = serveOne(async (conn) => {
      await readHead(conn);
      await writeAll(conn, encoder.encode(response));
    });
    const r = await runScript("client.ts", [
      "--http",
      "--port",
      String(server.port),
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, response);
    const all = lines(r.stderr);
    assert.equal(all.length, 2, r.stderr);
    assert.match(all[0], /^sent \d+ bytes$/);
    assert.equal(
      all[1],
      `error: tcp 127.0.0.1:${server.port} sent a malformed chunked body: "zz" is not a chunk size (hex digits); where the response ends cannot be told`,
    );
  },
});

Deno.test("ResponseEnd: a malformed chunked body is reported, not taken for a response read to the close", () => {
  const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const cases: [string, string][] = [
    [`${head}zz\r\n`, `"zz" is not a chunk size (hex digits)`],
    [`${head}3\r\nabcX\r\n`, "the data of a chunk is not followed by CRLF"],
    [`${head}${"1".repeat(5000)}`, "a chunk size line is over 4096 bytes"],
  ];
  for (const [response, why] of cases) {
    const end = new client.ResponseEnd();
    const bytes = encoder.encode(response);
    assert.equal(end.feed(bytes), bytes.length, why);
    assert.equal(end.done, true, why);
    assert.equal(
      end.problem,
      `a malformed chunked body: ${why}; where the response ends cannot be told`,
    );
  }
  // A well-formed one is not malformed, cut short or whole.
  const good = new client.ResponseEnd();
  good.feed(encoder.encode(`${head}3\r\nab`));
  assert.equal(good.problem, undefined);
  assert.equal(good.unfinished(), "before the last chunk of the chunked body");
});

Deno.test({
  name: "--http: a response with no length ends when the server closes, exit 0",
  ...SANITIZE,
  fn: async () => {
    const response = "HTTP/1.0 200 OK\r\n\r\nall of it\n";
    await using server = serveOne(async (conn) => {
      await readHead(conn);
      await writeAll(conn, encoder.encode(response));
    });
    const r = await runScript("client.ts", [
      "--http",
      "--port",
      String(server.port),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, response);
  },
});

Deno.test("ResponseEnd, fed one byte at a time, ends exactly at the last byte of each kind of response", () => {
  const cases: [string, string][] = [
    ["HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", "NEXT"],
    ["HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", "NEXT"],
    ["HTTP/1.1 304 Not Modified\r\n\r\n", "x"],
    ["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "x"],
    [
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK",
    ],
  ];
  for (const [response, after] of cases) {
    const end = new client.ResponseEnd();
    const bytes = encoder.encode(response + after);
    let taken = 0;
    for (let i = 0; i < bytes.length && !end.done; i++) {
      taken += end.feed(bytes.subarray(i, i + 1));
    }
    assert.ok(end.done, JSON.stringify(response));
    assert.equal(taken, response.length, JSON.stringify(response));
    assert.equal(end.unfinished(), undefined);
  }
  // Without a length, the response runs to the close: never done.
  const open = new client.ResponseEnd();
  const text = encoder.encode("HTTP/1.1 200 OK\r\n\r\nand so on");
  assert.equal(open.feed(text), text.length);
  assert.equal(open.done, false);
  assert.equal(open.unfinished(), undefined);
});

// --- stdout is where the data goes ------------------------------------------

Deno.test("stdout on a full disk (/dev/full): 'error: cannot write to stdout', not blaming the connection, exit 1", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const r = await runScript("client.ts", [
    "--port",
    String(server.port),
    "hello",
  ], { shellPrefix: "exec >/dev/full;" });
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^sent 5 bytes\nerror: cannot write to stdout: No space left on device/,
  );
  assert.equal(lines(r.stderr).length, 2, r.stderr);
});

Deno.test({
  name:
    "stdout closed by its reader (`| head`): the client stops quietly, exit 0",
  ...SANITIZE,
  fn: async () => {
    await using server = serveOne(async (conn) => {
      const block = new Uint8Array(64 * 1024);
      try {
        for (let i = 0; i < 256; i++) await writeAll(conn, block); // 16 MiB
      } catch { /* the client went away: that is the point */ }
    });
    const child = commandFor(
      "client.ts",
      [
        "--port",
        String(server.port),
        "hi",
      ],
      {},
      { stdin: "null" },
    ).spawn();
    const stderr = new Response(child.stderr).text();
    const reader = child.stdout.getReader();
    const first = await reader.read(); // some data came: now go away
    assert.ok(!first.done);
    await reader.cancel();
    const status = await child.status;
    assert.equal(status.code, 0, await stderr);
    assert.equal(await stderr, "sent 2 bytes\n");
  },
});

// --- --trace, --hex, --chunk, --delay: the writes and reads made visible -----

Deno.test({
  name:
    "--chunk 1 --trace hello: five 'wrote 1 bytes' lines on stderr, read lines that add up to the echo, stdout only the echo",
  ...SANITIZE,
  fn: async () => {
    await using server = serveOne(async (conn) => {
      await writeAll(conn, await readAll(conn));
    });
    const r = await runScript("client.ts", [
      "--port",
      String(server.port),
      "--chunk",
      "1",
      "--trace",
      "hello",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "hello");
    const all = lines(r.stderr);
    const wrote = all.filter((l) => l.startsWith("wrote"));
    assert.deepEqual(wrote, Array(5).fill("wrote 1 bytes"));
    assert.ok(all.includes("sent 5 bytes"), r.stderr);
    const reads = all.filter((l) => l.startsWith("read"));
    assert.ok(reads.length >= 1, r.stderr);
    let sum = 0;
    for (const l of reads) {
      const m = /^read (\d+) bytes$/.exec(l);
      assert.ok(m, l);
      sum += Number(m[1]);
    }
    assert.equal(sum, 5);
    assert.equal(all.length, wrote.length + reads.length + 1, r.stderr);
  },
});

Deno.test({
  // How many read() calls the server needs depends on how soon it gets to
  // run: a busy one finds two bytes waiting and reads them at once. What
  // the client did shows on the wire, and the kernel counts it whenever
  // the test runs: three data segments; and with two delays of 100 ms
  // between them, the last cannot come sooner than 200 ms after the start.
  name:
    "--chunk 1 --delay 100 abc: three separate 1-byte segments reach the server (the kernel counts them), the last 200 ms or more after the client starts",
  ...SANITIZE,
  fn: async () => {
    let received = "";
    let info: Record<string, number> = {};
    let lastByteMs = 0;
    const started = performance.now();
    await using server = serveOne(async (conn) => {
      received = new TextDecoder().decode(await readAll(conn));
      lastByteMs = performance.now() - started;
      info = await tcpInfo(conn); // after the client's FIN, before our close
    });
    const r = await runScript("client.ts", [
      "--port",
      String(server.port),
      "--chunk",
      "1",
      "--delay",
      "100",
      "abc",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "sent 3 bytes\n");
    await server.done;
    assert.equal(received, "abc");
    assert.equal(info.data_segs_in, 3, JSON.stringify(info));
    assert.ok(lastByteMs >= 200, `all bytes in after ${lastByteMs} ms`);
  },
});

Deno.test({
  name:
    "--hex: under each trace line, the bytes exactly as /usr/bin/xxd shows them (binary, NUL, CR LF)",
  ...SANITIZE,
  fn: async (t) => {
    const payload = new Uint8Array(300);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    payload.set(encoder.encode("GET / HTTP/1.1\r\n\r\n\0"), 100);
    if (!hasXxd()) {
      t.step({
        name: "skipped: no xxd on this machine",
        ignore: true,
        fn() {},
      });
      return;
    }
    await using server = serveOne(async (conn) => {
      await writeAll(conn, await readAll(conn));
    });
    const r = await runScript("client.ts", [
      "--port",
      String(server.port),
      "--hex",
    ], { stdin: payload });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.length, payload.length);
    // Split stderr into blocks: a trace line, then its dump lines.
    const blocks: { what: string; dump: string[] }[] = [];
    for (const line of lines(r.stderr)) {
      if (/^(read|wrote) \d+ bytes$/.test(line)) {
        blocks.push({ what: line, dump: [] });
      } else {
        assert.ok(blocks.length > 0, `a dump line before any trace: ${line}`);
        blocks.at(-1)!.dump.push(line);
      }
    }
    for (const kind of ["wrote", "read"]) {
      const mine = blocks.filter((b) => b.what.startsWith(kind));
      assert.ok(mine.length > 0, `${kind} lines:\n${r.stderr}`);
      let offset = 0;
      for (const block of mine) {
        const size = Number(/\d+/.exec(block.what)![0]);
        const piece = payload.subarray(offset, offset + size);
        assert.deepEqual(block.dump, await xxd(piece), block.what);
        offset += size;
      }
      assert.equal(offset, payload.length, kind);
    }
  },
});

// --- in-process -------------------------------------------------------------

Deno.test({
  name:
    "in-process: exchange() sends, half-closes and collects the echo without leaking",
  ...SANITIZE,
  fn: async () => {
    await using server = serveOne(async (conn) => {
      // An echo that reads and writes at once, as server.ts does.
      const buf = new Uint8Array(64 * 1024);
      let n: number | null;
      while ((n = await conn.read(buf)) !== null) {
        await writeAll(conn, buf.subarray(0, n));
      }
    });
    const payload = randomBytes(3 * 1024 * 1024);
    const { reply, local, remote } = await client.exchange(
      "127.0.0.1",
      server.port,
      payload,
      5000,
    );
    assert.equal(
      await sha256(reply as Uint8Array<ArrayBuffer>),
      await sha256(payload),
    );
    assert.equal(remote.port, server.port);
    assert.notEqual(local.port, remote.port);
  },
});

Deno.test({
  name:
    "netcat mode keeps sending stdin after the server half-closes first, like nc -N",
  ...SANITIZE,
  fn: async () => {
    // A server that says its piece, half-closes, and then counts what it
    // still receives: nothing of stdin may be lost because it spoke first.
    let received = new Uint8Array(0);
    await using server = serveOne(async (conn) => {
      await writeAll(conn, encoder.encode("banner\n"));
      await conn.closeWrite();
      received = await readAll(conn);
    });
    const payload = randomBytes(5 * 1024 * 1024);
    const r = await runScript("client.ts", ["--port", String(server.port)], {
      stdin: payload,
    });
    await server.done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "banner\n");
    assert.equal(received.length, payload.length);
    assert.equal(
      await sha256(received as Uint8Array<ArrayBuffer>),
      await sha256(payload),
    );
  },
});

// --- --http reads a bounded response head (and chunk lines, trailers) ------

/**
 * The start of a response, then `filler` written again and again until the
 * client goes: a head, a chunk-size line or trailers without end.
 */
const ENDLESS: [string, string, string, (port: number) => string][] = [
  [
    "header lines",
    "HTTP/1.1 200 OK\r\n",
    "X-Filler: 0123456789abcdef0123456789abcdef\r\n",
    (port) =>
      `error: tcp 127.0.0.1:${port} sent a response head over ${client.MAX_RESPONSE_HEAD} bytes, the most this client reads (status line and header lines, and no empty line to end them): a broken server, or not a web server`,
  ],
  [
    "a chunk-size line",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=",
    "0123456789abcdef",
    (port) =>
      `error: tcp 127.0.0.1:${port} sent a malformed chunked body: a chunk size line is over ${client.MAX_CHUNK_LINE} bytes; where the response ends cannot be told`,
  ],
  [
    "trailer lines",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n",
    "X-Trailer: 0123456789abcdef0123456789abcdef\r\n",
    (port) =>
      `error: tcp 127.0.0.1:${port} sent a malformed chunked body: its trailer lines go over ${client.MAX_RESPONSE_HEAD} bytes with no empty line to end them; where the response ends cannot be told`,
  ],
];

for (const [what, start, filler, error] of ENDLESS) {
  Deno.test({
    name:
      `--http against a server that sends ${what} without end: it stops at its bound, one error line naming the bound and the address, exit 1`,
    ...SANITIZE,
    fn: async () => {
      await using server = serveOne(async (conn) => {
        await readHead(conn);
        await writeAll(conn, encoder.encode(start));
        const block = encoder.encode(filler.repeat(16 * 1024 / filler.length));
        try {
          for (;;) await writeAll(conn, block);
        } catch { /* the client gave up and went: that is the point */ }
      });
      const r = await runScript("client.ts", [
        "--http",
        "--port",
        String(server.port),
      ], { timeoutMs: 10_000 });
      assert.equal(r.code, 1, r.stderr);
      const all = lines(r.stderr);
      assert.match(all[0], /^sent \d+ bytes$/);
      assert.deepEqual(all.slice(1), [error(server.port)]);
      // What arrived is printed, up to the read that crossed the bound.
      assert.ok(r.out.startsWith(start), r.out.slice(0, 200));
      assert.ok(
        r.stdout.length <= client.MAX_RESPONSE_HEAD + 64 * 1024,
        `${r.stdout.length} bytes on stdout`,
      );
    },
  });
}

Deno.test("ResponseEnd keeps its bounds: a head (1xx heads included) or trailers over MAX_RESPONSE_HEAD, a chunk-size line over MAX_CHUNK_LINE, are a problem; a head of exactly the bound is not", () => {
  const max = client.MAX_RESPONSE_HEAD;
  // A head of exactly `size` bytes, its last CRLF CRLF included.
  const headOf = (size: number) => {
    const start = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n";
    const filler = "X: " + "a".repeat(size - start.length - 7) + "\r\n";
    return start + filler + "\r\n";
  };
  assert.equal(headOf(max).length, max);
  const exact = new client.ResponseEnd();
  const bytes = encoder.encode(headOf(max));
  assert.equal(exact.feed(bytes), bytes.length);
  assert.equal(exact.done, true);
  assert.equal(exact.problem, undefined);

  const tooBig =
    `a response head over ${max} bytes, the most this client reads (status line and header lines, and no empty line to end them): a broken server, or not a web server`;
  const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const cases: [string, string, string][] = [
    ["a head one byte over", headOf(max + 1), tooBig],
    // Each 1xx head is small, but they never end: they count together.
    [
      "endless 100 Continue heads",
      "HTTP/1.1 100 Continue\r\n\r\n".repeat(max / 20),
      tooBig,
    ],
    [
      "one head line without its LF",
      "HTTP/1.1 200 OK\r\nX: " + "a".repeat(max),
      tooBig,
    ],
    [
      "trailers without end",
      `${chunked}0\r\n${"X-T: abcdefgh\r\n".repeat(max / 10)}`,
      `a malformed chunked body: its trailer lines go over ${max} bytes with no empty line to end them; where the response ends cannot be told`,
    ],
    [
      "chunk extensions without end",
      `${chunked}1;${"e".repeat(client.MAX_CHUNK_LINE)}`,
      `a malformed chunked body: a chunk size line is over ${client.MAX_CHUNK_LINE} bytes; where the response ends cannot be told`,
    ],
  ];
  for (const [what, response, problem] of cases) {
    // Whole, and in reads of 1000 bytes: the bound holds across reads.
    for (const step of [response.length, 1000]) {
      const end = new client.ResponseEnd();
      const all = encoder.encode(response);
      for (let at = 0; at < all.length && !end.done; at += step) {
        end.feed(all.subarray(at, at + step));
      }
      assert.equal(end.done, true, `${what}, reads of ${step}`);
      assert.equal(end.problem, problem, `${what}, reads of ${step}`);
    }
  }
});

// --- netcat mode: stdin that cannot be read ---------------------------------

Deno.test("netcat mode with stdin a folder (EISDIR) against an echo server: one 'error: cannot read stdin' line at once, exit 1, not a wait for ever", async () => {
  // server.ts echoes and closes only after our FIN, which never comes.
  await using server = await startScript("server.ts", ["--port", "0"]);
  const folder = projectPath("tests");
  const r = await runScript("client.ts", ["--port", String(server.port)], {
    shellPrefix: `exec <'${folder}';`,
    timeoutMs: 15_000,
  });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr,
    "error: cannot read stdin: Is a directory (os error 21): stdin is a folder; redirect a file (< FILE) or pipe data in\n",
  );
  assert.equal(r.out, "");
  // The connection is closed, not left open.
  await server.waitForLine(/^tcp close .* in 0 bytes, out 0 bytes$/);
});

// --- the longest timer-backed values really wait ----------------------------

/** The largest value `--help` offers for `flag` (its `LO..HI` range). */
async function largestInHelp(flag: string): Promise<string> {
  const help = (await runScript("client.ts", ["--help"])).out;
  const m = new RegExp(`  ${flag} [\\s\\S]*?\\d+\\.\\.(\\d+)`).exec(help);
  assert.ok(m, `no range for ${flag} in --help:\n${help}`);
  return m[1];
}

Deno.test({
  name:
    "the largest --timeout (an hour) waits: a server silent for 1.5 s, then a reply, gives exit 0 with the reply, not a timeout at once",
  ...SANITIZE,
  fn: async () => {
    const largest = await largestInHelp("--timeout");
    await using server = serveOne(async (conn) => {
      await readAll(conn); // the MESSAGE, to its end (our FIN)
      await delay(1500); // silent: a wait the client must sit out
      await writeAll(conn, encoder.encode("late"));
    });
    const r = await runScript("client.ts", [
      "--port",
      String(server.port),
      "--timeout",
      largest,
      "hi",
    ], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "late");
    assert.equal(r.stderr, "sent 2 bytes\n");
  },
});

Deno.test({
  name:
    "the largest --delay (a minute) waits: with --chunk 1, the second byte does not come within 1 s",
  ...SANITIZE,
  fn: async () => {
    const largest = await largestInHelp("--delay");
    const gotFirst = Promise.withResolvers<void>();
    let second = "";
    await using server = serveOne(async (conn) => {
      const buf = new Uint8Array(16);
      const first = await conn.read(buf);
      assert.equal(first, 1);
      gotFirst.resolve();
      const next = conn.read(buf).catch(() => null);
      second = await Promise.race([
        next.then((n) => `a read of ${n} bytes`),
        delay(1000).then(() => "nothing"),
      ]);
    });
    const child = commandFor(
      "client.ts",
      [
        "--port",
        String(server.port),
        "--chunk",
        "1",
        "--delay",
        largest,
        "ab",
      ],
      {},
      { stdin: "null" },
    ).spawn();
    try {
      const exited = child.status.then((s) => {
        throw new Error(`the client exited early, status ${s.code}`);
      });
      await Promise.race([gotFirst.promise.then(() => server.done), exited]);
      assert.equal(second, "nothing");
    } finally {
      child.kill("SIGKILL");
      await child.output();
    }
  },
});
