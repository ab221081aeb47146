/**
 * udp.ts: the UDP echo server and the one-datagram sender, driven as a user
 * drives them (spawned with `deno run --allow-net --unstable-net udp.ts`)
 * and, where that is clearer, in-process through its exported functions.
 */
import assert from "node:assert/strict";
import { concat, randomBytes, sha256 } from "./lib/bytes.ts";
import { hasIpv6Loopback, readAll, writeAll } from "./lib/net.ts";
import {
  hasStackTrace,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import {
  formatAddr,
  listenUdp,
  MAX_UDP_PAYLOAD_IPV4,
  parseUdpArgs,
  RECEIVE_BUFFER_SIZE,
  sendDatagram,
  serveUdp,
  UsageError,
} from "../udp.ts";

const IPV6 = hasIpv6Loopback();
/** How long a test waits for a datagram before calling it lost. */
const REPLY_WAIT_MS = 10_000;

/** A client socket on loopback; the OS picks the port. Close it yourself. */
function clientSocket(hostname = "127.0.0.1"): Deno.DatagramConn {
  return Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
}

function udpAddr(hostname: string, port: number): Deno.NetAddr {
  return { transport: "udp", hostname, port };
}

/** The next datagram on `socket` (a copy), or a failed test after a while. */
async function receiveOne(
  socket: Deno.DatagramConn,
  buffer = new Uint8Array(RECEIVE_BUFFER_SIZE),
): Promise<[Uint8Array<ArrayBuffer>, Deno.NetAddr]> {
  const [data, from] = await withTimeout(
    socket.receive(buffer),
    REPLY_WAIT_MS,
    () => `no datagram within ${REPLY_WAIT_MS} ms`,
  );
  return [data.slice(), from as Deno.NetAddr];
}

// --- command line -----------------------------------------------------------

Deno.test("udp.ts --help prints the usage on stdout and exits 0", async () => {
  const r = await runScript("udp.ts", ["--help"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.out, /udp\.ts send/);
  assert.match(r.out, /--timeout MS/);
  assert.equal(r.stderr, "");
});

Deno.test("udp.ts bad flags and a bad subcommand exit 2 with error, blank line, usage on stderr", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /unknown flag "--bogus"/],
    [["--port", "70000"], /--port/],
    [["--port=-1"], /--port/],
    [["--port", "abc"], /--port/],
    [["--port"], /--port needs a value/],
    [["send", "--timeout", "0", "x"], /--timeout/],
    [["send"], /MESSAGE/],
    [["listen"], /unknown subcommand "listen"/],
  ];
  for (const [args, reason] of cases) {
    const r = await runScript("udp.ts", args);
    const what = `udp.ts ${args.join(" ")}`;
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.equal(r.out, "", `${what} printed on stdout (bound something?)`);
    const [first, blank, ...usage] = r.stderr.split("\n");
    assert.match(first, /^error: /, what);
    assert.match(first, reason, what);
    assert.equal(blank, "", what);
    assert.match(usage.join("\n"), /udp\.ts send/, what);
    assert.ok(!hasStackTrace(r.stderr), what);
  }
});

Deno.test("parseUdpArgs accepts --port N and --port=N, bracketed IPv6, and words as MESSAGE", () => {
  assert.deepEqual(
    parseUdpArgs(["send", "--port=9000", "--hostname", "[::1]", "a", "b"]),
    {
      command: "send",
      hostname: "::1",
      port: 9000,
      timeoutMs: 2000,
      quiet: false,
      message: "a b",
    },
  );
  assert.equal(parseUdpArgs(["--port", "9000"]).port, 9000);
  assert.equal(parseUdpArgs([]).command, "serve");
  assert.equal(parseUdpArgs(["send", ""]).message, "");
  assert.equal(parseUdpArgs(["send", "--", "--help"]).message, "--help");
  assert.throws(() => parseUdpArgs(["serve", "--timeout", "5"]), UsageError);
});

