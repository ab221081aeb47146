/**
 * server.ts, driven the way a user drives it: `deno run --allow-net
 * server.ts --port 0 ...` in a child process, clients on real sockets.
 */
import assert from "node:assert/strict";
import { listenTcp, serveTcp } from "../server.ts";
import { concat, randomBytes, sha256 } from "./lib/bytes.ts";
import { hasIpv6Loopback, readAll, readExactly, writeAll } from "./lib/net.ts";
import {
  commandFor,
  hasStackTrace,
  OutputCollector,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import { hasPython3, hasXxd, resetClients, xxd } from "./lib/tools.ts";
import { startUnread } from "./lib/unread.ts";

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
 * A script started by hand (for stdout that startScript cannot read):
 * stderr collected, stdout collected unless the test reads it itself,
 * always killed at the end.
 */
class ManualScript implements AsyncDisposable {
  readonly stderr: OutputCollector;
  readonly stdout?: OutputCollector;
  constructor(
    readonly child: Deno.ChildProcess,
    options: { keepStdout?: boolean } = {},
  ) {
    this.stderr = new OutputCollector(child.stderr);
    if (!options.keepStdout) this.stdout = new OutputCollector(child.stdout);
  }

  /** The first stderr line matching `re`; fails if the child exits first. */
  waitForStderr(re: RegExp): Promise<string> {
    const exited = this.child.status.then(() => this.stderr.done).then(() => {
      const line = this.stderr.lines.find((l) => re.test(l));
      if (line !== undefined) return line;
      throw new Error(
        `exited with no stderr line matching ${re}; stderr:\n${this.stderr.text()}`,
      );
    });
    return withTimeout(
      Promise.race([this.stderr.waitFor(re), exited]),
      20_000,
      () => `no stderr line matching ${re}; stderr:\n${this.stderr.text()}`,
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.child.status;
    await Promise.all([this.stderr.done, this.stdout?.done]);
  }
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
  assert.match(r.out, /--max-connections N .*default 1000/);
  assert.match(r.out, /0\.0\.0\.0/);
  // Each TCP option says what it changes; --unix gives its grants.
  assert.match(r.out, /--nodelay +TCP_NODELAY: Nagle off/);
  assert.match(
    r.out,
    /--keepalive +SO_KEEPALIVE: .*2 h.*\n.*Deno cannot set it/,
  );
  assert.match(
    r.out,
    /deno run --allow-read=PATH --allow-write=PATH --allow-net=unix:PATH server\.ts --unix PATH/,
  );
  assert.match(r.out, /workers\.ts/);
  assert.equal(r.stderr, "");
});

for (
  const [args, reason] of [
    // One case of the shared flag parsing (tests/plumbing_test.ts has
    // them all); the rest are server.ts's own limits.
    [["--bogus"], /unknown flag "--bogus"/],
    [["--max-connections", "0"], /--max-connections must be/],
    // --workers moved to workers.ts: the error says so.
    [["--workers", "2"], /^error: --workers is workers\.ts's flag now$/m],
    // --unix replaces the address and port; TCP's own flags have no use.
    ...[
      "--hostname=::1",
      "--port=9",
      "--backlog=9",
      "--reuse-port",
      "--nodelay",
      "--keepalive",
    ]
      .map((flag) =>
        [
          ["--unix", "/tmp/x.sock", flag],
          new RegExp(
            `^error: ${
              flag.split("=")[0]
            } is a TCP flag: it does not go with --unix$`,
          ),
        ] as const
      ),
    // Timers hold at most 2^31-1 ms: a longer one would fire at once.
    [["--grace", "99999999"], /--grace must be .* from 0 to 2147483 /],
    [
      ["--idle-timeout", "2147484"],
      /--idle-timeout must be .* from 0 to 2147483 /,
    ],
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
  const status = await server.exited(); // the last connection ended it
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
  const status = await server.exited(); // a third signal could kill it
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

// --- accept() failures that belong to one client ---------------------------

Deno.test({
  name:
    "12 clients that reset before accept() do not delay the next client: it is echoed within 2 s" +
    (hasPython3() ? "" : " (skipped: needs python3 for SO_LINGER)"),
  ignore: !hasPython3(),
  fn: async () => {
    await using server = await startScript("server.ts", ["--port", "0"]);
    // Freeze the server so that it cannot accept: the kernel still
    // completes each handshake and queues the connection, and the reset
    // then arrives while it waits in the queue. Each of them makes
    // accept() fail with ENOTCONN once the server runs again.
    server.child.kill("SIGSTOP");
    try {
      await resetClients(server.port, 12);
    } finally {
      server.child.kill("SIGCONT");
    }
    const started = performance.now();
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    await writeAll(conn, new TextEncoder().encode("after the resets"));
    const back = await withTimeout(
      readExactly(conn, 16),
      20_000,
      () => "no echo within 20 s after the resets",
    );
    const ms = performance.now() - started;
    assert.equal(new TextDecoder().decode(back), "after the resets");
    assert.ok(
      ms < 2000,
      `the echo took ${ms.toFixed(0)} ms after 12 resets before accept()`,
    );
    assert.doesNotMatch(
      server.stderr.text(),
      /accept failed/,
      "a client's reset is not a server problem to warn about",
    );
  },
});

// --- logging is best effort -------------------------------------------------

/**
 * The port process `pid` listens on, from /proc: its socket inodes
 * (/proc/PID/fd) matched against the LISTEN rows of /proc/PID/net/tcp.
 * For a server whose stdout (and so its listening line) goes nowhere.
 */
async function listeningPortOf(pid: number): Promise<number> {
  const run = async (cmd: string, args: string[]) =>
    new TextDecoder().decode(
      (await new Deno.Command(cmd, { args, stderr: "null" }).output()).stdout,
    );
  const fds = await run("ls", ["-l", `/proc/${pid}/fd`]);
  const inodes = new Set(
    [...fds.matchAll(/socket:\[(\d+)\]/g)].map((m) => m[1]),
  );
  const table = await run("cat", [`/proc/${pid}/net/tcp`]);
  for (const row of table.split("\n").slice(1)) {
    const f = row.trim().split(/\s+/);
    // f[1] local address HEX:HEXPORT, f[3] state (0A = LISTEN), f[9] inode
    if (f[3] === "0A" && inodes.has(f[9])) {
      return parseInt(f[1].split(":")[1], 16);
    }
  }
  throw new Error(`process ${pid} has no listening TCP socket`);
}

Deno.test("stdout on /dev/full: the server says so once on stderr, keeps echoing, and exits 0 on SIGTERM", async () => {
  const command = commandFor("server.ts", ["--port", "0"], {
    shellPrefix: "exec >/dev/full;",
  }, { stdin: "null" });
  await using server = new ManualScript(command.spawn());
  // The listening line cannot be written: its failure is the warning we
  // wait for. Then /proc tells the port (the line that had it is lost).
  const warning = await server.waitForStderr(/^warning: cannot write/);
  assert.match(warning, /No space left on device/);
  const port = await listeningPortOf(server.child.pid);
  for (const word of ["one", "two"]) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode(word));
    await conn.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn)), word);
  }
  server.child.kill("SIGTERM");
  const status = await server.child.status;
  await server.stderr.done;
  assert.equal(status.code, 0, server.stderr.text());
  assert.equal(
    server.stderr.lines.filter((l) => l !== "").length,
    1,
    `one warning, no more:\n${server.stderr.text()}`,
  );
  assert.ok(!hasStackTrace(server.stderr.text()));
});

