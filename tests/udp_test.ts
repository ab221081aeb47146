/**
 * udp.ts: the UDP echo server and the sender, driven as a user drives them
 * (spawned with `deno run --allow-net --unstable-net udp.ts`) and, where
 * that is clearer, in-process through its exported functions.
 *
 * The load tests (1,000 datagrams in sequence, the flood, many loops at
 * once) are in tests/stress/udp_test.ts.
 */
import assert from "node:assert/strict";
import { concat, randomBytes, sha256 } from "./lib/bytes.ts";
import { hasIpv6Loopback, readAll, writeAll } from "./lib/net.ts";
import { needsNetns, offline } from "./lib/netns.ts";
import {
  CHILD_ENV,
  commandFor,
  hasStackTrace,
  OutputCollector,
  ROOT,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import {
  EchoLoopGuard,
  formatAddr,
  listenUdp,
  LOOP_FORGET_MS,
  LOOP_MUTE_MS,
  LOOP_PROBE_MS,
  LOOP_RETURNS,
  LOOP_WINDOW_MS,
  loopbackLine,
  MAX_UDP_PAYLOAD_IPV4,
  parseUdpArgs,
  RECEIVE_BUFFER_SIZE,
  sendDatagram,
  sendDatagrams,
  serveUdp,
  UsageError,
} from "../udp.ts";
import { delay, waitUntil } from "./lib/time.ts";
import { hasXxd, isRoot, xxd } from "./lib/tools.ts";

const IPV6 = hasIpv6Loopback();
/** How long a test waits for a datagram before calling it lost. */
const REPLY_WAIT_MS = 10_000;
/** Root may bind ports below 1024 and open raw sockets (to forge sources). */
const IS_ROOT = isRoot();
const XXD = hasXxd();

/** A client socket on loopback; the OS picks the port. Close it yourself. */
function clientSocket(hostname = "127.0.0.1", port = 0): Deno.DatagramConn {
  return Deno.listenDatagram({ transport: "udp", hostname, port });
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

/** A UDP port with nothing bound to it right now (bound, then closed). */
function freeUdpPort(): number {
  const s = clientSocket();
  const { port } = s.addr as Deno.NetAddr;
  s.close();
  return port;
}

/** The sizes in the server's per-datagram log lines, in order. */
function loggedSizes(lines: string[]): number[] {
  return lines
    .filter((l) => l.startsWith("udp datagram "))
    .map((l) => Number(/ (\d+) bytes(,|$)/.exec(l)?.[1]));
}

/** `udp server stopped: D datagrams, I bytes in, O bytes out` as numbers. */
function summary(line: string | undefined): number[] {
  const m =
    /^udp server stopped: (\d+) datagrams, (\d+) bytes in, (\d+) bytes out$/
      .exec(line ?? "");
  assert.ok(m, `not a summary line: ${line}`);
  return m.slice(1).map(Number);
}

/** The xxd-layout lines that follow line `index` of `lines`. */
function dumpAfter(lines: string[], index: number): string[] {
  const out: string[] = [];
  for (let i = index + 1; i < lines.length; i++) {
    if (!/^[0-9a-f]{8}: /.test(lines[i])) break;
    out.push(lines[i]);
  }
  return out;
}

// --- command line -----------------------------------------------------------

Deno.test("udp.ts --help prints the usage on stdout and exits 0", async () => {
  const r = await runScript("udp.ts", ["--help"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.out, /udp\.ts send/);
  for (const flag of ["--timeout MS", "--chunk N", "--delay MS", "--trace"]) {
    assert.ok(r.out.includes(flag), `--help shows ${flag}`);
  }
  assert.match(r.out, /--hex/);
  assert.match(r.out, /--trace wins over --quiet/);
  assert.match(r.out, /MESSAGE \(text/);
  assert.equal(r.stderr, "");
});

Deno.test("udp.ts bad flags, bad values and a bad subcommand exit 2 with error, blank line, usage on stderr", async () => {
  const cases: [string[], RegExp][] = [
    // One case of the shared flag parsing (tests/plumbing_test.ts has
    // them all); the rest are udp.ts's own rules.
    [["--bogus"], /unknown flag "--bogus"/],
    [["--chunk", "2"], /--chunk is for send only/],
    [["send", "--timeout", "0", "x"], /--timeout/],
    [["send", "--port", "0", "x"], /--port must be a whole number from 1 /],
    [["send", "--chunk", "0", "x"], /--chunk/],
    [["send", "--delay", "5", "x"], /--delay is for --chunk/],
    [["send", "--quiet", "x"], /--quiet is for serve only/],
    [["serve", "--timeout", "5"], /--timeout is for send only/],
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

Deno.test("parseUdpArgs accepts --port N and --port=N, bracketed IPv6, words as MESSAGE, no MESSAGE as stdin", () => {
  assert.deepEqual(
    parseUdpArgs(["send", "--port=9000", "--hostname", "[::1]", "a", "b"]),
    {
      command: "send",
      hostname: "::1",
      port: 9000,
      timeoutMs: 2000,
      quiet: false,
      trace: false,
      hex: false,
      message: "a b",
      chunk: 0,
      delayMs: 0,
      unix: null,
      join: [],
      ttl: null,
      multicastLoopback: false,
    },
  );
  assert.equal(parseUdpArgs(["--port", "9000"]).port, 9000);
  assert.equal(parseUdpArgs([]).command, "serve");
  assert.equal(parseUdpArgs(["send", ""]).message, "");
  assert.equal(parseUdpArgs(["send"]).message, null);
  assert.equal(parseUdpArgs(["send", "--", "--help"]).message, "--help");
  assert.equal(parseUdpArgs(["--hex"]).trace, true, "--hex implies --trace");
  const chunked = parseUdpArgs(["send", "--chunk", "1", "--delay=20", "hi"]);
  assert.equal(chunked.chunk, 1);
  assert.equal(chunked.delayMs, 20);
  assert.throws(() => parseUdpArgs(["serve", "--timeout", "5"]), UsageError);
});

/** Bad group addresses and multicast flags, and the reason each gives. */
const BAD_GROUPS: [string[], RegExp][] = [
  // A multicast group, but outside 239.255.0.0/16 and ff15::/16.
  [
    ["--hostname", "0.0.0.0", "--join", "239.1.2.3"],
    /"239\.1\.2\.3": a multicast group outside the ranges used here; use a group from 239\.255\.0\.0\/16 or ff15::\/16/,
  ],
  [["--hostname", "0.0.0.0", "--join", "224.0.0.251"], /outside the ranges/],
  [
    ["--hostname", "::", "--join", "ff02::1"],
    /"ff02::1": a multicast group outside/,
  ],
  [
    ["send", "--hostname", "239.0.0.1", "x"],
    /--hostname "239\.0\.0\.1": a multicast group outside/,
  ],
  // Not multicast at all, or not an address.
  [
    ["--hostname", "0.0.0.0", "--join", "198.18.0.1"],
    /"198\.18\.0\.1": not a multicast group address/,
  ],
  [
    ["--hostname", "::", "--join", "2001:2::1"],
    /not a multicast group address/,
  ],
  [
    ["--hostname", "0.0.0.0", "--join", "239.255.0.256"],
    /"239\.255\.0\.256": not an IP address/,
  ],
  [["--hostname", "::", "--join", "ff15::zz"], /"ff15::zz": not an IP address/],
  // --join on a socket that cannot receive the group.
  [
    ["--join", "239.255.0.1"],
    /--join 239\.255\.0\.1 needs --hostname 0\.0\.0\.0 \(the IPv4 wildcard\): a socket bound to 127\.0\.0\.1 receives only/,
  ],
  [
    ["--hostname", "::", "--join", "239.255.0.1"],
    /an IPv4 group: it needs --hostname 0\.0\.0\.0 \(the IPv4 wildcard\), not ::$/,
  ],
  [
    ["--hostname", "0.0.0.0", "--join", "ff15::1"],
    /an IPv6 group: it needs --hostname :: \(the IPv6 wildcard\), not 0\.0\.0\.0$/,
  ],
  [
    ["--hostname", "::", "--join", "ff15::1", "--join", "239.255.0.1"],
    /IPv4 or IPv6 groups, not both/,
  ],
  [["send", "--join", "239.255.0.1", "x"], /--join is for serve only/],
  // --ttl: 0..255, to an IPv4 group only.
  [
    ["send", "--hostname", "239.255.0.1", "--ttl", "256", "x"],
    /--ttl must be a whole number from 0 to 255, not "256"/,
  ],
  [
    ["send", "--hostname", "239.255.0.1", "--ttl", "1.5", "x"],
    /--ttl must be a whole number/,
  ],
  [
    ["send", "--hostname", "127.0.0.1", "--ttl", "1", "x"],
    /--ttl is for sending to a multicast group/,
  ],
  [
    ["send", "--hostname", "ff15::1", "--ttl", "1", "x"],
    /--ttl is for IPv4 groups: Deno 2\.9 cannot set the hop limit/,
  ],
  [["--ttl", "1"], /--ttl is for send only/],
  // --multicast-loopback: to a group (send), with --join (serve).
  [
    ["send", "--multicast-loopback", "x"],
    /--multicast-loopback is for sending to a multicast group/,
  ],
  [
    ["--hostname", "0.0.0.0", "--multicast-loopback"],
    /--multicast-loopback on serve goes with --join GROUP/,
  ],
];

Deno.test("udp.ts bad group addresses (outside 239.255.0.0/16 and ff15::/16, not multicast, not an address), --join on a socket that cannot get the group, --ttl out of range: a usage error each, one error: line, exit 2", async () => {
  for (const [args, reason] of BAD_GROUPS) {
    const what = `udp.ts ${args.join(" ")}`;
    assert.throws(() => parseUdpArgs(args), (err: Error) => {
      assert.ok(err instanceof UsageError, `${what}: ${err}`);
      assert.match(err.message, reason, what);
      assert.ok(!err.message.includes("\n"), `${what}: one line`);
      return true;
    });
  }
  // As a user sees them: three of them, spawned (at once: no socket is bound).
  const spawned = [BAD_GROUPS[0], BAD_GROUPS[8], BAD_GROUPS[13]];
  const runs = await Promise.all(
    spawned.map(([args]) => runScript("udp.ts", args)),
  );
  for (const [i, r] of runs.entries()) {
    const [args, reason] = spawned[i];
    const what = `udp.ts ${args.join(" ")}`;
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.equal(r.out, "", what);
    const [first, blank, ...usage] = r.stderr.split("\n");
    assert.match(first, /^error: /, what);
    assert.match(first, reason, what);
    assert.equal(blank, "", what);
    assert.match(usage.join("\n"), /--multicast-loopback/, what);
    assert.ok(!hasStackTrace(r.stderr), what);
  }
});

Deno.test("parseUdpArgs takes serve --join GROUP (repeatable, v4 or v6) with --multicast-loopback, and send --ttl 0 --multicast-loopback; serve's loopback line says what it changes on this OS", () => {
  const serve = parseUdpArgs([
    ...["--hostname", "0.0.0.0", "--join", "239.255.0.1"],
    ...["--join", "239.255.9.9", "--multicast-loopback"],
  ]);
  assert.equal(serve.command, "serve");
  assert.deepEqual(serve.join, ["239.255.0.1", "239.255.9.9"]);
  assert.equal(serve.multicastLoopback, true);
  const v6 = parseUdpArgs(["--hostname", "[::]", "--join", "[FF15:0::1]"]);
  assert.deepEqual(v6.join, ["ff15::1"]);
  assert.equal(v6.multicastLoopback, false);
  const send = parseUdpArgs([
    ...["send", "--hostname", "239.255.0.1", "--ttl", "0"],
    ...["--multicast-loopback", "hi"],
  ]);
  assert.equal(send.ttl, 0);
  assert.equal(send.multicastLoopback, true);
  assert.match(
    loopbackLine("linux"),
    /on Linux changes nothing here: the sender's option decides .*send --multicast-loopback/,
  );
  assert.match(loopbackLine("darwin"), /on macOS changes nothing here/);
  assert.match(loopbackLine("windows"), /sent from this host come here too$/);
});

Deno.test("udp.ts without --unstable-net says which flag is missing, exit 1, no stack trace", async () => {
  // --no-config: otherwise deno.json's "unstable": ["net"] turns it on.
  for (const args of [["--port", "0"], ["send", "--port", "9", "x"]]) {
    const r = await runScript("udp.ts", args, {
      denoFlags: ["--no-config", "--allow-net"],
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: .*--unstable-net/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.ok(!hasStackTrace(r.stderr));
  }
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

// In a namespace of its own: the lookup fails, and no query leaves.
Deno.test(
  needsNetns(
    "udp.ts with a name that does not resolve fails with a one-line error, exit 1",
  ),
  async () => {
    const r = await runScript("udp.ts", [
      "--hostname",
      "no-such-host.invalid",
      "--port",
      "0",
    ], offline());
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: .*udp.*no-such-host\.invalid/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.ok(!hasStackTrace(r.stderr));
  },
);

// --- listening line and log lines --------------------------------------------

Deno.test("udp.ts prints 'udp listening on 127.0.0.1:PORT' first, with the real port for --port 0", async () => {
  await using server = await startScript("udp.ts", ["--port=0"]);
  assert.match(server.stdout.lines[0], /^udp listening on 127\.0\.0\.1:\d+$/);
  assert.ok(server.port > 0);
  // The port really is a UDP port now: a second bind on it fails.
  assert.throws(
    () => clientSocket("127.0.0.1", server.port),
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

Deno.test("udp.ts logs one line per datagram naming local and remote address:port and the size; no trace lines without --trace", async () => {
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
  await server.stop("SIGTERM");
  assert.deepEqual(server.stdout.lines.slice(1), [
    `udp datagram local 127.0.0.1:${server.port} remote ` +
    server.stdout.lines[1].split(" remote ")[1],
    "udp server stopped: 1 datagrams, 12 bytes in, 12 bytes out",
  ]);
  assert.equal(server.stderr.text(), "");
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
    assert.deepEqual(loggedSizes(server.stdout.lines), [...sizes, 7]);
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
      forbidden: 0,
      failed: 0,
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
    assert.deepEqual(loggedSizes(server.stdout.lines).sort(), [5, 6, 7, 8, 9]);
  } finally {
    socket.close();
  }
});

Deno.test("udp.ts send --chunk 1 hello: five 1-byte datagrams out, five logged by the server, five replies, stdout 'hello'", async () => {
  await using server = await startScript("udp.ts", ["--port", "0", "--trace"]);
  const r = await runScript("udp.ts", [
    "send",
    "--port",
    String(server.port),
    "--chunk",
    "1",
    "--trace",
    "hello",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "hello");
  const trace = r.stderr.trimEnd().split("\n");
  assert.deepEqual(
    trace.filter((l) => l.startsWith("sent ")),
    Array(5).fill("sent 1 bytes"),
  );
  assert.deepEqual(
    trace.filter((l) => l.startsWith("received ")),
    Array(5).fill("received 1 bytes"),
  );
  assert.equal(trace.length, 10, r.stderr);
  await server.stop("SIGTERM");
  // The server: one line per datagram received, one per reply sent.
  const lines = server.stdout.lines.slice(1, -1);
  assert.deepEqual(loggedSizes(lines), [1, 1, 1, 1, 1]);
  assert.equal(lines.length, 10, lines.join("\n"));
  assert.equal(
    lines.filter((l) => l.startsWith("udp sent 1 bytes to ")).length,
    5,
  );
});

Deno.test("udp.ts send --chunk 3 --delay 10 cuts stdin into datagrams of 3, 3, 3 and 1 bytes; the reply is the bytes in order", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const payload = randomBytes(10);
  const r = await runScript("udp.ts", [
    "send",
    "--port",
    String(server.port),
    "--chunk",
    "3",
    "--delay",
    "10",
  ], { stdin: payload });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout, payload);
  await server.waitForLine(/ 1 bytes$/);
  assert.deepEqual(loggedSizes(server.stdout.lines), [3, 3, 3, 1]);
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

// --- --trace and --hex ----------------------------------------------------------

for (
  const [flags, perDatagram] of [
    [["--trace"], true],
    [["--quiet", "--trace"], true], // --trace wins over --quiet
    [["--quiet"], false],
  ] as const
) {
  Deno.test(
    `udp.ts ${flags.join(" ")}: ${
      perDatagram
        ? "one 'udp datagram' line per datagram received and one 'udp sent N bytes to A' per reply, nothing more"
        : "no line per datagram, only the listening line and the summary"
    }`,
    async () => {
      await using server = await startScript("udp.ts", [
        "--port",
        "0",
        ...flags,
      ]);
      const socket = clientSocket();
      const me = formatAddr(socket.addr);
      try {
        for (const size of [5, 0, 1400]) {
          await socket.send(
            randomBytes(size),
            udpAddr("127.0.0.1", server.port),
          );
          await receiveOne(socket);
        }
      } finally {
        socket.close();
      }
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.stderr.text());
      const local = `127.0.0.1:${server.port}`;
      assert.deepEqual(server.stdout.lines, [
        `udp listening on ${local}`,
        ...(perDatagram
          ? [5, 0, 1400].flatMap((n) => [
            `udp datagram local ${local} remote ${me} ${n} bytes`,
            `udp sent ${n} bytes to ${me}`,
          ])
          : []),
        "udp server stopped: 3 datagrams, 1405 bytes in, 1405 bytes out",
      ]);
      assert.equal(server.stderr.text(), "");
    },
  );
}

Deno.test({
  name:
    "udp.ts --hex dumps each datagram received (under its 'udp datagram' line) and sent exactly as /usr/bin/xxd does (NUL, CR LF, bytes that are not UTF-8)" +
    (XXD ? "" : " (skipped: no xxd)"),
  ignore: !XXD,
  fn: async () => {
    await using server = await startScript("udp.ts", ["--port", "0", "--hex"]);
    const payloads = [
      new Uint8Array([0x47, 0x45, 0x54, 0x0d, 0x0a, 0x00, 0xff, 0xc3, 0x28]),
      concat([new TextEncoder().encode("line 1\r\nline 2\0"), randomBytes(40)]),
    ];
    const socket = clientSocket();
    try {
      for (const p of payloads) {
        await socket.send(p, udpAddr("127.0.0.1", server.port));
        await receiveOne(socket);
      }
    } finally {
      socket.close();
    }
    await server.stop("SIGTERM");
    const lines = server.stdout.lines;
    // The dump of a datagram received goes under its 'udp datagram' line.
    const received = lines.flatMap((l, i) =>
      l.startsWith("udp datagram ") ? [i] : []
    );
    const sent = lines.flatMap((l, i) => l.startsWith("udp sent ") ? [i] : []);
    assert.equal(received.length, 2);
    assert.equal(sent.length, 2);
    for (const [k, p] of payloads.entries()) {
      const expected = await xxd(p);
      assert.ok(expected.length > 0);
      assert.deepEqual(
        dumpAfter(lines, received[k]),
        expected,
        `received ${k}`,
      );
      assert.deepEqual(dumpAfter(lines, sent[k]), expected, `sent ${k}`);
    }
  },
});

Deno.test({
  name:
    "udp.ts send --hex: 'sent N bytes' and 'received N bytes' on stderr, each with its xxd dump; the reply alone on stdout" +
    (XXD ? "" : " (skipped: no xxd)"),
  ignore: !XXD,
  fn: async () => {
    await using server = await startScript("udp.ts", ["--port", "0"]);
    const payload = concat([
      new Uint8Array([0, 13, 10, 0xfe]),
      randomBytes(30),
    ]);
    const r = await runScript("udp.ts", [
      "send",
      "--port",
      String(server.port),
      "--hex",
    ], { stdin: payload });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout, payload);
    const dump = await xxd(payload);
    assert.deepEqual(r.stderr.trimEnd().split("\n"), [
      "sent 34 bytes",
      ...dump,
      "received 34 bytes",
      ...dump,
    ]);
  },
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

Deno.test("udp.ts send prints the reply payload and exits 0, nothing on stderr; '' sends an empty datagram", async () => {
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
  assert.equal(r.stderr, "");
  const empty = await runScript("udp.ts", [
    "send",
    `--port=${server.port}`,
    "",
  ]);
  assert.equal(empty.code, 0, empty.stderr);
  assert.equal(empty.out, "");
  await server.waitForLine(/ 0 bytes$/);
});

Deno.test("udp.ts send without MESSAGE sends stdin as ONE datagram, byte for byte (NUL, invalid UTF-8, 2,000 random bytes)", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const payload = concat([
    new Uint8Array([0, 0xff, 0xfe, 0xc3, 0x28, 0x0d, 0x0a, 0x80, 0]),
    randomBytes(2000),
  ]);
  const r = await runScript("udp.ts", ["send", "--port", String(server.port)], {
    stdin: payload,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256(r.stdout.slice()), await sha256(payload));
  await server.waitForLine(/ 2009 bytes$/);
  assert.deepEqual(loggedSizes(server.stdout.lines), [2009]);
});

Deno.test("udp.ts send with stdout on /dev/full blames stdout, not the network: 'error: cannot write to stdout', exit 1", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const r = await runScript("udp.ts", [
    "send",
    "--port",
    String(server.port),
    "hello",
  ], { shellPrefix: "exec >/dev/full;" });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: cannot write to stdout: .*No space left/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  await server.waitForLine(/ 5 bytes$/);
});

Deno.test("udp.ts send with more stdin than one datagram holds says so and suggests --chunk, exit 1", async () => {
  const r = await runScript("udp.ts", ["send", "--port", "9"], {
    stdin: new Uint8Array(70_000),
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: .*one UDP datagram.*--chunk/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
});

Deno.test("udp.ts send of 65,508 bytes to an IPv4 host (one more than IPv4 carries) says it does not fit (not the OS's 'Message too long') and suggests --chunk, exit 1", async () => {
  const port = freeUdpPort();
  const tooBig = `error: cannot send to udp 127.0.0.1:${port}: 65508 bytes ` +
    `do not fit in one UDP datagram (at most 65507 bytes over IPv4, ` +
    `65527 over IPv6); send less, or cut it into datagrams with --chunk N\n`;
  const [fromStdin, fromMessage] = await Promise.all([
    runScript("udp.ts", ["send", "--port", String(port)], {
      stdin: new Uint8Array(MAX_UDP_PAYLOAD_IPV4 + 1),
    }),
    runScript("udp.ts", [
      "send",
      "--port",
      String(port),
      "x".repeat(MAX_UDP_PAYLOAD_IPV4 + 1),
    ]),
  ]);
  for (const r of [fromStdin, fromMessage]) {
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, tooBig);
    assert.equal(r.out, "");
  }
});

// In a namespace of its own: the lookup fails, and no query leaves.
Deno.test(
  needsNetns(
    "udp.ts send to a name that does not resolve: 'cannot send to udp NAME:PORT: the name ... does not resolve', exit 1",
  ),
  async () => {
    const r = await runScript("udp.ts", [
      "send",
      "--hostname",
      "nope.invalid",
      "--port",
      "9",
      "x",
    ], offline());
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `error: cannot send to udp nope.invalid:9: the name "nope.invalid" ` +
        `does not resolve to an address; check the spelling\n`,
    );
  },
);

Deno.test("udp.ts send without the --allow-net grant: 'Deno has no permission to send to udp A; run again with --allow-net=...', exit 1", async () => {
  const cases: [string, string, string][] = [
    // The sending socket binds ::1: one grant covers it and the destination.
    ["127.0.0.1", "::1", "udp [::1]:9; run again with --allow-net=[::1]"],
    // Off loopback the socket binds the wildcard: that is a grant too.
    [
      "127.0.0.1",
      "198.18.0.1",
      "udp 198.18.0.1:9 (the sending socket binds 0.0.0.0 too); " +
      "run again with --allow-net=0.0.0.0,198.18.0.1",
    ],
    // The bind is granted, the destination is not (nothing is sent).
    [
      "0.0.0.0",
      "198.18.0.1",
      "udp 198.18.0.1:9 (the sending socket binds 0.0.0.0 too); " +
      "run again with --allow-net=0.0.0.0,198.18.0.1",
    ],
  ];
  const runs = await Promise.all(
    cases.map(([grant, host]) =>
      runScript("udp.ts", ["send", "--hostname", host, "--port", "9", "x"], {
        denoFlags: [`--allow-net=${grant}`, "--unstable-net", "--no-prompt"],
      })
    ),
  );
  for (const [i, r] of runs.entries()) {
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `error: Deno has no permission to send to ${cases[i][2]}\n`,
      `--allow-net=${cases[i][0]} send --hostname ${cases[i][1]}`,
    );
  }
});

Deno.test("udp.ts send --hostname 0.0.0.0 reaches this machine and prints the reply that comes from 127.0.0.1, exit 0", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const r = await runScript("udp.ts", [
    "send",
    "--hostname",
    "0.0.0.0",
    "--port",
    String(server.port),
    "--timeout",
    "5000",
    "anyone home?",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "anyone home?");
});

Deno.test({
  name:
    "udp.ts send --hostname :: reaches this machine and prints the reply that comes from ::1, exit 0" +
    (IPV6 ? "" : " (skipped: no IPv6 loopback ::1)"),
  ignore: !IPV6,
  fn: async () => {
    await using server = await startScript("udp.ts", [
      "--hostname",
      "::1",
      "--port",
      "0",
    ]);
    const r = await runScript("udp.ts", [
      "send",
      "--hostname",
      "::",
      "--port",
      String(server.port),
      "--timeout",
      "5000",
      "six",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "six");
  },
});

Deno.test("udp.ts send to a port where nothing listens exits 1 with 'no reply' (silence, or ICMP refused)", async () => {
  const port = freeUdpPort();
  const timeout = 300;
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
      "300",
      "anyone?",
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `error: no reply from udp 127.0.0.1:${port} within 300 ms\n`,
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
          sendDatagram("127.0.0.1", target, new Uint8Array([1]), 200),
          { message: `no reply from udp 127.0.0.1:${target} within 200 ms` },
        );
        const elapsed = performance.now() - started;
        assert.ok(
          elapsed < 200 + 3000,
          `gave up after ${Math.round(elapsed)} ms`,
        );
      }
    } finally {
      silent.close();
    }
  },
});

Deno.test({
  name:
    "sendDatagrams with three datagrams and a server that answers two says '2 of 3 datagrams answered'",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const server = clientSocket();
    const { port } = server.addr as Deno.NetAddr;
    try {
      const pending = sendDatagrams(
        "127.0.0.1",
        port,
        [1, 2, 3].map((n) => new Uint8Array([n])),
        { timeoutMs: 200 },
      );
      for (let i = 0; i < 3; i++) {
        const [data, from] = await receiveOne(server);
        if (i < 2) await server.send(data, from);
      }
      await assert.rejects(pending, {
        message:
          `no reply from udp 127.0.0.1:${port} within 200 ms (2 of 3 datagrams answered)`,
      });
    } finally {
      server.close();
    }
  },
});

// --- logging is best effort ----------------------------------------------------

Deno.test("logging is best effort: with stdout on /dev/full, and with stdout a closed pipe, udp.ts still answers every datagram and stops with exit 0", async () => {
  // stdout on /dev/full: every write fails with ENOSPC. No listening line
  // can be read, so the port is chosen here (free a moment ago).
  const port = freeUdpPort();
  const full = new Deno.Command("sh", {
    args: [
      "-c",
      `exec "$0" run --allow-net=127.0.0.1 --unstable-net udp.ts --port ${port} >/dev/full`,
      Deno.execPath(),
    ],
    cwd: ROOT,
    env: CHILD_ENV,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const fullErr = new OutputCollector(full.stderr);
  try {
    // The listening line fails first: the warning says the port is bound.
    await withTimeout(
      fullErr.waitFor(/^warning: cannot write to stdout/),
      REPLY_WAIT_MS,
      () => `no warning; stderr: ${fullErr.text()}`,
    );
    for (const text of ["one", "two", "three"]) {
      const payload = new TextEncoder().encode(text);
      const { reply } = await sendDatagram("127.0.0.1", port, payload, 5000);
      assert.deepEqual(reply, payload);
    }
  } finally {
    try {
      full.kill("SIGTERM");
    } catch { /* it died: the status below says how */ }
  }
  assert.equal((await full.status).code, 0, fullErr.text());
  await fullErr.done;
  assert.equal(fullErr.lines.length, 1, `one warning only:\n${fullErr.text()}`);
  assert.ok(!hasStackTrace(fullErr.text()));

  // stdout a pipe whose reader went away after the listening line.
  const piped = commandFor("udp.ts", ["--port", "0"], {
    denoFlags: ["--allow-net=127.0.0.1", "--unstable-net"],
  }, { stdin: "null" }).spawn();
  const pipedErr = new OutputCollector(piped.stderr);
  try {
    const reader = piped.stdout.getReader();
    let first = "";
    while (!first.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      first += new TextDecoder().decode(value);
    }
    const pipedPort = Number(/:(\d+)\n/.exec(first)?.[1]);
    assert.ok(pipedPort > 0, `listening line: ${first}`);
    await reader.cancel();
    for (const text of ["four", "five"]) {
      const payload = new TextEncoder().encode(text);
      const { reply } = await sendDatagram(
        "127.0.0.1",
        pipedPort,
        payload,
        5000,
      );
      assert.deepEqual(reply, payload);
    }
  } finally {
    try {
      piped.kill("SIGTERM");
    } catch { /* it died: the status below says how */ }
  }
  assert.equal((await piped.status).code, 0, pipedErr.text());
  await pipedErr.done;
  assert.ok(pipedErr.lines.length <= 1, pipedErr.text());
  assert.ok(!hasStackTrace(pipedErr.text()));
});

// --- no echo loops -------------------------------------------------------------

/** A guard for a server bound at 127.0.0.1:9000 that collects its warnings. */
function guardAt(hostname = "127.0.0.1", port = 9000) {
  const warnings: string[] = [];
  const guard = new EchoLoopGuard(
    udpAddr(hostname, port),
    (l) => warnings.push(l),
  );
  return { guard, warnings };
}

Deno.test("EchoLoopGuard refuses source port 0, ports below 1024 and the server's own address:port, one warning per source", () => {
  const { guard, warnings } = guardAt();
  const data = new Uint8Array([1, 2, 3]);
  const refuse = (host: string, port: number) =>
    guard.refuse(data, udpAddr(host, port));
  for (let i = 0; i < 3; i++) {
    assert.match(refuse("127.0.0.1", 0) ?? "", /port 0/);
    for (const low of [7, 13, 19, 37, 1023]) {
      assert.match(refuse("127.0.0.1", low) ?? "", /below 1024/);
    }
    assert.match(refuse("127.0.0.1", 9000) ?? "", /own address/);
  }
  assert.equal(warnings.length, 7, warnings.join("\n"));
  assert.match(warnings[0], /^warning: udp: not answering 127\.0\.0\.1:0: /);
  assert.match(warnings[1], /127\.0\.0\.1:7: .*below 1024.*CVE-1999-0103/);
  assert.match(warnings[6], /127\.0\.0\.1:9000: .*own address/);
  // Not refused: port 1024 and up, our port on another address.
  assert.equal(refuse("127.0.0.1", 1024), null);
  assert.equal(refuse("127.0.0.2", 9000), null);
  assert.equal(refuse("::1", 40000), null);
  // Bound to every address: our port number from a local address is us.
  const wild = guardAt("0.0.0.0").guard;
  assert.notEqual(wild.refuse(data, udpAddr("127.0.0.1", 9000)), null);
  assert.equal(wild.refuse(data, udpAddr("127.0.0.1", 9001)), null);
});

Deno.test("EchoLoopGuard: a peer that returns exactly what it was sent, fast, LOOP_RETURNS - 1 times, is held back; when it stays quiet and sends the late reply straight back, it is muted for LOOP_MUTE_MS, with one warning", () => {
  const { guard, warnings } = guardAt();
  const peer = udpAddr("127.0.0.1", 41234);
  const bytes = randomBytes(100);
  let now = 1_000_000;
  // The first datagram and LOOP_RETURNS - 2 fast returns are answered...
  for (let i = 0; i < LOOP_RETURNS - 1; i++) {
    assert.equal(guard.refuse(bytes, peer, now++), null, `datagram ${i}`);
  }
  // ...the next fast return makes it a suspect: its reply is held back.
  assert.match(guard.refuse(bytes, peer, now) ?? "", /held back/);
  assert.deepEqual(guard.release(now + LOOP_PROBE_MS - 1), []);
  assert.deepEqual(warnings, []);
  // Quiet for LOOP_PROBE_MS: the reply goes out, late...
  now += LOOP_PROBE_MS;
  const [late, ...more] = guard.release(now);
  assert.deepEqual(more, []);
  assert.deepEqual([late.bytes, late.peer, late.count], [bytes, peer, 1]);
  // ...and comes straight back: an echo.
  assert.match(guard.refuse(bytes, peer, now + 1) ?? "", /echo loop/);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0],
    new RegExp(
      `^warning: udp 127\\.0\\.0\\.1:41234 sent back exactly what it was sent, ${LOOP_RETURNS} times in a row: an echo loop.*${
        LOOP_MUTE_MS / 1000
      } s$`,
    ),
  );
  // Muted: not even new bytes are answered, and no more warnings.
  for (let i = 0; i < 100; i++) {
    assert.notEqual(guard.refuse(randomBytes(10), peer, now + i), null);
  }
  assert.equal(warnings.length, 1);
  // Another peer is not affected.
  assert.equal(guard.refuse(bytes, udpAddr("127.0.0.1", 41235), now), null);
  // After the mute, the peer is answered again.
  assert.equal(guard.refuse(bytes, peer, now + 1 + LOOP_MUTE_MS), null);
});

Deno.test("EchoLoopGuard: a sender of the same bytes back to back (send --chunk 64 of zeros) keeps sending while held back, gets every reply late, and is never muted", () => {
  const { guard, warnings } = guardAt();
  const peer = udpAddr("127.0.0.1", 41234);
  const zeros = new Uint8Array(64);
  let now = 0;
  let answered = 0;
  let held = 0;
  for (let i = 0; i < 64; i++) {
    const verdict = guard.refuse(zeros, peer, now);
    if (verdict === null) answered++;
    else if (/held back/.test(verdict)) held++;
    assert.equal(guard.release(now).length, 0, "released while it sends");
    now += 0.05; // 50 µs apart
  }
  const first = LOOP_RETURNS - 1;
  assert.deepEqual([answered, held], [first, 64 - first]);
  const late = guard.release(now + LOOP_PROBE_MS);
  assert.deepEqual(late.map((h) => h.count), [64 - first]);
  // It does not send them back. A second later, its bytes are answered
  // again, the first of a new count.
  now += LOOP_PROBE_MS + LOOP_FORGET_MS + 1;
  for (let i = 0; i < first; i++) {
    assert.equal(guard.refuse(zeros, peer, now++), null, `datagram ${i}`);
  }
  assert.deepEqual(warnings, []);
});

Deno.test("EchoLoopGuard answers what is not a fast exact return: new bytes each time, returns slower than LOOP_WINDOW_MS, the same bytes from several peers", () => {
  const { guard, warnings } = guardAt();
  const peer = udpAddr("127.0.0.1", 41234);
  let now = 0;
  // A conversation: every datagram differs (here: a counter in front).
  const bytes = randomBytes(64);
  for (let i = 0; i < 10_000; i++) {
    new DataView(bytes.buffer).setUint32(0, i);
    assert.equal(guard.refuse(bytes, peer, now++), null);
  }
  // The same bytes, but each one more than LOOP_WINDOW_MS after our reply.
  const same = randomBytes(64);
  for (let i = 0; i < 3 * LOOP_RETURNS; i++) {
    now += LOOP_WINDOW_MS + 1;
    assert.equal(guard.refuse(same, peer, now), null, `slow return ${i}`);
  }
  // The same bytes from many peers: each peer sent them once.
  for (let p = 0; p < 3 * LOOP_RETURNS; p++) {
    assert.equal(
      guard.refuse(same, udpAddr("127.0.0.1", 50000 + p), now),
      null,
    );
  }
  assert.deepEqual(warnings, []);
});

/**
 * Two echo servers A and B, simulated with their guards: each datagram in
 * `forged` reaches B "from A"; every answer, and every reply a guard holds
 * back and releases, is delivered 1 ms later. Runs until nothing moves.
 */
function twoEchoes(forged: Uint8Array[]) {
  const a = guardAt("127.0.0.1", 20000);
  const b = guardAt("127.0.0.1", 30000);
  const aAddr = udpAddr("127.0.0.1", 20000);
  const bAddr = udpAddr("127.0.0.1", 30000);
  let queue = forged.map((bytes) => ({ bytes, toB: true }));
  let delivered = 0;
  let now = 0;
  let lastMove = 0;
  while (now - lastMove <= 2 * LOOP_PROBE_MS && delivered < 1_000_000) {
    const next: typeof queue = [];
    for (const d of queue) {
      delivered++;
      const [guard, from] = d.toB ? [b.guard, aAddr] : [a.guard, bAddr];
      if (guard.refuse(d.bytes, from, now) === null) {
        next.push({ bytes: d.bytes, toB: !d.toB });
      }
    }
    for (const [guard, toB] of [[a.guard, true], [b.guard, false]] as const) {
      for (const held of guard.release(now)) {
        for (let i = 0; i < held.count; i++) {
          next.push({ bytes: held.bytes, toB });
        }
      }
    }
    if (next.length > 0) lastMove = now;
    queue = next;
    now += 1;
  }
  return { delivered, warnings: [a.warnings, b.warnings], ended: queue };
}

Deno.test("EchoLoopGuard: two echo servers stop one loop, 5 loops of the same bytes, and 300 different loops between them, within a bounded number of datagrams, one warning", () => {
  const same = randomBytes(32);
  for (
    const forged of [
      [randomBytes(32)],
      Array(5).fill(same),
      Array.from({ length: 300 }, () => randomBytes(32)),
    ]
  ) {
    const what = `${forged.length} loops`;
    const { delivered, warnings, ended } = twoEchoes(forged);
    assert.deepEqual(ended, [], `${what}: the loops never ended`);
    assert.ok(
      delivered <= forged.length * 2 * (LOOP_RETURNS + 2),
      `${what}: ${delivered} datagrams`,
    );
    const [inA, inB] = warnings.map((w) => w.length);
    assert.ok(inA + inB >= 1 && inA <= 1 && inB <= 1, `${what}: ${warnings}`);
  }
});

/** Where a low source port can be bound (root only), or null. */
function lowPortSocket(): Deno.DatagramConn | null {
  for (const port of [7, 19, 1023, 999, 777]) {
    try {
      return clientSocket("127.0.0.1", port);
    } catch {
      // in use, or not root: try the next
    }
  }
  return null;
}

Deno.test({
  name:
    "udp.ts does not answer datagrams from source ports below 1024 (echo 7, chargen 19...), with one warning per source" +
    (IS_ROOT ? "" : " (skipped: binding a port below 1024 needs root)"),
  ignore: !IS_ROOT,
  fn: async () => {
    await using server = await startScript("udp.ts", ["--port", "0"]);
    const low = lowPortSocket();
    assert.ok(low, "no port below 1024 could be bound");
    const normal = clientSocket();
    const to = udpAddr("127.0.0.1", server.port);
    try {
      const lowPort = (low.addr as Deno.NetAddr).port;
      await low.send(new TextEncoder().encode("one"), to);
      await low.send(new TextEncoder().encode("two"), to);
      // Datagrams are handled in order: once this one is answered, the
      // two above have been handled too.
      await normal.send(new TextEncoder().encode("marker"), to);
      await receiveOne(normal);
      // Whatever reached `low` so far is ahead of this one in its queue.
      await normal.send(new TextEncoder().encode("sentinel"), low.addr);
      const [first] = await receiveOne(low);
      assert.equal(
        new TextDecoder().decode(first),
        "sentinel",
        "the server answered a low port",
      );
      // Log lines are written in the background: wait for them.
      await withTimeout(
        server.stderr.waitFor(/not answering/),
        REPLY_WAIT_MS,
        () => `no warning:\n${server.stderr.text()}`,
      );
      await server.waitForLine(
        /3 bytes, not answered: source port below 1024$/,
      );
      const warnings = server.stderr.lines;
      assert.equal(warnings.length, 1, server.stderr.text());
      assert.match(
        warnings[0],
        new RegExp(`not answering 127\\.0\\.0\\.1:${lowPort}: .*below 1024`),
      );
      assert.match(
        server.stdout.lines[1],
        /3 bytes, not answered: source port below 1024$/,
      );
    } finally {
      low.close();
      normal.close();
    }
    await server.stop("SIGTERM");
    assert.deepEqual(summary(server.stdout.lines.at(-1)), [3, 12, 6]);
  },
});

/**
 * Send a UDP datagram whose source address and port are forged, through a
 * raw IPv4 socket (root only). Deno has no raw sockets, so a child `deno
 * eval` (which has every permission) calls libc through FFI.
 */
async function forgeDatagram(
  from: Deno.NetAddr,
  to: Deno.NetAddr,
  payload: Uint8Array,
): Promise<void> {
  const code = `
    const [srcHost, srcPort, dstHost, dstPort, hex] = Deno.args;
    const libc = Deno.dlopen("libc.so.6", {
      socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
      sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
      close: { parameters: ["i32"], result: "i32" },
    });
    const ip = (s) => s.split(".").map(Number);
    const body = Uint8Array.from((hex.match(/../g) ?? []).map((h) => parseInt(h, 16)));
    const packet = new Uint8Array(28 + body.length);
    const v = new DataView(packet.buffer);
    v.setUint8(0, 0x45); v.setUint16(2, packet.length); v.setUint8(8, 64); v.setUint8(9, 17);
    packet.set(ip(srcHost), 12); packet.set(ip(dstHost), 16);
    v.setUint16(20, Number(srcPort)); v.setUint16(22, Number(dstPort));
    v.setUint16(24, 8 + body.length); packet.set(body, 28);
    const fd = libc.symbols.socket(2, 3, 255); // AF_INET, SOCK_RAW, IPPROTO_RAW
    if (fd < 0) throw new Error("no raw socket");
    const sa = new Uint8Array(16);
    new DataView(sa.buffer).setUint16(0, 2, true);
    new DataView(sa.buffer).setUint16(2, Number(dstPort));
    sa.set(ip(dstHost), 4);
    const n = libc.symbols.sendto(fd, packet, BigInt(packet.length), 0, sa, 16);
    libc.symbols.close(fd);
    if (Number(n) !== packet.length) throw new Error("sendto failed");
  `;
  const hex = Array.from(payload, (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const { code: status, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      code,
      from.hostname,
      String(from.port),
      to.hostname,
      String(to.port),
      hex,
    ],
    cwd: "/",
    env: CHILD_ENV,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(status, 0, new TextDecoder().decode(stderr));
}

Deno.test({
  name:
    "udp.ts does not answer a forged datagram from its own address:port (it would answer itself forever) nor one from port 0; one warning each" +
    (IS_ROOT ? "" : " (skipped: forging a source address needs root)"),
  ignore: !IS_ROOT || Deno.build.os !== "linux",
  fn: async () => {
    await using server = await startScript("udp.ts", ["--port", "0"]);
    const self = udpAddr("127.0.0.1", server.port);
    await forgeDatagram(self, self, new TextEncoder().encode("self"));
    await forgeDatagram(self, self, new TextEncoder().encode("self"));
    const zero = udpAddr("127.0.0.1", 0);
    await forgeDatagram(zero, self, new TextEncoder().encode("zero"));
    await forgeDatagram(zero, self, new TextEncoder().encode("zero"));
    // Handled in order: the marker's reply means the four were handled.
    const marker = new TextEncoder().encode("marker");
    const { reply } = await sendDatagram(
      "127.0.0.1",
      server.port,
      marker,
      5000,
    );
    assert.deepEqual(reply, marker);
    await server.stop("SIGTERM");
    // Four forged (16 bytes) and the marker came in; only the marker left.
    assert.deepEqual(summary(server.stdout.lines.at(-1)), [5, 22, 6]);
    const warnings = server.stderr.lines;
    assert.equal(warnings.length, 2, server.stderr.text());
    assert.match(
      warnings[0],
      new RegExp(`not answering 127\\.0\\.0\\.1:${server.port}: .*own address`),
    );
    assert.match(warnings[1], /not answering 127\.0\.0\.1:0: .*port 0/);
  },
});

Deno.test("two udp.ts servers and one datagram to B 'from' A: the ping-pong between them stops after about 2 x LOOP_RETURNS datagrams, with one warning", async () => {
  // No forging needed: B is paused while a socket on port P sends to it;
  // that socket closes and A starts on port P; then B goes on, and answers
  // what it takes for A's datagram: to A.
  await using b = await startScript("udp.ts", ["--port", "0"]);
  const fake = clientSocket();
  const port = (fake.addr as Deno.NetAddr).port;
  b.child.kill("SIGSTOP");
  try {
    await fake.send(randomBytes(16), udpAddr("127.0.0.1", b.port));
  } finally {
    fake.close();
  }
  await using a = await startScript("udp.ts", ["--port", String(port)])
    .finally(() => b.child.kill("SIGCONT"));
  const loop = /echo loop/;
  await withTimeout(
    Promise.race([a.stderr.waitFor(loop), b.stderr.waitFor(loop)]),
    REPLY_WAIT_MS,
    () =>
      `no loop warning; A has logged ${a.stdout.lines.length} lines, B ${b.stdout.lines.length}`,
  );
  await a.stop("SIGTERM");
  await b.stop("SIGTERM");
  const [inA] = summary(a.stdout.lines.at(-1));
  const [inB] = summary(b.stdout.lines.at(-1));
  assert.ok(
    inA + inB <= 2 * (LOOP_RETURNS + 2),
    `${inA} + ${inB} datagrams went round`,
  );
  const warnings = [...a.stderr.lines, ...b.stderr.lines];
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(
    warnings[0],
    /^warning: udp 127\.0\.0\.1:\d+ sent back exactly what it was sent, \d+ times in a row: an echo loop/,
  );
});

// --- the loop guard leaves ordinary clients alone ------------------------------

Deno.test("a probe that sends the same 'ping' every 20 ms, each after its reply, is answered 40 times out of 40, with no warning", async () => {
  // 20 ms is twice LOOP_WINDOW_MS: a return that slow is no echo's, and
  // neither counts towards a loop nor starts the count again. (The stress
  // tier runs the 10-a-second probe of issue 22.4 for 50 pings.)
  assert.ok(20 >= 2 * LOOP_WINDOW_MS);
  await using server = await startScript("udp.ts", ["--port", "0", "--quiet"]);
  const socket = clientSocket();
  const ping = new TextEncoder().encode("ping");
  let answered = 0;
  try {
    for (let i = 0; i < 40; i++) {
      if (i > 0) await delay(20);
      await socket.send(ping, udpAddr("127.0.0.1", server.port));
      const [reply] = await receiveOne(socket);
      assert.deepEqual(reply, ping, `ping ${i}`);
      answered++;
    }
  } finally {
    socket.close();
  }
  assert.equal(answered, 40);
  await server.stop("SIGTERM");
  assert.equal(server.stderr.text(), "");
  assert.deepEqual(summary(server.stdout.lines.at(-1)), [40, 160, 160]);
});

Deno.test("udp.ts send --chunk 64 of 4,096 zero bytes from stdin: 64 equal datagrams back to back, 64 of 64 answered (the last ones late), no warning", async () => {
  await using server = await startScript("udp.ts", ["--port", "0"]);
  const zeros = new Uint8Array(64 * 64);
  const r = await runScript("udp.ts", [
    "send",
    "--port",
    String(server.port),
    "--chunk",
    "64",
  ], { stdin: zeros });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout, zeros);
  await server.stop("SIGTERM");
  assert.equal(server.stderr.text(), "");
  assert.deepEqual(summary(server.stdout.lines.at(-1)), [64, 4096, 4096]);
  // The guard held the last replies back while the sender kept sending
  // the same bytes (an echo would have gone quiet), then sent them.
  const held = server.stdout.lines.filter((l) => / held back /.test(l));
  assert.ok(held.length > 0, server.stdout.text());
  assert.ok(
    server.stdout.lines.some((l) =>
      /^udp 127\.0\.0\.1:\d+ was quiet for \d+ ms: sending the \d+ repl(y|ies) held back$/
        .test(l)
    ),
    server.stdout.text(),
  );
});

// --- replies Deno forbids ----------------------------------------------------------

Deno.test("udp.ts bound to 0.0.0.0 under --allow-net=0.0.0.0 cannot reply to 127.0.0.1: one warning per peer naming the grant (20 datagrams from 1 peer: 1; from 3 peers: 3), all 20 counted in the summary", async () => {
  for (const peers of [1, 3]) {
    await using server = await startScript("udp.ts", [
      "--hostname",
      "0.0.0.0",
      "--port",
      "0",
    ], { denoFlags: ["--allow-net=0.0.0.0", "--unstable-net"] });
    const sockets = Array.from({ length: peers }, () => clientSocket());
    try {
      for (let i = 0; i < 20; i++) {
        await sockets[i % peers].send(
          new TextEncoder().encode(`hi ${i}`),
          udpAddr("127.0.0.1", server.port),
        );
      }
      // No reply can come: the log lines say when all 20 were handled.
      await waitUntil(
        () => loggedSizes(server.stdout.lines).length === 20,
        REPLY_WAIT_MS,
        () => `not 20 datagrams logged:\n${server.stdout.text()}`,
      );
    } finally {
      for (const s of sockets) s.close();
    }
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr.text());
    const warnings = server.stderr.lines;
    assert.equal(warnings.length, peers, server.stderr.text());
    for (const [i, s] of sockets.entries()) {
      const me = formatAddr(s.addr);
      assert.equal(
        warnings.filter((w) => w.includes(` reply to ${me} `)).length,
        1,
        `peer ${i}:\n${server.stderr.text()}`,
      );
    }
    for (const w of warnings) {
      assert.match(
        w,
        /^warning: udp reply to 127\.0\.0\.1:\d+ failed: Deno has no permission to send to udp 127\.0\.0\.1:\d+ .*run with --allow-net=0\.0\.0\.0,127\.0\.0\.1, or --allow-net to answer anyone \(further failures to it are counted in the summary\)$/,
      );
    }
    assert.match(
      server.stdout.lines.at(-1) ?? "",
      /^udp server stopped: 20 datagrams, \d+ bytes in, 0 bytes out, 20 replies forbidden by Deno's permissions$/,
    );
    assert.ok(!hasStackTrace(server.stderr.text()));
  }
});

// --- a stdout nobody reads -----------------------------------------------------------

Deno.test("udp.ts --trace with a stdout nobody reads after the listening line (far more than a 64 KiB pipe of log) still answers 2,000 datagrams one by one, and stops on SIGTERM with exit 0", async () => {
  const child = commandFor("udp.ts", ["--port", "0", "--trace"], {
    denoFlags: ["--allow-net=127.0.0.1", "--unstable-net"],
  }, { stdin: "null" }).spawn();
  const stderr = new OutputCollector(child.stderr);
  const reader = child.stdout.getReader();
  const socket = clientSocket();
  let answered = 0;
  try {
    // Read the listening line, and never read stdout again.
    let first = "";
    while (!first.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      first += new TextDecoder().decode(value);
    }
    const port = Number(
      /^udp listening on 127\.0\.0\.1:(\d+)\n/.exec(first)?.[1],
    );
    assert.ok(port > 0, `listening line: ${first}`);
    const to = udpAddr("127.0.0.1", port);
    // Each datagram is two log lines of about 60 bytes: 2,000 of them are
    // some 240 KB of log, nearly four times what the pipe holds.
    for (let i = 0; i < 2000; i++) {
      const payload = new TextEncoder().encode(`datagram ${i}`);
      await socket.send(payload, to);
      const [reply] = await receiveOne(socket);
      assert.deepEqual(reply, payload, `datagram ${i}`);
      answered++;
    }
    child.kill("SIGTERM");
    const status = await withTimeout(
      child.status,
      REPLY_WAIT_MS,
      () => "SIGTERM did not stop it",
    );
    assert.equal(status.code, 0, stderr.text());
  } finally {
    socket.close();
    try {
      child.kill("SIGKILL");
    } catch { /* it has exited */ }
    await child.status;
    await reader.cancel();
    await stderr.done;
  }
  assert.equal(answered, 2000);
  assert.ok(!hasStackTrace(stderr.text()), stderr.text());
});

// --- timers: no flag asks for more than a JavaScript timer holds -------------------

Deno.test("udp.ts send --timeout and --delay above 2^31-1 ms (the longest JavaScript timer) are usage errors, exit 2", async () => {
  for (
    const args of [
      ["send", "--timeout", "2147483648", "x"],
      ["send", "--chunk", "1", "--delay", "2147483648", "xy"],
    ]
  ) {
    const r = await runScript("udp.ts", args);
    const what = `udp.ts ${args.join(" ")}`;
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.match(
      r.stderr,
      /^error: --(timeout|delay) must be a whole number from [01] to 2147483647, not "2147483648"\n\nusage:/,
      what,
    );
  }
});

Deno.test("udp.ts send --timeout 2147483647 and --delay 2147483647 (the longest allowed) really wait: after the first datagram, nothing more for a second, and no exit", async () => {
  const cases = [
    ["--timeout", "2147483647", "x"],
    ["--chunk", "1", "--delay", "2147483647", "xy"],
  ];
  for (const args of cases) {
    const silent = clientSocket();
    const { port } = silent.addr as Deno.NetAddr;
    const child = commandFor(
      "udp.ts",
      ["send", "--port", String(port), ...args],
      { denoFlags: ["--allow-net=127.0.0.1", "--unstable-net"] },
      { stdin: "null" },
    ).spawn();
    const stderr = new OutputCollector(child.stderr);
    const stdout = new OutputCollector(child.stdout);
    try {
      const [first] = await receiveOne(silent);
      assert.equal(new TextDecoder().decode(first), "x");
      const next = silent.receive().then(
        ([d]) => `sent ${JSON.stringify(new TextDecoder().decode(d))} at once`,
        () => "closed",
      );
      const outcome = await Promise.race([
        child.status.then((s) => `exited with ${s.code}: ${stderr.text()}`),
        next,
        delay(1000).then(() => "still waiting"),
      ]);
      assert.equal(outcome, "still waiting", args.join(" "));
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* it has exited: the assertion above says how */ }
      await child.status;
      await Promise.all([stderr.done, stdout.done]);
      silent.close();
    }
  }
});

Deno.test("EchoLoopGuard: a stream of the same bytes at its own pace (50 a second) that came back fast enough to be held is answered at its next datagram, and never muted", () => {
  const warnings: string[] = [];
  const late: number[] = [];
  const guard = new EchoLoopGuard(
    udpAddr("127.0.0.1", 9000),
    (l) => warnings.push(l),
    (_bytes, _to, count) => late.push(count),
  );
  try {
    const peer = udpAddr("127.0.0.1", 41234);
    const beat = new TextEncoder().encode("heartbeat");
    let now = 0;
    // A fast run (a burst, say) makes it a suspect...
    for (let i = 0; i < LOOP_RETURNS - 1; i++) {
      assert.equal(guard.refuse(beat, peer, now++), null);
    }
    assert.match(guard.refuse(beat, peer, now) ?? "", /held back/);
    // ...then it goes on at its own pace, 20 ms apart: it does not wait for
    // us, so the held reply goes out with the next one, which is answered.
    for (let i = 0; i < 100; i++) {
      now += 20;
      assert.equal(guard.refuse(beat, peer, now), null, `beat ${i}`);
    }
    assert.deepEqual(late, [1]);
    assert.deepEqual(warnings, []);
  } finally {
    guard.close();
  }
});