Deno.test("udp.ts without --unstable-net says which flag is missing, exit 1, no stack trace", async () => {
  // --no-config: otherwise deno.json's "unstable": ["net"] turns it on.
  const r = await runScript("udp.ts", ["--port", "0"], {
    denoFlags: ["--no-config", "--allow-net"],
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: .*--unstable-net/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.ok(!hasStackTrace(r.stderr));
});

Deno.test("udp.ts without the needed --allow-net grant names the grant, exit 1", async () => {
  const r = await runScript("udp.ts", [
    "--hostname",
    "127.0.0.1",
    "--port",
    "0",
  ], {
    denoFlags: ["--allow-net=localhost", "--unstable-net"],
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^error: .*udp 127\.0\.0\.1:0.*--allow-net=127\.0\.0\.1/,
  );
  assert.ok(!hasStackTrace(r.stderr));
});

Deno.test("udp.ts with a name that does not resolve fails with a one-line error, exit 1", async () => {
  const r = await runScript("udp.ts", [
    "--hostname",
    "no-such-host.invalid",
    "--port",
    "0",
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: .*udp.*no-such-host\.invalid/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.ok(!hasStackTrace(r.stderr));
});

// --- listening line and log lines --------------------------------------------

Deno.test("udp.ts prints 'udp listening on 127.0.0.1:PORT' first, with the real port for --port 0", async () => {
  await using server = await startScript("udp.ts", ["--port=0"]);
  assert.match(server.stdout.lines[0], /^udp listening on 127\.0\.0\.1:\d+$/);
  assert.ok(server.port > 0);
  // The port really is a UDP port now: a second bind on it fails.
  assert.throws(
    () =>
      Deno.listenDatagram({
        transport: "udp",
        hostname: "127.0.0.1",
        port: server.port,
      }),
    Deno.errors.AddrInUse,
  );
});

for (const host of ["::1", "[::1]"]) {
  Deno.test({
    name:
      `udp.ts --hostname ${host} prints 'udp listening on [::1]:PORT' and echoes over IPv6` +
      (IPV6 ? "" : " (skipped: this machine has no IPv6 loopback ::1)"),
    ignore: !IPV6,
    fn: async () => {
      await using server = await startScript("udp.ts", [
        "--hostname",
        host,
        "--port",
        "0",
      ]);
      assert.match(server.stdout.lines[0], /^udp listening on \[::1\]:\d+$/);
      const { reply, remote } = await sendDatagram(
        "::1",
        server.port,
        new Uint8Array([6]),
        5000,
      );
      assert.deepEqual(reply, new Uint8Array([6]));
      assert.equal(formatAddr(remote), `[::1]:${server.port}`);
    },
  });
}

Deno.test("udp.ts logs one line per datagram naming local and remote address:port and the size", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const socket = clientSocket();
  try {
    const me = socket.addr as Deno.NetAddr;
    await socket.send(
      new TextEncoder().encode("hello, udp!!"),
      udpAddr("127.0.0.1", server.port),
    );
    await receiveOne(socket);
    const line = await server.waitForLine(/^udp datagram /);
    assert.equal(
      line,
      `udp datagram local 127.0.0.1:${server.port} remote 127.0.0.1:${me.port} 12 bytes`,
    );
  } finally {
    socket.close();
  }
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`udp.ts stops on ${signal} with a summary line and exit 0`, async () => {
    await using server = await startScript("udp.ts", ["--port", "0"]);
    const socket = clientSocket();
    try {
      await socket.send(new Uint8Array(5), udpAddr("127.0.0.1", server.port));
      await receiveOne(socket);
    } finally {
      socket.close();
    }
    const status = await server.stop(signal);
    assert.equal(status.code, 0, server.stderr.text());
    assert.equal(
      server.stdout.lines.at(-1),
      "udp server stopped: 1 datagrams, 5 bytes in, 5 bytes out",
    );
    assert.equal(server.stderr.text(), "");
  });
}

// --- echo -------------------------------------------------------------------

Deno.test("udp.ts echoes random payloads of 0 B, 1 B, 1,400 B and 65,507 B: one datagram back, equal to the one sent", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const socket = clientSocket();
  const to = udpAddr("127.0.0.1", server.port);
  try {
    const sizes = [0, 1, 1400, MAX_UDP_PAYLOAD_IPV4];
    for (const size of sizes) {
      const payload = randomBytes(size);
      assert.equal(await socket.send(payload, to), size);
      const [reply, from] = await receiveOne(socket);
      assert.equal(reply.length, size, `reply to a ${size} B datagram`);
      assert.equal(
        await sha256(reply),
        await sha256(payload),
        `${size} B payload`,
      );
      assert.equal(from.port, server.port);
    }
    // Exactly one reply each: a marker sent now is answered next, so no
    // extra datagram was queued behind the replies above.
    const marker = randomBytes(7);
    await socket.send(marker, to);
    const [next] = await receiveOne(socket);
    assert.deepEqual(next, marker);
    await server.waitForLine(/ 7 bytes$/);
    const logged = server.stdout.lines.filter((l) =>
      l.startsWith("udp datagram ")
    );
    assert.deepEqual(logged.map((l) => Number(/ (\d+) bytes$/.exec(l)?.[1])), [
      ...sizes,
      7,
    ]);
  } finally {
    socket.close();
  }
});

Deno.test({
  name:
    "udp.ts echoes a 65,527 B datagram over IPv6 intact (bigger than Deno's default 65,507 B receive buffer)" +
    (IPV6 ? "" : " (skipped: no IPv6 loopback ::1)"),
  ignore: !IPV6,
  fn: async () => {
    await using server = await startScript("udp.ts", [
      "--hostname",
      "::1",
      "--port",
      "0",
    ]);
    const payload = randomBytes(65_527);
    const { reply } = await sendDatagram("::1", server.port, payload, 5000);
    assert.equal(reply.length, payload.length);
    assert.equal(await sha256(reply), await sha256(payload));
  },
});

Deno.test({
  name:
    "Deno's receive() silently cuts a datagram bigger than the buffer it is given (why udp.ts uses 64 KiB)",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const a = clientSocket();
    const b = clientSocket();
    try {
      const payload = randomBytes(100);
      await b.send(payload, a.addr);
      const [data] = await a.receive(new Uint8Array(10));
      assert.equal(
        data.length,
        10,
        "the other 90 bytes are gone, with no error or flag",
      );
      assert.deepEqual(data, payload.subarray(0, 10));
    } finally {
      a.close();
      b.close();
    }
  },
});

Deno.test({
  name:
    "serveUdp and sendDatagram in-process: 0 B and 65,507 B round trips, stats, stop by AbortSignal",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const socket = listenUdp({ hostname: "127.0.0.1", port: 0 });
    const { port } = socket.addr as Deno.NetAddr;
    const lines: string[] = [];
    const stop = new AbortController();
    const served = serveUdp(socket, {
      signal: stop.signal,
      log: (l) => lines.push(l),
    });
    try {
      const empty = await sendDatagram(
        "127.0.0.1",
        port,
        new Uint8Array(0),
        5000,
      );
      assert.equal(empty.reply.length, 0);
      assert.equal(empty.remote.port, port);
      const big = randomBytes(MAX_UDP_PAYLOAD_IPV4);
      const full = await sendDatagram("127.0.0.1", port, big, 5000);
      assert.equal(await sha256(full.reply), await sha256(big));
      assert.equal(
        lines[1],
        `udp datagram local 127.0.0.1:${port} remote 127.0.0.1:${full.local.port} 65507 bytes`,
      );
    } finally {
      stop.abort();
    }
    assert.deepEqual(await served, {
      datagrams: 2,
      bytesIn: MAX_UDP_PAYLOAD_IPV4,
      bytesOut: MAX_UDP_PAYLOAD_IPV4,
    });
    assert.equal(lines.length, 2);
  },
});

Deno.test({
  name:
    "sendDatagram ignores a datagram from another address and takes the reply from where it sent",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    // A fake server: before answering, a stranger writes to the client.
    const server = clientSocket();
    const stranger = clientSocket();
    try {
      const { port } = server.addr as Deno.NetAddr;
      const pending = sendDatagram(
        "127.0.0.1",
        port,
        new TextEncoder().encode("ping"),
        5000,
      );
      const [request, client] = await receiveOne(server);
      await stranger.send(new TextEncoder().encode("spoof"), client);
      await server.send(request, client);
      const { reply, remote } = await pending;
      assert.equal(new TextDecoder().decode(reply), "ping");
      assert.equal(remote.port, port);
    } finally {
      server.close();
      stranger.close();
    }
  },
});

