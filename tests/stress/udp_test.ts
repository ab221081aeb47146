/**
 * Faults and abuse, UDP side: udp.ts must stay up under a flood of
 * datagrams of every size, never send back more than it got (a UDP echo
 * that amplified could be used to attack others), and fail on junk command
 * lines and missing permissions with a plain `error:` line.
 *
 * Everything runs on loopback and is bounded in count and time. Figures for
 * the report are printed as `faults:` lines.
 */
import assert from "node:assert/strict";
import { figures } from "../lib/figures.ts";
import { junkRound, seededRandom } from "../lib/junk.ts";
import { delay, waitUntil } from "../lib/time.ts";
import {
  hasStackTrace,
  runScript,
  startScript,
  withTimeout,
} from "../lib/spawn.ts";
import {
  LOOP_RETURNS,
  MAX_UDP_PAYLOAD_IPV4,
  RECEIVE_BUFFER_SIZE,
} from "../../udp.ts";

/** A fresh `udp.ts send` of `message` to `port` is answered with it. */
async function assertAnswers(
  port: number,
  message: string,
  denoFlags?: string[],
): Promise<void> {
  const r = await runScript(
    "udp.ts",
    ["send", "--port", String(port), "--timeout", "5000", message],
    { denoFlags },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, message);
}

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };
const HOST = "127.0.0.1";

/** A one-line figure for the report (not an assertion). */
const figure = figures("faults");

// --- flood --------------------------------------------------------------------

/** Bytes every datagram's body is cut from (so replies can be checked). */
const PATTERN = (() => {
  const random = seededRandom(862);
  return Uint8Array.from(
    { length: MAX_UDP_PAYLOAD_IPV4 + 256 },
    () => Math.floor(random() * 256),
  );
})();
/** Datagrams of 8 bytes or more start with sender id and sequence number. */
const HEADER = 8;

/** The payload of datagram `seq` of sender `id`, `size` bytes long. */
function datagram(id: number, seq: number, size: number): Uint8Array {
  if (size < HEADER) return PATTERN.slice(0, size);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, id);
  view.setUint32(4, seq);
  out.set(PATTERN.subarray(seq % 256, seq % 256 + size - HEADER), HEADER);
  return out;
}

/**
 * Sizes for one sender: uniform over 0..65,507, with one datagram in ten
 * under 64 bytes (so the ones too short for a header are common too), and
 * both extremes, 0 and 65,507, every 1,000 datagrams.
 */
function floodSizes(count: number, random: () => number): number[] {
  const upTo = (max: number) => Math.floor(random() * (max + 1));
  return Array.from({ length: count }, (_, seq) => {
    if (seq % 1000 === 0) return MAX_UDP_PAYLOAD_IPV4;
    if (seq % 1000 === 1) return 0;
    return random() < 0.1 ? upTo(63) : upTo(MAX_UDP_PAYLOAD_IPV4);
  });
}

/** What one sender sent and got back. */
interface SenderReport {
  sent: number;
  bytesSent: number;
  replies: number;
  bytesBack: number;
  maxSizeBack: number;
  emptyBack: number;
  /** Replies that were not an unanswered datagram of ours, with why. */
  bad: string[];
}

/**
 * Send `sizes.length` datagrams to `port` from a socket of our own, at most
 * a window of them (in count and in bytes) unanswered at a time, and check
 * every reply against what was sent. A datagram lost on the way (the
 * kernel drops what a full socket buffer cannot hold) is written off after
 * a short wait, so the flood never stalls.
 */