Deno.test("stdout pipe closed by the reader: the server keeps echoing and exits 0 on SIGTERM", async () => {
  const command = commandFor("server.ts", ["--port", "0"], {}, {
    stdin: "null",
  });
  const child = command.spawn();
  await using server = new ManualScript(child, { keepStdout: true });
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    assert.ok(!done, "no listening line");
    text += value;
  }
  const port = Number(/:(\d+)\n/.exec(text)?.[1]);
  await reader.cancel(); // we stop reading: the pipe's read end closes
  for (const word of ["after", "the pipe closed"]) {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode(word));
    await conn.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn)), word);
  }
  child.kill("SIGTERM");
  const status = await child.status;
  await server.stderr.done;
  assert.equal(status.code, 0, server.stderr.text());
  assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
});

Deno.test("--help with stdout on /dev/full: one error line blaming stdout, exit 1, no stack trace", async () => {
  const r = await runScript("server.ts", ["--help"], {
    shellPrefix: "exec >/dev/full;",
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: cannot write to stdout: .*\n$/);
  assert.ok(!hasStackTrace(r.stderr));
});

// --- --trace and --hex --------------------------------------------------------

/** Sizes in the trace lines `tcp #ID read|wrote N bytes` of connection `id`. */
function traced(lines: string[], what: "read" | "wrote", id = 1): number[] {
  const re = new RegExp(`^tcp #${id} ${what} (\\d+) bytes$`);
  return lines.flatMap((l) => {
    const m = re.exec(l);
    return m ? [Number(m[1])] : [];
  });
}

const sum = (ns: number[]) => ns.reduce((a, b) => a + b, 0);

Deno.test("--trace: the read lines add up to the bytes received, the wrote lines to the bytes sent back", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--trace",
  ]);
  const payload = randomBytes(300_000);
  const echoed = await echoThrough(server.port, payload);
  assert.equal(await sha256(echoed), await sha256(payload));
  await server.waitForLine(/^tcp close .*\(#1\) in 300000 bytes/);
  const reads = traced(server.stdout.lines, "read");
  const writes = traced(server.stdout.lines, "wrote");
  assert.equal(sum(reads), 300_000);
  assert.equal(sum(writes), 300_000);
  // Each is a real read: never empty, never more than the buffer.
  for (const n of [...reads, ...writes]) {
    assert.ok(n > 0 && n <= 65_536, `${n}`);
  }
  assert.ok(reads.length > 1, "300,000 bytes cannot arrive in one read");
});