// --- message boundaries: UDP keeps them, TCP does not --------------------------

Deno.test("five datagrams sent back to back come back as five datagrams, each whole", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const socket = clientSocket();
  const to = udpAddr("127.0.0.1", server.port);
  try {
    const sent = [5, 6, 7, 8, 9].map((n) => randomBytes(n));
    for (const d of sent) await socket.send(d, to);
    const got: Uint8Array<ArrayBuffer>[] = [];
    for (let i = 0; i < sent.length; i++) {
      got.push((await receiveOne(socket))[0]);
    }
    // UDP may reorder in general, so compare as sets; each reply is one
    // whole datagram: same bytes, never merged with another, never split.
    const hex = (b: Uint8Array) => Array.from(b).join(",");
    assert.deepEqual(got.map(hex).sort(), sent.map(hex).sort());
    await server.waitForLine(/ 9 bytes$/);
    const sizes = server.stdout.lines
      .filter((l) => l.startsWith("udp datagram "))
      .map((l) => Number(/ (\d+) bytes$/.exec(l)?.[1]));
    assert.deepEqual(sizes.sort(), [5, 6, 7, 8, 9]);
  } finally {
    socket.close();
  }
});

Deno.test("TCP contrast: five writes to server.ts are one byte stream; waiting data comes out in one read", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const sent = [5, 6, 7, 8, 9].map((n) => randomBytes(n));
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  for (const d of sent) await writeAll(conn, d);
  await conn.closeWrite();
  // No reading until the server has echoed everything and closed: then all
  // the bytes wait in our socket, and a read takes whatever is there. The
  // five writes left no boundaries behind.
  await server.waitForLine(/^tcp close .* in 35 bytes, out 35 bytes/);
  const buffer = new Uint8Array(64 * 1024);
  const first = await conn.read(buffer);
  assert.equal(first, 35, "the five echoed writes arrived as one read");
  const rest = await readAll(conn);
  assert.equal(rest.length, 0);
  assert.equal(await sha256(buffer.slice(0, 35)), await sha256(concat(sent)));
});