async function floodSender(
  id: number,
  port: number,
  sizes: number[],
): Promise<SenderReport> {
  const WINDOW = 32;
  const WINDOW_BYTES = 96 * 1024;
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: HOST,
    port: 0,
  });
  const report: SenderReport = {
    sent: 0,
    bytesSent: 0,
    replies: 0,
    bytesBack: 0,
    maxSizeBack: 0,
    emptyBack: 0,
    bad: [],
  };
  const answered = new Uint8Array(sizes.length);
  // Datagrams under 8 bytes carry no sequence number: count them by size.
  const tinySent = new Array<number>(HEADER).fill(0);
  const tinyBack = new Array<number>(HEADER).fill(0);
  let outstanding = 0;
  let outstandingBytes = 0;
  const waiter: { wake?: () => void } = {};

  const check = (data: Uint8Array, from: Deno.Addr): string => {
    if (
      from.transport !== "udp" || from.hostname !== HOST || from.port !== port
    ) return `reply from ${JSON.stringify(from)}`;
    if (data.length < HEADER) {
      if (++tinyBack[data.length] > tinySent[data.length]) {
        return `more ${data.length}-byte replies than sent`;
      }
      return PATTERN.subarray(0, data.length).every((b, i) => data[i] === b)
        ? ""
        : `${data.length}-byte reply differs`;
    }
    const view = new DataView(data.buffer, data.byteOffset);
    const seq = view.getUint32(4);
    if (view.getUint32(0) !== id) return `reply of sender ${view.getUint32(0)}`;
    if (seq >= report.sent) return `reply to unsent datagram ${seq}`;
    if (sizes[seq] !== data.length) {
      return `datagram ${seq}: ${sizes[seq]} bytes sent, ${data.length} back`;
    }
    if (answered[seq]++) return `datagram ${seq} answered twice`;
    const body = PATTERN.subarray(seq % 256);
    for (let i = HEADER; i < data.length; i++) {
      if (data[i] !== body[i - HEADER]) return `datagram ${seq} differs`;
    }
    return "";
  };

  const receiver = (async () => {
    const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
    while (true) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        [data, from] = await socket.receive(buffer);
      } catch {
        return; // the socket was closed: the flood is over
      }
      const why = check(data, from);
      if (why) report.bad.push(why);
      report.replies++;
      report.bytesBack += data.length;
      if (data.length === MAX_UDP_PAYLOAD_IPV4) report.maxSizeBack++;
      if (data.length === 0) report.emptyBack++;
      outstanding = Math.max(0, outstanding - 1);
      outstandingBytes = Math.max(0, outstandingBytes - data.length - 64);
      waiter.wake?.();
    }
  })();

  /** Wait for a reply, or `ms`; false if none came (count them lost). */
  const waitForReply = (ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        waiter.wake = undefined;
        resolve(false);
      }, ms);
      waiter.wake = () => {
        clearTimeout(timer);
        waiter.wake = undefined;
        resolve(true);
      };
    });

  const server: Deno.NetAddr = { transport: "udp", hostname: HOST, port };
  try {
    for (let seq = 0; seq < sizes.length;) {
      const size = sizes[seq];
      if (
        outstanding > 0 &&
        (outstanding >= WINDOW || outstandingBytes + size > WINDOW_BYTES)
      ) {
        if (!await waitForReply(20)) {
          outstanding = 0; // lost on the way: write them off
          outstandingBytes = 0;
        }
        continue;
      }
      if (size < HEADER) tinySent[size]++;
      report.sent = seq + 1;
      await socket.send(datagram(id, seq, size), server);
      report.bytesSent += size;
      outstanding++;
      outstandingBytes += size + 64;
      seq++;
    }
    // The last replies: wait until none has come for a while.
    while (await waitForReply(200)) { /* more arrived */ }
  } finally {
    socket.close();
    await receiver;
  }
  return report;
}

