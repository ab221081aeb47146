/**
 * TCP in time, with the scripts run as the README runs them: client.ts
 * --rounds (bytes exact, one stderr line), server.ts --lines (held until a
 * newline), Nagle's algorithm against --nodelay (a wide margin only: the
 * ratio is measured in tests/stress/timing_test.ts), --nodelay and
 * --keepalive as the kernel holds them on each script's very socket, FIN
 * against RST when a socket is closed with bytes unread, and which side of
 * each script closes first (that side's pair keeps TIME_WAIT).
 */
import assert from "node:assert/strict";
import { startHttp } from "./lib/http.ts";
import { readAll, readExactly, writeAll } from "./lib/net.ts";
import {
  type Child,
  commandFor,
  type RunningScript,
  runScript,
  spawnChild,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import { roundsOf } from "./lib/rounds.ts";
import { waitUntil } from "./lib/time.ts";
import { hasPython3, runTool } from "./lib/tools.ts";

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };

const encode = (text: string) => new TextEncoder().encode(text);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const HOST = "127.0.0.1";

/** client.ts's `--rounds` line on stderr; groups: K, bytes, three ms. */
/** The client's port in server.ts's or http.ts's log line for #`id`. */
async function clientPort(server: RunningScript, id = 1): Promise<number> {
  const line = await server.waitForLine(
    new RegExp(`remote ${HOST.replaceAll(".", "\\.")}:\\d+ \\(#${id}\\b`),
  );
  return Number(/ remote [\d.]+:(\d+) /.exec(line)![1]);
}

/**
 * client.ts in netcat mode, its stdin left open: it holds one quiet
 * connection until the test ends (`await using`).
 */
function holdOpen(args: string[]): Child {
  const command = commandFor("client.ts", args, {}, { stdin: "piped" });
  return spawnChild(command, `client.ts ${args.join(" ")}`, { stdin: true });
}

/** `ss` lines for the TCP connection(s) from `local` to `peer` port. */
async function ss(
  flags: string,
  state: string,
  local: number,
  peer: number,
): Promise<string> {
  const r = await runTool("ss", [
    flags,
    "state",
    state,
    `sport = :${local}`,
    `dport = :${peer}`,
  ]);
  assert.equal(r.code, 0, `ss failed: ${r.err}`);
  return r.out.trim();
}

// The kernel keeps TCP_NODELAY in the socket, not in /proc or ss. Python
// copies a descriptor out of the script (pidfd_getfd, Linux 5.6) and asks
// getsockopt() on that very socket.
const SOCKOPTS_PY = `import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, peer = int(sys.argv[1]), int(sys.argv[2])
pidfd = os.pidfd_open(pid)
for name in os.listdir(f"/proc/{pid}/fd"):
    try:
        if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"): continue
    except OSError: continue
    fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
    if fd < 0: sys.exit("pidfd_getfd: " + os.strerror(ctypes.get_errno()))
    s = socket.socket(fileno=fd)
    try:
        if s.family == socket.AF_INET and s.type == socket.SOCK_STREAM and s.getpeername()[1] == peer:
            print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
    except OSError: pass
    finally: s.close()  # our copy only: the script's socket stays open
`;

/** TCP_NODELAY and SO_KEEPALIVE of process `pid`'s socket to port `peer`. */
async function sockopts(pid: number, peer: number): Promise<string> {
  const r = await runTool("python3", ["-c", SOCKOPTS_PY, `${pid}`, `${peer}`]);
  assert.equal(r.code, 0, `python3 getsockopt failed: ${r.err}`);
  const [nodelay, keepalive] = r.out.trim().split(" ");
  return `TCP_NODELAY ${nodelay}, SO_KEEPALIVE ${keepalive}`;
}

Deno.test({
  name:
    "client.ts --rounds 3 sends MESSAGE three times on one connection, each once its echo is back: stdout is the three echoes byte for byte, stderr one line with the median round trip",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("server.ts", ["--port", "0"]);
    const args = ["--port", `${server.port}`, "--rounds", "3", "héllo"];
    const r = await runScript("client.ts", args);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "héllo".repeat(3));
    const t = roundsOf(r.stderr);
    assert.deepEqual([t.count, t.bytes], [3, 6]); // é is two bytes of UTF-8
    assert.ok(t.fastest <= t.median && t.median <= t.slowest, r.stderr);
    // One connection, 18 bytes each way, ended by client.ts's FIN.
    await server.waitForLine(/ \(#1\) in 18 bytes, out 18 bytes$/);
    assert.ok(!server.stdout.text().includes("(#2"), server.stdout.text());
  },
});