// --- one socket per port and protocol ----------------------------------------

Deno.test("a second udp.ts on the same port fails with exit 1 and a clear error", async () => {
  await using first = await startScript("udp.ts", ["--port", "0"]);
  const r = await runScript("udp.ts", ["--port", String(first.port)]);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.out, "");
  assert.match(
    r.stderr,
    new RegExp(
      `^error: udp 127\\.0\\.0\\.1:${first.port} is already in use.*--port`,
    ),
  );
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.ok(!hasStackTrace(r.stderr));
});

// --- send, and silence -------------------------------------------------------

Deno.test("udp.ts send prints the reply payload and exits 0; '' sends an empty datagram", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const r = await runScript("udp.ts", [
    "send",
    "--port",
    String(server.port),
    "hello",
    "udp",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "hello udp");
  const empty = await runScript("udp.ts", [
    "send",
    `--port=${server.port}`,
    "",
  ]);
  assert.equal(empty.code, 0, empty.stderr);
  assert.equal(empty.out, "");
  await server.waitForLine(/ 0 bytes$/);
});

/** A UDP port with nothing bound to it right now (bound, then closed). */
function freeUdpPort(): number {
  const s = clientSocket();
  const { port } = s.addr as Deno.NetAddr;
  s.close();
  return port;
}

Deno.test("udp.ts send to a port where nothing listens exits 1 with 'no reply' (silence, or ICMP refused)", async () => {
  const port = freeUdpPort();
  const timeout = 500;
  const started = performance.now();
  const r = await runScript("udp.ts", [
    "send",
    "--port",
    String(port),
    "--timeout",
    String(timeout),
    "hi",
  ]);
  const elapsed = performance.now() - started;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr,
    `error: no reply from udp 127.0.0.1:${port} within ${timeout} ms\n`,
  );
  assert.equal(r.out, "");
  // The margin covers starting Deno on a busy machine; the point is that
  // send gives up instead of waiting forever.
  assert.ok(elapsed < timeout + 15_000, `took ${Math.round(elapsed)} ms`);
});