Deno.test({
  name:
    "a flood of 100,000 datagrams of 0 to 65,507 bytes from 4 senders: udp.ts stays up, answers only with what each sender sent, never more",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("udp.ts", [
      "--port",
      "0",
      "--quiet",
    ]);
    const SENDERS = 4;
    const PER_SENDER = 25_000;
    const seed = Math.floor(Math.random() * 2 ** 32);
    const random = seededRandom(seed);
    const sizes = Array.from(
      { length: SENDERS },
      () => floodSizes(PER_SENDER, random),
    );
    const started = performance.now();
    const reports = await withTimeout(
      Promise.all(sizes.map((s, id) => floodSender(id, server.port, s))),
      120_000,
      () => "the flood did not finish within 120 s",
    );
    const floodMs = performance.now() - started;

    const sum = (f: (r: SenderReport) => number) =>
      reports.reduce((n, r) => n + f(r), 0);
    const sent = sum((r) => r.sent);
    const replies = sum((r) => r.replies);
    figure(
      `flood (seed ${seed}): ${sent} datagrams, ${
        (sum((r) => r.bytesSent) / 2 ** 20).toFixed(1)
      } MiB in ${(floodMs / 1000).toFixed(1)} s; ${replies} replies (${
        (100 * replies / sent).toFixed(1)
      }%), ${(sum((r) => r.bytesBack) / 2 ** 20).toFixed(1)} MiB; ${
        sum((r) => r.maxSizeBack)
      } of 65,507 bytes and ${sum((r) => r.emptyBack)} empty came back`,
    );
    assert.equal(sent, SENDERS * PER_SENDER);
    for (const [id, r] of reports.entries()) {
      assert.deepEqual(r.bad.slice(0, 5), [], `sender ${id}: bad replies`);
      assert.ok(
        r.bytesBack <= r.bytesSent,
        `sender ${id}: ${r.bytesBack} bytes back for ${r.bytesSent} sent`,
      );
    }
    // Loss is allowed (it is UDP), but an echo that answered almost nothing
    // would make the checks above empty.
    assert.ok(replies >= sent / 2, `only ${replies} of ${sent} answered`);
    assert.ok(sum((r) => r.maxSizeBack) > 0, "no 65,507-byte reply");
    assert.ok(sum((r) => r.emptyBack) > 0, "no empty reply");

    // Still serving: a fresh `udp.ts send` is answered.
    await assertAnswers(server.port, "after the flood");

    // And it stops cleanly, its totals agreeing: never more out than in.
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr.text());
    assert.equal(server.stderr.text(), "", "nothing on stderr");
    const summary = server.stdout.lines.at(-1) ?? "";
    const m =
      /^udp server stopped: (\d+) datagrams, (\d+) bytes in, (\d+) bytes out$/
        .exec(summary);
    assert.ok(m, `summary line: ${summary}`);
    const [datagrams, bytesIn, bytesOut] = m.slice(1).map(Number);
    figure(
      `flood: server counted ${datagrams} datagrams, ${bytesIn} bytes in, ${bytesOut} bytes out`,
    );
    assert.ok(bytesOut <= bytesIn, summary);
    assert.ok(datagrams <= sent + 1, summary);
    assert.ok(bytesIn <= sum((r) => r.bytesSent) + 15, summary);
  },
});

// --- in sequence ---------------------------------------------------------------

Deno.test({
  name: "1,000 datagrams in sequence on loopback: none lost",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("udp.ts", [
      "--port",
      "0",
      "--quiet",
    ]);
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: HOST,
      port: 0,
    });
    const to: Deno.NetAddr = {
      transport: "udp",
      hostname: HOST,
      port: server.port,
    };
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
        const got = await withTimeout(
          socket.receive(buffer),
          10_000,
          () => "lost",
        ).catch(() => null);
        if (got === null) break;
        const [reply] = got;
        assert.equal(reply.length, 64);
        assert.equal(
          new DataView(reply.buffer, reply.byteOffset).getUint32(0),
          i,
          `reply ${i} out of step`,
        );
        answered++;
      }
    } finally {
      socket.close();
    }
    figure(`${sent} datagrams sent in sequence, ${answered} echoed back`);
    assert.equal(answered, 1000, `lost after ${answered} of ${sent}`);
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0);
    // --quiet: no per-datagram lines, only the listening line and the summary.
    assert.deepEqual(server.stdout.lines.slice(1), [
      "udp server stopped: 1000 datagrams, 64000 bytes in, 64000 bytes out",
    ]);
  },
});

// --- echo loops ------------------------------------------------------------------

