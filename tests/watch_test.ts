/**
 * watch.ts: its /proc parsers on fixture lines (IPv4 and IPv6, every TCP
 * state, UDP), and live against sockets this test makes: a connection seen
 * ESTABLISHED, then TIME_WAIT on the side that closed first; a listener
 * that never accepts, whose queue fills until the kernel counts
 * ListenOverflows; the piped output format; bad flags.
 */
import assert from "node:assert/strict";
import {
  changes,
  counterChanges,
  parseAddress,
  parseCounters,
  parseSocketTable,
  parseWatchArgs,
  splitProcFiles,
} from "../watch.ts";
import { commandFor, runScript, spawnChild } from "./lib/spawn.ts";

/** How watch.ts is run: the grant its header shows. */
const WATCH_FLAGS = ["--allow-run=cat"];

const TCP_HEADER =
  "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
const TCP6_HEADER =
  "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
const UDP_HEADER =
  "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops";

Deno.test("watch.ts reads IPv4 and IPv6 addresses in the kernel's byte order", () => {
  assert.deepEqual(parseAddress("0100007F:2328"), ["127.0.0.1", 9000]);
  assert.deepEqual(parseAddress("00000000:0000"), ["0.0.0.0", 0]);
  assert.deepEqual(parseAddress("0100A8C0:0050"), ["192.168.0.1", 80]);
  assert.deepEqual(
    parseAddress("00000000000000000000000001000000:C66E"),
    ["::1", 50798],
  );
  assert.deepEqual(
    parseAddress("00000000000000000000000000000000:1F90"),
    ["::", 8080],
  );
  assert.deepEqual(
    parseAddress("0000000000000000FFFF00000100007F:2328"),
    ["::ffff:127.0.0.1", 9000],
  );
  assert.deepEqual(
    parseAddress("B80D0120000000000000000001000000:01BB"),
    ["2001:db8::1", 443],
  );
});

Deno.test("watch.ts names every TCP state, the queues and the TIME_WAIT timer from /proc/net/tcp lines", () => {
  const states = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
  ];
  const lines = states.map((_, i) =>
    `   ${i}: 0100007F:2328 0100007F:C350 ${
      (i + 1).toString(16).toUpperCase().padStart(2, "0")
    } 00000010:00000020 00:00000000 00000000     0        0 1234 1 0000000000000000 20 4 30 10 -1`
  );
  const rows = parseSocketTable("tcp", [TCP_HEADER, ...lines, ""].join("\n"));
  assert.deepEqual(rows.map((r) => r.state), states);
  assert.equal(rows[0].local, "127.0.0.1:9000");
  assert.equal(rows[0].remote, "127.0.0.1:50000");
  assert.equal(rows[0].sendQ, 16);
  assert.equal(rows[0].recvQ, 32);
  const timeWait = parseSocketTable(
    "tcp",
    `${TCP6_HEADER}\n   0: 00000000000000000000000001000000:C66E 00000000000000000000000001000000:8FA5 06 00000000:00000000 03:000004CC 00000000     0        0 0 3 000000009170326e\n`,
  );
  assert.equal(timeWait[0].state, "TIME_WAIT");
  assert.equal(timeWait[0].local, "[::1]:50798");
  assert.equal(timeWait[0].remote, "[::1]:36773");
  assert.equal(timeWait[0].timer, "timewait 12.3s");
});

Deno.test("watch.ts shows an unconnected UDP socket as UNCONN, with its drops", () => {
  const rows = parseSocketTable(
    "udp",
    `${UDP_HEADER}\n  123: 0100007F:2328 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n`,
  );
  assert.equal(rows[0].state, "UNCONN");
  assert.equal(rows[0].recvQ, 0x34000);
  assert.equal(rows[0].drops, 17);
});

Deno.test("watch.ts reads the kernel's counters and says which moved", () => {
  const before = parseCounters(
    "Tcp: RtoAlgorithm ActiveOpens RetransSegs\nTcp: 1 10 5\nUdp: InDatagrams RcvbufErrors\nUdp: 7 0\n",
  );
  const after = parseCounters(
    "Tcp: RtoAlgorithm ActiveOpens RetransSegs\nTcp: 1 12 5\nUdp: InDatagrams RcvbufErrors\nUdp: 7 3\nTcpExt: ListenOverflows\nTcpExt: 1\n",
  );
  assert.equal(after.get("TcpActiveOpens"), 12);
  assert.equal(after.get("TcpExtListenOverflows"), 1);
  const moved = counterChanges(before, after);
  assert.deepEqual(moved.map((l) => l.split(" (")[0]), [
    "TcpExtListenOverflows +1",
    "TcpActiveOpens +2",
    "UdpRcvbufErrors +3",
  ]);
});

Deno.test("watch.ts tells a socket pair that changed state from a new one and a gone one", () => {
  const row = (state: string, remote = "127.0.0.1:50000") => ({
    proto: "tcp" as const,
    local: "127.0.0.1:9000",
    remote,
    localPort: 9000,
    remotePort: Number(remote.split(":")[1]),
    state,
    recvQ: 0,
    sendQ: 0,
    timer: "",
    drops: 0,
  });
  assert.deepEqual(
    changes([row("ESTABLISHED"), row("ESTABLISHED", "127.0.0.1:50001")], [
      row("TIME_WAIT"),
      row("SYN_RECV", "127.0.0.1:50002"),
    ]),
    [
      "tcp 127.0.0.1:9000 <-> 127.0.0.1:50000 ESTABLISHED -> TIME_WAIT",
      "tcp 127.0.0.1:9000 <-> 127.0.0.1:50002 SYN_RECV",
      "tcp 127.0.0.1:9000 <-> 127.0.0.1:50001 ESTABLISHED -> gone",
    ],
  );
});