Deno.test({
  name:
    "client.ts --rounds: 0 or no MESSAGE is a usage error (exit 2); a server that closes before answering is one error: line naming the round (exit 1)",
  ...SANITIZE,
  async fn() {
    const zero = await runScript("client.ts", ["--rounds", "0", "x"]);
    assert.equal(zero.code, 2);
    assert.match(
      zero.stderr,
      /^error: --rounds must be a whole number from 1 to 100000, not "0"$/m,
    );
    const none = await runScript("client.ts", ["--rounds", "3"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^error: --rounds sends MESSAGE again/m);
    // A server that takes the first message and closes without a word.
    using listener = Deno.listen({ hostname: HOST, port: 0 });
    const { port } = listener.addr;
    const served = (async () => {
      using conn = await listener.accept();
      await readExactly(conn, 3);
    })();
    const r = await runScript("client.ts", [
      "--port",
      `${port}`,
      "--rounds",
      "3",
      "abc",
    ]);
    await served;
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `error: tcp ${HOST}:${port} closed the connection in round 1 of 3, after 0 of the 3 bytes awaited\n`,
    );
  },
});

Deno.test({
  name:
    "server.ts --lines holds the bytes until they end in a newline, then echoes them in one write; at the client's end an unfinished line comes back too",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("server.ts", [
      "--port",
      "0",
      "--lines",
      "--trace",
    ]);
    using conn = await Deno.connect({ hostname: HOST, port: server.port });
    await writeAll(conn, encode("hel"));
    await server.waitForLine(/^tcp #1 read 3 bytes$/);
    await writeAll(conn, encode("lo\n"));
    assert.equal(decode(await readExactly(conn, 6)), "hello\n");
    await writeAll(conn, encode("bye"));
    await conn.closeWrite();
    assert.equal(decode(await readAll(conn)), "bye");
    await server.waitForLine(/ \(#1\) in 9 bytes, out 9 bytes$/);
    assert.deepEqual(
      server.stdout.lines.filter((l) => l.startsWith("tcp #1 ")),
      [
        "tcp #1 read 3 bytes", // "hel": held, no write
        "tcp #1 read 3 bytes", // "lo\n": the line is whole
        "tcp #1 wrote 6 bytes",
        "tcp #1 read 3 bytes", // "bye", then the end
        "tcp #1 wrote 3 bytes",
      ],
    );
  },
});

Deno.test({
  name:
    "client.ts --nodelay: a line written in two pieces to server.ts --lines comes back in under 20 ms a round (median of 10; with Nagle on, each waits for a 40 ms delayed ACK: tests/stress/timing_test.ts measures both)",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("server.ts", [
      "--port",
      "0",
      "--lines",
      "--quiet",
    ]);
    const message = "hello world\n";
    const r = await runScript("client.ts", [
      "--port",
      `${server.port}`,
      "--rounds",
      "10",
      "--chunk",
      "6",
      "--nodelay",
      message,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, message.repeat(10));
    const t = roundsOf(r.stderr);
    assert.ok(t.median < 20, `with --nodelay: ${r.stderr}`);
  },
});

Deno.test({
  name:
    "--nodelay and --keepalive reach the kernel: ss shows the keepalive timer armed on the idle sockets of client.ts --keepalive and server.ts --keepalive only; getsockopt on each script's very socket reads TCP_NODELAY and SO_KEEPALIVE 1 with the flags, 0 without" +
    (hasPython3() ? "" : " (getsockopt skipped: no python3)"),
  ...SANITIZE,
  async fn() {
    await using plain = await startScript("server.ts", ["--port", "0"]);
    await using tuned = await startScript("server.ts", [
      "--port",
      "0",
      "--nodelay",
      "--keepalive",
    ]);
    // A tuned client on the plain server, a plain client on the tuned one.
    const both = ["--nodelay", "--keepalive"];
    await using tunedClient = holdOpen(["--port", `${plain.port}`, ...both]);
    await using plainClient = holdOpen(["--port", `${tuned.port}`]);
    const [tc, pc] = [await clientPort(plain), await clientPort(tuned)];
    // Idle and ESTABLISHED: only a keepalive socket has a timer running,
    // 2 h (net.ipv4.tcp_keepalive_time) before the first probe.
    const timer = /timer:\(keepalive,\d+min,0\)/;
    assert.match(await ss("-tnoH", "established", tc, plain.port), timer);
    assert.match(await ss("-tnoH", "established", tuned.port, pc), timer);
    const idle = await ss("-tnoH", "established", plain.port, tc);
    assert.ok(idle && !idle.includes("timer:"), idle);
    const other = await ss("-tnoH", "established", pc, tuned.port);
    assert.ok(other && !other.includes("timer:"), other);
    if (!hasPython3()) return;
    const on = "TCP_NODELAY 1, SO_KEEPALIVE 1";
    const off = "TCP_NODELAY 0, SO_KEEPALIVE 0";
    assert.equal(await sockopts(tunedClient.pid, plain.port), on);
    assert.equal(await sockopts(tuned.pid, pc), on);
    assert.equal(await sockopts(plainClient.pid, tuned.port), off);
    assert.equal(await sockopts(plain.pid, tc), off);
  },
});

Deno.test({
  name:
    "FIN or RST: server.ts's idle timeout closes a client with nothing unread by a FIN (its read returns null, the end) and one whose bytes it could not read by a RST (the client's blocked write fails ConnectionReset; the echo that had arrived stays readable)",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("server.ts", [
      "--port",
      "0",
      "--idle-timeout",
      "0.5",
    ]);
    using polite = await Deno.connect({ hostname: HOST, port: server.port });
    await writeAll(polite, encode("hello"));
    assert.equal(decode(await readExactly(polite, 5)), "hello");
    // Writes, never reads: the echo fills our receive buffer, then the
    // server's send buffer; server.ts stops reading and our bytes wait
    // unread in its kernel, until nothing moves and it closes us.
    using flooder = await Deno.connect({ hostname: HOST, port: server.port });
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    const flood = (async () => {
      while (true) sent += await flooder.write(chunk);
    })();
    await withTimeout(
      assert.rejects(flood, Deno.errors.ConnectionReset),
      10_000,
      () => `the flooder's write was not reset (${sent} bytes sent)`,
    );
    assert.ok(sent > 1_000_000, `${sent} bytes sent before the reset`);
    const buf = new Uint8Array(64 * 1024);
    assert.ok((await flooder.read(buf) ?? 0) > 0, "the echo that arrived");
    assert.equal(
      await withTimeout(polite.read(buf), 10_000, () => "no FIN"),
      null,
    );
    await server.waitForLine(
      / \(#1\) in 5 bytes, out 5 bytes: idle for 0.5 s$/,
    );
    await server.waitForLine(/ \(#2\) in \d{7,} bytes, .*: idle for 0.5 s$/);
  },
});

Deno.test({
  name:
    "http.ts closes politely: a 20 KiB head gets 431 before the rest is read, then http.ts's FIN and no RST: it reads on and discards (the lingering close), takes the client's next bytes, and the pair ends in TIME_WAIT, as FINs end it",
  ...SANITIZE,
  async fn() {
    await using server = await startHttp();
    using conn = await Deno.connect({ hostname: HOST, port: server.port });
    const start = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    const head = start + "a".repeat(20_480 - start.length - 4) + "\r\n\r\n";
    await writeAll(conn, encode(head)); // http.ts reads 8 KiB of it, answers
    const reply = decode(await readAll(conn)); // up to its FIN
    assert.match(reply, /^HTTP\/1\.1 431 /);
    // Had it closed with our 12 KiB unread, its kernel would have sent RST:
    // writing now would fail (broken pipe), and a reset pair leaves no
    // TIME_WAIT. After a FIN alone, http.ts reads these bytes too.
    await writeAll(conn, encode("more"));
    await conn.closeWrite();
    await server.waitForLine(/ \(#1\) 431 .*, in 20484 bytes, /);
    const pair = [server.port, conn.localAddr.port] as const;
    await waitUntil(
      async () => (await ss("-tnH", "time-wait", ...pair)) !== "",
      10_000,
      () => "no TIME_WAIT on http.ts's pair: was it reset?",
    );
  },
});

Deno.test({
  name:
    "who closes first keeps TIME_WAIT: client.ts sends its FIN before server.ts (client.ts's pair waits), http.ts sends its FIN right after the reply (http.ts's pair waits)",
  ...SANITIZE,
  async fn() {
    const waiting = (local: number, peer: number) => async () =>
      (await ss("-tnH", "time-wait", local, peer)) !== "";
    await using echo = await startScript("server.ts", ["--port", "0"]);
    const r = await runScript("client.ts", ["--port", `${echo.port}`, "hi"]);
    assert.equal(r.code, 0, r.stderr);
    const c = await clientPort(echo);
    await echo.waitForLine(/ \(#1\) in 2 bytes, out 2 bytes$/);
    await waitUntil(waiting(c, echo.port), 10_000, () => "no TIME_WAIT");
    assert.ok(!await waiting(echo.port, c)(), "server.ts's pair waits too");

    await using http = await startHttp();
    const conn = await Deno.connect({ hostname: HOST, port: http.port });
    const h = conn.localAddr.port;
    try {
      await writeAll(conn, encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      // The end arrives while our socket is still open: http.ts went first.
      const reply = await withTimeout(readAll(conn), 10_000, () => "no FIN");
      assert.match(decode(reply), /^HTTP\/1\.1 200 OK/);
    } finally {
      conn.close();
    }
    await waitUntil(waiting(http.port, h), 10_000, () => "no TIME_WAIT");
    assert.ok(!await waiting(h, http.port)(), "our pair waits too");
  },
});