Deno.test({
  name:
    "50 loops at once between two udp.ts servers (50 datagrams to B 'from' A) all end, within a bounded number of datagrams",
  ...SANITIZE,
  async fn() {
    // B is paused while a socket on port P sends it 50 different datagrams;
    // that socket closes, A starts on P, B goes on and answers them all to A.
    await using b = await startScript("udp.ts", ["--port", "0", "--quiet"]);
    const fake = Deno.listenDatagram({
      transport: "udp",
      hostname: HOST,
      port: 0,
    });
    const port = (fake.addr as Deno.NetAddr).port;
    const LOOPS = 50;
    b.child.kill("SIGSTOP");
    try {
      for (let i = 0; i < LOOPS; i++) {
        const payload = crypto.getRandomValues(new Uint8Array(32));
        await fake.send(payload, {
          transport: "udp",
          hostname: HOST,
          port: b.port,
        });
      }
    } finally {
      fake.close();
    }
    await using a = await startScript("udp.ts", [
      "--port",
      String(port),
      "--quiet",
    ]).finally(() => b.child.kill("SIGCONT"));
    const loop = /echo loop/;
    const started = performance.now();
    await withTimeout(
      Promise.race([a.stderr.waitFor(loop), b.stderr.waitFor(loop)]),
      30_000,
      () => "no loop warning within 30 s",
    );
    const ms = performance.now() - started;
    await a.stop("SIGTERM");
    await b.stop("SIGTERM");
    const count = (s: typeof a) =>
      Number(
        /^udp server stopped: (\d+) datagrams/.exec(s.stdout.lines.at(-1) ?? "")
          ?.[1],
      );
    const total = count(a) + count(b);
    figure(
      `${LOOPS} loops between two servers: stopped after ${total} datagrams, ${
        ms.toFixed(0)
      } ms; warnings: ${[...a.stderr.lines, ...b.stderr.lines].join(" | ")}`,
    );
    assert.ok(
      total <= LOOPS * 2 * (LOOP_RETURNS + 2),
      `${total} datagrams went round`,
    );
    assert.ok(a.stderr.lines.length + b.stderr.lines.length <= 2);
  },
});

// --- junk command lines ------------------------------------------------------

Deno.test({
  name:
    "junk command lines: udp.ts exits 0, 1 or 2 with an error line, never a stack trace or a hang",
  ...SANITIZE,
  async fn() {
    const denoFlags = ["--allow-net=127.0.0.1", "--unstable-net"];
    const flags = [
      "serve",
      "send",
      "--hostname",
      "--port",
      "--timeout",
      "--quiet",
      "--trace",
      "--hex",
      "--chunk",
      "--delay",
      "--help",
      "-h",
    ];
    const round = await junkRound("udp.ts", flags, 200, denoFlags);
    figure(round.summary);
    assert.deepEqual(round.problems, [], round.summary);
    await using server = await startScript("udp.ts", ["--port", "0"], {
      denoFlags,
    });
    await assertAnswers(server.port, "still here", denoFlags);
  },
});

// --- permissions -------------------------------------------------------------

Deno.test({
  name:
    "under --allow-net=127.0.0.1, udp.ts serving or sending outside the grant is one error: line naming the permission, exit 1",
  ...SANITIZE,
  async fn() {
    const denoFlags = ["--allow-net=127.0.0.1", "--unstable-net"];
    const cases: [string[], RegExp][] = [
      [["--hostname", "0.0.0.0", "--port", "0"], /0\.0\.0\.0/],
      [["serve", "--hostname", "::", "--port", "0"], /\[::\]/],
      [["--hostname", "::1", "--port", "0"], /\[::1\]/],
      [["send", "--hostname", "::1", "--port", "7", "hi"], /\[::1\]/],
      [["send", "--hostname", "10.0.0.1", "--port", "7", "hi"], /10\.0\.0\.1/],
      [["send", "--hostname", "localhost", "--port", "7", "hi"], /localhost/],
    ];
    for (const [args, names] of cases) {
      const what = `udp.ts ${args.join(" ")}`;
      const r = await runScript("udp.ts", args, {
        denoFlags,
        timeoutMs: 10_000,
      });
      assert.equal(r.code, 1, `${what}: exit code; stderr:\n${r.stderr}`);
      assert.ok(!hasStackTrace(r.stderr), `${what}: stack trace:\n${r.stderr}`);
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `${what}: one line:\n${r.stderr}`);
      assert.match(lines[0], /^error: .*(permission|allow).*--allow-net=/i);
      assert.match(lines[0], names, what);
      assert.equal(r.out, "", `${what}: nothing on stdout`);
    }
    // Inside the grant both work: the narrow permission is enough.
    await using server = await startScript("udp.ts", ["--port", "0"], {
      denoFlags,
    });
    await assertAnswers(server.port, "inside the grant", denoFlags);
  },
});

