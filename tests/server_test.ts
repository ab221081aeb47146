/**
 * server.ts, driven the way a user drives it: `deno run --allow-net
 * server.ts --port 0 ...` in a child process, clients on real sockets.
 */
import assert from "node:assert/strict";
import { listenTcp, serveTcp } from "../server.ts";
import { concat, randomBytes, sha256 } from "./lib/bytes.ts";
import { hasIpv6Loopback, readAll, readExactly, writeAll } from "./lib/net.ts";
import {
  hasStackTrace,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";

/** Send `payload` in uneven chunks while reading the echo; return the echo. */
async function echoThrough(
  port: number,
  payload: Uint8Array<ArrayBuffer>,
  hostname = "127.0.0.1",
): Promise<Uint8Array<ArrayBuffer>> {
  using conn = await Deno.connect({ hostname, port });
  const sizes = [1, 7, 1000, 4096, 65_537, 3, 300_000];
  const send = async () => {
    let offset = 0;
    for (let i = 0; offset < payload.length; i++) {
      const size = sizes[i % sizes.length];
      await writeAll(conn, payload.subarray(offset, offset + size));
      offset += size;
    }
    await conn.closeWrite();
  };
  const [, echoed] = await Promise.all([send(), readAll(conn)]);
  return echoed;
}

/**
 * The server closes `conn`: our next read sees the end (or a reset) within
 * 20 s, and no data.
 */
async function assertServerCloses(
  conn: Deno.Conn,
  failure: string,
): Promise<void> {
  const n = await withTimeout(
    conn.read(new Uint8Array(16)).catch(() => null),
    20_000,
    () => failure,
  );
  assert.equal(n, null, failure);
}

Deno.test("server --help prints usage and exits 0", async () => {
  const r = await runScript("server.ts", ["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /^usage: deno run --allow-net=127\.0\.0\.1 server\.ts/);
  assert.match(r.out, /--max-connections N .*\n.*default 1000/);
  assert.match(r.out, /0\.0\.0\.0/);
  assert.equal(r.stderr, "");
});

for (
  const [args, reason] of [
    [["--bogus"], /unknown flag "--bogus"/],
    [["--port", "70000"], /--port must be a whole number from 0 to 65535/],
    [["--port", "-1"], /--port must be a whole number from 0 to 65535/],
    [["--port", "abc"], /--port must be a whole number from 0 to 65535/],
    [["--port"], /--port needs a value/],
    [["--max-connections", "0"], /--max-connections must be/],
  ] as const
) {
  Deno.test(`server ${args.join(" ")} is a usage error: exit 2, one-line reason, nothing bound`, async () => {
    const r = await runScript("server.ts", [...args]);
    assert.equal(r.code, 2);
    assert.equal(
      r.out,
      "",
      "a usage error binds nothing and prints no listening line",
    );
    const [first, blank, usage] = r.stderr.split("\n");
    assert.match(first, /^error: /);
    assert.match(first, reason);
    assert.equal(blank, "");
    assert.match(usage, /^usage: /);
    assert.ok(!hasStackTrace(r.stderr));
  });
}

Deno.test("server prints 'tcp listening on HOST:PORT' first, with the real port for --port 0", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  assert.equal(server.host, "127.0.0.1");
  assert.ok(server.port > 0 && server.port < 65536);
  assert.equal(
    server.stdout.lines[0],
    `tcp listening on 127.0.0.1:${server.port}`,
  );
});

Deno.test("echo is byte-exact for random payloads of 1 B, 64 KiB and 8 MiB sent in uneven chunks", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  for (const size of [1, 64 * 1024, 8 * 1024 * 1024]) {
    const payload = randomBytes(size);
    const echoed = await echoThrough(server.port, payload);
    assert.equal(echoed.length, size);
    assert.equal(await sha256(echoed), await sha256(payload), `${size} bytes`);
  }
  await server.waitForLine(/\(#3\) in 8388608 bytes, out 8388608 bytes$/);
});

Deno.test("the classic first client: write 1234, the write reports 4 bytes, 1234 comes back", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const written = await conn.write(new TextEncoder().encode("1234"));
  assert.equal(written, 4);
  const back = await readExactly(conn, 4);
  assert.equal(new TextDecoder().decode(back), "1234");
});

Deno.test("120 concurrent clients each get their own distinct payload back", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--quiet",
  ]);
  const results = await Promise.all(
    Array.from({ length: 120 }, async (_, i) => {
      const payload = randomBytes(1000 + i * 997);
      const echoed = await echoThrough(server.port, payload);
      return { want: await sha256(payload), got: await sha256(echoed) };
    }),
  );
  for (const [i, r] of results.entries()) {
    assert.equal(r.got, r.want, `client ${i}`);
  }
});

Deno.test("log lines name the socket pair: two clients share the server port and differ in theirs", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  using a = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  using b = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  for (const conn of [a, b]) {
    const local = conn.localAddr;
    const line = await server.waitForLine(
      new RegExp(
        `^tcp open local 127\\.0\\.0\\.1:${server.port} remote 127\\.0\\.0\\.1:${local.port} `,
      ),
    );
    assert.match(line, /\(#\d+, \d+ open\)$/);
  }
  assert.notEqual(a.localAddr.port, b.localAddr.port);
  assert.equal(a.remoteAddr.port, b.remoteAddr.port);
  await a.closeWrite();
  assert.equal((await readAll(a)).length, 0);
  await server.waitForLine(
    new RegExp(
      `^tcp close local 127\\.0\\.0\\.1:${server.port} remote 127\\.0\\.0\\.1:${a.localAddr.port} \\(#\\d+\\) in 0 bytes, out 0 bytes$`,
    ),
  );
});

Deno.test("half-close: after the client's FIN the server sends everything back, then closes", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const payload = randomBytes(2 * 1024 * 1024);
  // Send everything and half-close before reading a single byte: the echo
  // waits in the kernel buffers and in the server until we read.
  const sending = writeAll(conn, payload).then(() => conn.closeWrite());
  const echoed = await readAll(conn);
  await sending;
  assert.equal(await sha256(echoed), await sha256(payload));
});