Deno.test("watch.ts splits cat's output back into its files by their headers", () => {
  const row = (st: string) =>
    `   0: 0100007F:2328 00000000:0000 ${st} 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 0`;
  const files = splitProcFiles(
    [
      TCP_HEADER,
      row("0A"),
      TCP6_HEADER,
      UDP_HEADER,
      row("07"),
      "Tcp: ActiveOpens",
      "Tcp: 3",
      "TcpExt: ListenOverflows",
      "TcpExt: 2",
      "",
    ].join("\n"),
    ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/snmp"],
  );
  assert.equal(parseSocketTable("tcp", files.get("/proc/net/tcp")!).length, 1);
  assert.equal(parseSocketTable("tcp", files.get("/proc/net/tcp6")!).length, 0);
  assert.equal(
    parseSocketTable("udp", files.get("/proc/net/udp")!)[0].state,
    "UNCONN",
  );
  const counters = parseCounters(files.get("/proc/net/snmp")!);
  assert.equal(counters.get("TcpExtListenOverflows"), 2);
});

Deno.test("watch.ts bad flags are usage errors", async () => {
  assert.throws(() => parseWatchArgs(["--port", "0"]), /--port must be/);
  assert.throws(() => parseWatchArgs(["--interval", "0"]), /--interval/);
  const r = await runScript("watch.ts", ["--port", "abc"], {
    denoFlags: WATCH_FLAGS,
  });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^error: --port must be .*\n\nusage: /);
});

Deno.test("watch.ts without a grant to read /proc says what to run, exit 1", async () => {
  const r = await runScript("watch.ts", ["--port", "9"], {
    denoFlags: ["--no-prompt"],
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: .*--allow-run=cat/);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
});

/** Start watch.ts on `port`, piped, looking every 10 ms. */
async function startWatch(port: number) {
  const watch = spawnChild(
    commandFor("watch.ts", ["--port", String(port), "--interval", "10"], {
      denoFlags: WATCH_FLAGS,
    }, { stdin: "null" }),
    "watch.ts",
  );
  await watch.waitForLine(/^watching tcp and udp port \d+ every 10 ms/, 20_000);
  return watch;
}

const TIME = String.raw`\d\d:\d\d:\d\d\.\d{3}`;

Deno.test({
  name:
    "watch.ts sees a connection ESTABLISHED, then TIME_WAIT on the side that closed first only",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    await using watch = await startWatch(port);
    await watch.waitForLine(
      new RegExp(
        `^${TIME} tcp 127\\.0\\.0\\.1:${port} <-> 0\\.0\\.0\\.0:0 LISTEN accept queue 0$`,
      ),
    );
    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    const server = await listener.accept();
    const c = client.localAddr.port;
    const clientPair = `tcp 127\\.0\\.0\\.1:${c} <-> 127\\.0\\.0\\.1:${port}`;
    const serverPair = `tcp 127\\.0\\.0\\.1:${port} <-> 127\\.0\\.0\\.1:${c}`;
    await watch.waitForLine(new RegExp(`^${TIME} ${clientPair} ESTABLISHED$`));
    await watch.waitForLine(new RegExp(`^${TIME} ${serverPair} ESTABLISHED$`));
    // The client closes first (its FIN), then the server (after reading
    // the end): the client's side keeps the pair in TIME_WAIT.
    client.close();
    assert.equal(await server.read(new Uint8Array(1)), null);
    server.close();
    const tw = await watch.waitForLine(
      new RegExp(
        `^${TIME} ${clientPair} \\S+ -> TIME_WAIT \\(timewait \\d+\\.\\ds\\)$`,
      ),
    );
    assert.ok(tw);
    await watch.waitForLine(new RegExp(`^${TIME} ${serverPair} \\S+ -> gone$`));
    const status = await watch.stop("SIGINT");
    assert.equal(status.code, 0, watch.stderr.text());
    const out = watch.stdout.text();
    assert.doesNotMatch(out, new RegExp(`${serverPair} .*TIME_WAIT`));
    assert.match(
      out,
      /^watch stopped after \d+\.\d s: \d+ socket changes; counters \(this network namespace, every port\): .*TcpActiveOpens \+\d+/m,
    );
  },
});

Deno.test({
  name:
    "watch.ts shows a listener's accept queue fill to backlog + 1, then the kernel counts TcpExtListenOverflows",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    // backlog 1, and nobody calls accept(): the queue fills.
    using listener = Deno.listen({
      hostname: "127.0.0.1",
      port: 0,
      tcpBacklog: 1,
    });
    const port = listener.addr.port;
    await using watch = await startWatch(port);
    await watch.waitForLine(new RegExp(`LISTEN accept queue 0$`));
    const giveUp = new AbortController();
    const connects = Array.from(
      { length: 4 },
      () =>
        Deno.connect({ hostname: "127.0.0.1", port, signal: giveUp.signal })
          .then((conn) => conn, () => undefined),
    );
    try {
      await watch.waitForLine(
        new RegExp(
          `^${TIME} tcp 127\\.0\\.0\\.1:${port} <-> 0\\.0\\.0\\.0:0 LISTEN accept queue 2$`,
        ),
      );
      // The third and fourth SYN find the queue full: dropped, and counted
      // (the clients' kernels send them again a second later).
      await watch.waitForLine(
        /^\d\d:\d\d:\d\d\.\d{3} counter TcpExtListenOverflows \+\d+ \(connections dropped: an accept queue was full\)$/,
      );
    } finally {
      giveUp.abort();
      for (const conn of await Promise.all(connects)) conn?.close();
    }
    assert.equal((await watch.stop("SIGINT")).code, 0);
  },
});