// --- the loop guard and a slow client ----------------------------------------

Deno.test({
  name:
    "a liveness probe that sends the same 'ping' 10 times a second, each after its reply, is answered 50 times out of 50, with no warning",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("udp.ts", ["--port", "0"]);
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: HOST,
      port: 0,
    });
    const to: Deno.NetAddr = {
      transport: "udp",
      hostname: HOST,
      port: server.port,
    };
    const ping = new TextEncoder().encode("ping");
    let answered = 0;
    try {
      for (let i = 0; i < 50; i++) {
        if (i > 0) await delay(100);
        await socket.send(ping, to);
        const [reply] = await withTimeout(
          socket.receive(),
          10_000,
          () => `ping ${i}: no reply (${answered} answered)`,
        );
        assert.deepEqual(reply, ping);
        answered++;
      }
    } finally {
      socket.close();
    }
    figure(`10 pings a second: ${answered} of 50 answered`);
    assert.equal(answered, 50);
    await server.stop("SIGTERM");
    assert.equal(server.stderr.text(), "");
    assert.equal(
      server.stdout.lines.at(-1),
      "udp server stopped: 50 datagrams, 200 bytes in, 200 bytes out",
    );
  },
});

Deno.test("udp.ts on 0.0.0.0 whose replies Deno forbids, sent to by 1,100 peers in turn twice: stderr stays bounded (one warning for each of the first 1,024 peers, one line saying the rest are only counted), and the summary counts all 2,200", async () => {
  const PEERS = 1100;
  await using server = await startScript("udp.ts", [
    "--hostname",
    "0.0.0.0",
    "--port",
    "0",
  ], { denoFlags: ["--allow-net=0.0.0.0", "--unstable-net"] });
  const to: Deno.NetAddr = {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.port,
  };
  const sockets = Array.from(
    { length: PEERS },
    () =>
      Deno.listenDatagram({ transport: "udp", hostname: to.hostname, port: 0 }),
  );
  const logged = () =>
    server.stdout.lines.filter((l) => l.startsWith("udp datagram ")).length;
  try {
    let sent = 0;
    for (let round = 0; round < 2; round++) {
      for (const s of sockets) {
        await s.send(new TextEncoder().encode("hi"), to);
        // In steps of 100, as fast as the server logs them: none dropped.
        if (++sent % 100 === 0) {
          await waitUntil(
            () => logged() >= sent,
            20_000,
            () => `${logged()} of ${sent} datagrams logged`,
          );
        }
      }
    }
  } finally {
    for (const s of sockets) s.close();
  }
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr.text());
  const lines = server.stderr.lines;
  figure(`forbidden replies, ${PEERS} peers twice: ${lines.length} lines`);
  assert.equal(lines.length, 1025, lines.slice(-3).join("\n"));
  assert.match(
    lines.at(-1) ?? "",
    /^warning: replies to 1024 peers failed; failures to any other peer are counted in the summary only$/,
  );
  assert.match(
    server.stdout.lines.at(-1) ?? "",
    /^udp server stopped: 2200 datagrams, .*, 2200 replies forbidden by Deno's permissions$/,
  );
  assert.ok(!hasStackTrace(server.stderr.text()));
});