Deno.test("--trace: writes that wait for their echo are read one by one, 1, 2 and 3 bytes", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--trace",
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  for (const word of ["a", "bb", "ccc"]) {
    await writeAll(conn, new TextEncoder().encode(word));
    const back = await readExactly(conn, word.length);
    assert.equal(new TextDecoder().decode(back), word);
  }
  await conn.closeWrite();
  assert.equal((await readAll(conn)).length, 0);
  await server.waitForLine(/^tcp close .*\(#1\) in 6 bytes, out 6 bytes$/);
  assert.deepEqual(traced(server.stdout.lines, "read"), [1, 2, 3]);
  assert.deepEqual(traced(server.stdout.lines, "wrote"), [1, 2, 3]);
});

Deno.test({
  name:
    "--hex (alone: it implies --trace) dumps each read and write exactly as xxd shows the bytes: binary, NUL, CR LF" +
    (hasXxd() ? "" : " (skipped: no xxd)"),
  ignore: !hasXxd(),
  fn: async () => {
    await using server = await startScript("server.ts", [
      "--port",
      "0",
      "--hex",
    ]);
    const payload = new Uint8Array([
      ...new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      0,
      0,
      1,
      0x7f,
      0x80,
      0xff,
      ...randomBytes(40),
      13,
      10,
    ]);
    const echoed = await echoThrough(server.port, payload);
    assert.deepEqual(echoed, payload);
    await server.waitForLine(/^tcp close .*\(#1\) in \d+ bytes/);
    // Each trace line is followed by the dump of exactly its bytes; the
    // reads, in order, are the payload.
    const lines = server.stdout.lines;
    const offset = { read: 0, wrote: 0 };
    for (const [i, line] of lines.entries()) {
      const m = /^tcp #1 (read|wrote) (\d+) bytes$/.exec(line);
      if (!m) continue;
      const what = m[1] as "read" | "wrote";
      const n = Number(m[2]);
      const bytes = payload.subarray(offset[what], offset[what] + n);
      const dump = lines.slice(i + 1, i + 1 + Math.ceil(n / 16));
      assert.deepEqual(dump, await xxd(bytes), `${line} at ${offset[what]}`);
      offset[what] += n;
    }
    assert.equal(offset.read, payload.length, "the reads cover the payload");
    assert.equal(offset.wrote, payload.length, "the writes cover it too");
  },
});

Deno.test("without --trace there is no trace line and no dump", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const payload = randomBytes(100_000);
  await echoThrough(server.port, payload);
  await server.waitForLine(/^tcp close .*\(#1\) in 100000 bytes/);
  const traceLike = server.stdout.lines.filter((l) =>
    /^tcp #\d+ (read|wrote) /.test(l) || /^[0-9a-f]{8}: /.test(l)
  );
  assert.deepEqual(traceLike, []);
});

Deno.test("stdout never read after the listening line: 1 MiB under --hex (9 MB of log) and 400 clients are echoed exactly, and SIGTERM still exits 0", async () => {
  // The pipe holds 64 KiB: a server that waited for its stdout would stop
  // serving a few hundred trace lines in, and never see the SIGTERM.
  await using server = await startUnread("server.ts", [
    "--port",
    "0",
    "--hex",
  ]);
  const stalled = () => "no echo within 30 s: the server waits for its stdout";
  const payload = randomBytes(1024 * 1024);
  const echoed = await withTimeout(
    echoThrough(server.port, payload),
    30_000,
    stalled,
  );
  assert.equal(await sha256(echoed), await sha256(payload));
  for (let batch = 0; batch < 10; batch++) {
    await withTimeout(
      Promise.all(Array.from({ length: 40 }, async (_, i) => {
        const word = new TextEncoder().encode(`client ${batch}.${i}`);
        assert.deepEqual(await echoThrough(server.port, word), word);
      })),
      30_000,
      stalled,
    );
  }
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr.text());
  assert.match(
    server.stderr.text(),
    /^warning: stdout is not being read; dropping log lines$/m,
  );
  assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
});

Deno.test("the longest --grace accepted is honoured (a longer timer would fire at once): after SIGTERM an open connection still echoes", async () => {
  // The largest value, as the usage error names it.
  const refused = await runScript("server.ts", ["--grace", "99999999"]);
  const longest = /from 0 to (\d+) /.exec(refused.stderr)?.[1];
  assert.ok(longest, refused.stderr);
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--grace",
    longest,
    "--idle-timeout",
    longest,
  ]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await server.waitForLine(/\(#1, 1 open\)$/);
  server.child.kill("SIGTERM");
  await server.waitForLine(
    new RegExp(`^tcp stopping: 1 open, up to ${longest} s`),
  );
  await writeAll(conn, new TextEncoder().encode("still open"));
  assert.equal(
    new TextDecoder().decode(await readExactly(conn, 10)),
    "still open",
  );
  await conn.closeWrite();
  assert.equal((await readAll(conn)).length, 0);
  // The last connection gone, the server ends on its own: wait for that
  // (a second SIGTERM would force it, exit 143).
  const status = await server.exited();
  assert.equal(status.code, 0, server.stderr.text());
  assert.match(server.stdout.lines.at(-1) ?? "", /^tcp server stopped: 1 /);
});