Deno.test("udp.ts send to a socket that never replies exits 1 with 'no reply'; the datagram did arrive", async () => {
  const silent = clientSocket();
  try {
    const { port } = silent.addr as Deno.NetAddr;
    const r = await runScript("udp.ts", [
      "send",
      "--port",
      String(port),
      "--timeout",
      "500",
      "anyone?",
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `error: no reply from udp 127.0.0.1:${port} within 500 ms\n`,
    );
    const [got] = await receiveOne(silent);
    assert.equal(new TextDecoder().decode(got), "anyone?");
  } finally {
    silent.close();
  }
});

Deno.test({
  name:
    "sendDatagram gives up after its timeout (plus a small margin) when nothing answers",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const silent = clientSocket();
    const { port } = silent.addr as Deno.NetAddr;
    try {
      for (const target of [port, freeUdpPort()]) {
        const started = performance.now();
        await assert.rejects(
          sendDatagram("127.0.0.1", target, new Uint8Array([1]), 300),
          { message: `no reply from udp 127.0.0.1:${target} within 300 ms` },
        );
        const elapsed = performance.now() - started;
        assert.ok(
          elapsed < 300 + 3000,
          `gave up after ${Math.round(elapsed)} ms`,
        );
      }
    } finally {
      silent.close();
    }
  },
});

// --- volume -------------------------------------------------------------------

Deno.test("1,000 datagrams in sequence on loopback: none lost", async () => {
  await using server = await startScript("udp.ts", ["--port", "0", "--quiet"]);
  const socket = clientSocket();
  const to = udpAddr("127.0.0.1", server.port);
  const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  const view = new DataView(new ArrayBuffer(64));
  const payload = new Uint8Array(view.buffer);
  let sent = 0;
  let answered = 0;
  try {
    for (let i = 0; i < 1000; i++) {
      view.setUint32(0, i);
      await socket.send(payload, to);
      sent++;
      // A lost datagram shows up as a reply that never comes.
      const got = await receiveOne(socket, buffer).catch(() => null);
      if (got === null) break;
      const [reply] = got;
      assert.equal(reply.length, 64);
      assert.equal(
        new DataView(reply.buffer).getUint32(0),
        i,
        `reply ${i} out of step`,
      );
      answered++;
    }
  } finally {
    socket.close();
  }
  console.log(`${sent} datagrams sent in sequence, ${answered} echoed back`);
  assert.equal(answered, 1000, `lost after ${answered} of ${sent}`);
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0);
  // --quiet: no per-datagram lines, only the listening line and the summary.
  assert.deepEqual(server.stdout.lines.slice(1), [
    "udp server stopped: 1000 datagrams, 64000 bytes in, 64000 bytes out",
  ]);
});

Deno.test("udp.ts bound by name (localhost) under --allow-net=localhost says which grant its replies need, and keeps serving", async () => {
  await using server = await startScript("udp.ts", [
    "--hostname",
    "localhost",
    "--port",
    "0",
  ], {
    denoFlags: ["--allow-net=localhost", "--unstable-net"],
  });
  const socket = clientSocket();
  try {
    for (let i = 0; i < 2; i++) {
      await socket.send(
        new TextEncoder().encode("hi"),
        udpAddr("127.0.0.1", server.port),
      );
      const line = await withTimeout(
        server.stderr.waitFor(/^warning: udp reply to /, i),
        REPLY_WAIT_MS,
        () => `no warning line; stderr: ${server.stderr.text()}`,
      );
      assert.match(
        line,
        /^warning: udp reply to 127\.0\.0\.1:\d+ failed: Deno has no permission to send to udp 127\.0\.0\.1:\d+ .*run with --allow-net=127\.0\.0\.1$/,
      );
    }
  } finally {
    socket.close();
  }
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0);
  assert.match(
    server.stdout.text(),
    /udp server stopped: 2 datagrams, 4 bytes in, 0 bytes out/,
  );
  assert.ok(!hasStackTrace(server.stderr.text()));
});