Deno.test("echo survives a client reset mid-transfer; the next client is served", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const sending = writeAll(rude, randomBytes(1024 * 1024)).catch(() => {});
  await readExactly(rude, 1000); // the echo is flowing
  // Close with unread bytes in our receive buffer: the kernel sends RST.
  rude.close();
  await sending;
  const line = await server.waitForLine(
    new RegExp(`remote 127\\.0\\.0\\.1:\\d+ \\(#1\\) in `),
  );
  assert.match(line, /^tcp close /);
  const payload = randomBytes(100_000);
  assert.equal(
    await sha256(await echoThrough(server.port, payload)),
    await sha256(payload),
  );
});

Deno.test("--max-connections 2: the third concurrent client is closed at once, the first two still echo", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--max-connections",
    "2",
  ]);
  using first = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  using second = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  await server.waitForLine(/\(#2, 2 open\)$/);
  using third = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.port,
  });
  // The server accepts and closes it: our read sees the end (or a reset).
  await assertServerCloses(third, "the third client was not closed");
  await server.waitForLine(/^tcp refused .*--max-connections 2$/);
  for (const conn of [first, second]) {
    await writeAll(conn, new TextEncoder().encode("still here"));
    assert.equal(
      new TextDecoder().decode(await readExactly(conn, 10)),
      "still here",
    );
  }
});

Deno.test("--idle-timeout closes a connection that sends nothing", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--idle-timeout",
    "1",
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await assertServerCloses(conn, "the idle connection was not closed");
  await server.waitForLine(
    /^tcp close .* in 0 bytes, out 0 bytes: idle for 1 s$/,
  );
});

Deno.test("SIGTERM mid-transfer: the client gets all its bytes back, the server exits 0 with a summary", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--grace",
    "20",
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const payload = randomBytes(4 * 1024 * 1024);
  const half = payload.length / 2;
  await writeAll(conn, payload.subarray(0, 1000));
  const start = await readExactly(conn, 1000);
  // The transfer is under way: ask the server to stop, then keep sending.
  server.child.kill("SIGTERM");
  await server.waitForLine(/^tcp stopping: 1 open/);
  const rest = Promise.all([
    writeAll(conn, payload.subarray(1000, half))
      .then(() => writeAll(conn, payload.subarray(half)))
      .then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  const [, tail] = await rest;
  const echoed = concat([start, tail]);
  assert.equal(await sha256(echoed), await sha256(payload));
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0);
  assert.match(
    server.stdout.lines.at(-1) ?? "",
    /^tcp server stopped: 1 connections, 0 refused, 4194304 bytes in, 4194304 bytes out$/,
  );
});

Deno.test("a second SIGTERM during the grace period closes open connections at once", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--grace",
    "600",
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await server.waitForLine(/^tcp open /);
  server.child.kill("SIGTERM");
  await server.waitForLine(/^tcp stopping: 1 open, up to 600 s to finish$/);
  server.child.kill("SIGTERM");
  await assertServerCloses(
    conn,
    "the connection was not closed by the second signal",
  );
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0);
  assert.match(server.stdout.text(), /: shutdown, forced by a second signal\n/);
  assert.match(
    server.stdout.lines.at(-1) ?? "",
    /^tcp server stopped: 1 connections/,
  );
});

Deno.test("a second server on the same address and port fails: exit 1, one error line, no stack trace", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const r = await runScript("server.ts", ["--port", String(server.port)]);
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(
    lines[0],
    new RegExp(`^error: tcp 127\\.0\\.0\\.1:${server.port} is already in use`),
  );
  assert.ok(!hasStackTrace(r.stderr));
});

Deno.test({
  name: "IPv6 loopback: --hostname ::1 listens on [::1] and echoes" +
    (hasIpv6Loopback() ? "" : " (skipped: this machine has no IPv6 loopback)"),
  ignore: !hasIpv6Loopback(),
  fn: async () => {
    await using server = await startScript("server.ts", [
      "--hostname",
      "::1",
      "--port",
      "0",
    ]);
    assert.match(server.stdout.lines[0], /^tcp listening on \[::1\]:\d+$/);
    const payload = randomBytes(70_000);
    const echoed = await echoThrough(server.port, payload, "::1");
    assert.equal(await sha256(echoed), await sha256(payload));
    await server.waitForLine(/^tcp open local \[::1\]:\d+ remote \[::1\]:\d+ /);
  },
});

Deno.test({
  name:
    "in-process: serveTcp echoes and stops on an AbortSignal without leaking",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const listener = listenTcp({ hostname: "127.0.0.1", port: 0 });
    const stop = new AbortController();
    const lines: string[] = [];
    const serving = serveTcp(listener, {
      signal: stop.signal,
      log: (l) => lines.push(l),
    });
    const payload = randomBytes(300_000);
    const echoed = await echoThrough(listener.addr.port, payload);
    assert.equal(await sha256(echoed), await sha256(payload));
    stop.abort();
    const summary = await serving;
    assert.deepEqual(summary, {
      connections: 1,
      refused: 0,
      bytesIn: 300_000,
      bytesOut: 300_000,
    });
    assert.equal(lines.length, 2);
    assert.match(
      lines[1],
      /^tcp close local 127\.0\.0\.1:\d+ remote 127\.0\.0\.1:\d+ \(#1\) in 300000 bytes, out 300000 bytes$/,
    );
  },
});
