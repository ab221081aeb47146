/**
 * bench/load.ts: a load-generator process for `deno task bench`: the TCP
 * stream, UDP round trips and the many-connection load. (TCP round trips
 * come from bench/fair_load.mjs instead: one process on `node:net` can drive
 * 500 busy connections, where a Deno process on `Deno.connect` driving more
 * than 128 busy connections starves some of them itself, by the mechanism
 * bench/README.md describes. The `rr` mode below stays for comparison, kept
 * at 125 connections per process.) Each process:
 *
 * 1. sets up (opens its connections or sockets), prints `ready`;
 * 2. waits for a `go` line on stdin, runs the load;
 * 3. prints `result {JSON}`, and exits when stdin ends (`hold` keeps its
 *    connections open until then).
 *
 *   load.ts stream --port P --bytes N         one connection, N bytes through
 *   load.ts stream --path PATH --bytes N      the same over a Unix socket
 *   load.ts rr     --port P --conns C --seconds S [--size B]   TCP ping-pong
 *   load.ts udp    --port P --sockets K --seconds S --size B   UDP ping-pong
 *   load.ts hold   --port P --conns C        open C connections, one echo each
 */

import { randomBytes } from "../tests/lib/bytes.ts";
import { writeAll } from "../tests/lib/net.ts";
import { delay } from "../tests/lib/time.ts";

const HOST = "127.0.0.1";

interface Args {
  mode: string;
  /** A Unix socket's path instead of 127.0.0.1:port (stream only). */
  path: string;
  port: number;
  bytes: number;
  conns: number;
  sockets: number;
  seconds: number;
  size: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    mode: argv[0] ?? "",
    path: "",
    port: 0,
    bytes: 0,
    conns: 1,
    sockets: 1,
    seconds: 1,
    size: 64,
  };
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (key === "path" && argv[i + 1]) {
      args.path = argv[i + 1];
      continue;
    }
    const value = Number(argv[i + 1]);
    if (
      !(key in args) || key === "mode" || key === "path" ||
      !Number.isFinite(value)
    ) {
      throw new Error(`load.ts: bad argument ${argv[i]} ${argv[i + 1]}`);
    }
    (args as unknown as Record<string, number>)[key] = value;
  }
  return args;
}

// ---------------------------------------------------------------------------
// Latency histogram: 16 buckets per power of two of microseconds (about 4%
// resolution), cheap to fill and to merge across worker processes.

const BUCKETS_PER_OCTAVE = 16;

/** A latency histogram; `counts[i]` samples fell in bucket i. */
export class Histogram {
  counts: number[] = [];
  add(ms: number): void {
    const us = ms * 1000;
    const i = us < 1 ? 0 : Math.floor(Math.log2(us) * BUCKETS_PER_OCTAVE) + 1;
    while (this.counts.length <= i) this.counts.push(0);
    this.counts[i]++;
  }
}

/** The `q` quantile (0..1) of merged histograms, in milliseconds. */
export function quantileMs(histograms: number[][], q: number): number {
  const merged: number[] = [];
  for (const h of histograms) {
    h.forEach((n, i) => merged[i] = (merged[i] ?? 0) + n);
  }
  const total = merged.reduce((a, b) => a + (b ?? 0), 0);
  if (total === 0) return NaN;
  let seen = 0;
  for (let i = 0; i < merged.length; i++) {
    seen += merged[i] ?? 0;
    if (seen >= q * total) {
      // The middle of the bucket, in ms.
      return i === 0 ? 0.0005 : 2 ** ((i - 0.5) / BUCKETS_PER_OCTAVE) / 1000;
    }
  }
  return NaN;
}

// ---------------------------------------------------------------------------

const encoder = new TextEncoder();

function print(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/** Lines from stdin, for the `go` signal and the end of `hold`. */
async function* stdinLines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of Deno.stdin.readable) {
    text += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = text.indexOf("\n")) >= 0) {
      yield text.slice(0, nl);
      text = text.slice(nl + 1);
    }
  }
}

/** Whether x[xi..xi+n) equals y[yi..yi+n). xi and yi agree modulo 4. */
function sameBytes(
  x: Uint8Array,
  xi: number,
  y: Uint8Array,
  yi: number,
  n: number,
): boolean {
  let k = 0;
  // Bytes up to a 4-byte boundary, then 4 bytes at a time, then the rest.
  while (k < n && ((x.byteOffset + xi + k) & 3) !== 0) {
    if (x[xi + k] !== y[yi + k]) return false;
    k++;
  }
  const words = (n - k) >> 2;
  if (words > 0) {
    const xw = new Int32Array(x.buffer, x.byteOffset + xi + k, words);
    const yw = new Int32Array(y.buffer, y.byteOffset + yi + k, words);
    for (let w = 0; w < words; w++) if (xw[w] !== yw[w]) return false;
    k += words * 4;
  }
  for (; k < n; k++) if (x[xi + k] !== y[yi + k]) return false;
  return true;
}

// ---------------------------------------------------------------------------

/**
 * stream: send `bytes` of a random pattern while reading the echo back,
 * check every byte against the pattern, half-close, read to the end.
 */
async function stream(args: Args, go: Promise<void>) {
  // The pattern repeats every PERIOD bytes: a multiple of 4 (so received
  // chunks can be compared 4 bytes at a time) that is not a power of two (so
  // it never lines up with the servers' buffer sizes).
  const PERIOD = (1 << 20) + 12;
  const CHUNK = 256 * 1024;
  const pattern = new Uint8Array(2 * PERIOD);
  pattern.set(randomBytes(PERIOD));
  pattern.copyWithin(PERIOD, 0, PERIOD);
  const conn = args.path
    ? await Deno.connect({ transport: "unix", path: args.path })
    : await Deno.connect({ hostname: HOST, port: args.port });
  print("ready");
  await go;
  const t0 = performance.now();
  const sending = (async () => {
    let sent = 0;
    while (sent < args.bytes) {
      const at = sent % PERIOD;
      const n = Math.min(CHUNK, args.bytes - sent);
      sent += await conn.write(pattern.subarray(at, at + n));
    }
    await conn.closeWrite(); // all sent: the server echoes the rest, closes
  })();
  // Read into the buffer at the same offset modulo 4 as the pattern.
  const buf = new Uint8Array(CHUNK + 4);
  let received = 0;
  let mismatchAt = -1;
  while (true) {
    const a = received & 3;
    const n = await conn.read(buf.subarray(a, a + CHUNK));
    if (n === null) break;
    if (
      mismatchAt < 0 && !sameBytes(buf, a, pattern, received % PERIOD, n)
    ) {
      mismatchAt = received;
    }
    received += n;
  }
  const ms = performance.now() - t0;
  await sending;
  conn.close();
  return {
    sent: args.bytes,
    received,
    ms,
    verified: mismatchAt < 0 && received === args.bytes,
    mismatchAt,
  };
}

/**
 * rr: `conns` connections, each in a loop: write `size` bytes, read them
 * back, check them, count one round trip. Connections that get stuck (no
 * reply) are closed 2 s after the end and reported with their count.
 */
async function roundTrips(args: Args, go: Promise<void>) {
  const conns = await Promise.all(
    Array.from({ length: args.conns }, async () => {
      const conn = await Deno.connect({ hostname: HOST, port: args.port });
      conn.setNoDelay(true); // send each small request at once
      return conn;
    }),
  );
  print("ready");
  await go;
  const histogram = new Histogram();
  const counts = new Array<number>(args.conns).fill(0);
  let errors = 0;
  let firstError = "";
  let running = true;
  const t0 = performance.now();
  const deadline = t0 + args.seconds * 1000;
  const loops = conns.map(async (conn, i) => {
    const request = randomBytes(args.size);
    const reply = new Uint8Array(args.size);
    try {
      while (running && performance.now() < deadline) {
        const start = performance.now();
        await writeAll(conn, request);
        let got = 0;
        while (got < args.size) {
          const n = await conn.read(reply.subarray(got));
          if (n === null) throw new Error("server closed the connection");
          got += n;
        }
        if (!sameBytes(reply, 0, request, 0, args.size)) {
          throw new Error("echo differs from the request");
        }
        histogram.add(performance.now() - start);
        counts[i]++;
      }
    } catch (err) {
      if (running) {
        errors++;
        firstError ||= (err as Error).message;
      }
    }
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(loops),
    new Promise((r) => timer = setTimeout(r, args.seconds * 1000 + 2000)),
  ]);
  clearTimeout(timer);
  running = false;
  const seconds = (Math.min(performance.now(), deadline) - t0) / 1000;
  for (const conn of conns) conn.close(); // ends any loop still waiting
  await Promise.all(loops);
  return { seconds, counts, histogram: histogram.counts, errors, firstError };
}

/**
 * udp: `sockets` sockets, each in a loop: send a datagram carrying a
 * sequence number, wait for the same bytes back. A reply that has not come
 * within LOSS_MS counts as lost and the next datagram goes out.
 */
async function udpRoundTrips(args: Args, go: Promise<void>) {
  const LOSS_MS = 200;
  const server: Deno.NetAddr = {
    transport: "udp",
    hostname: HOST,
    port: args.port,
  };
  const histogram = new Histogram();
  let received = 0;
  let lost = 0;
  let wrong = 0;
  let running = true;
  const states = Array.from({ length: args.sockets }, () => {
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: HOST,
      port: 0,
    });
    const payload = randomBytes(args.size);
    return { socket, payload, seq: 0, sentAt: 0 };
  });
  type State = (typeof states)[number];
  const send = (s: State) => {
    s.seq++;
    if (s.payload.length >= 4) {
      new DataView(s.payload.buffer).setUint32(0, s.seq);
    }
    s.sentAt = performance.now();
    s.socket.send(s.payload, server).catch(() => {});
  };
  print("ready");
  await go;
  const t0 = performance.now();
  const deadline = t0 + args.seconds * 1000;
  const loops = states.map(async (s) => {
    const buf = new Uint8Array(65_536); // never truncate a datagram
    send(s);
    try {
      while (running) {
        const [data] = await s.socket.receive(buf);
        if (
          data.length !== s.payload.length ||
          !sameBytes(data, 0, s.payload, 0, data.length)
        ) {
          wrong++; // a late reply to a datagram counted lost, or damage
          continue;
        }
        const now = performance.now();
        if (now > deadline) break;
        histogram.add(now - s.sentAt);
        received++;
        send(s);
      }
    } catch {
      // the socket was closed at the end
    }
  });
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const s of states) {
      if (now - s.sentAt > LOSS_MS && now < deadline) {
        lost++;
        send(s);
      }
    }
  }, 20);
  await delay(args.seconds * 1000);
  clearInterval(watchdog);
  running = false;
  const seconds = (performance.now() - t0) / 1000;
  for (const s of states) s.socket.close();
  await Promise.all(loops);
  // Late replies are counted as lost, not as wrong bytes.
  return { seconds, received, lost, wrong, histogram: histogram.counts };
}

/**
 * hold: open `conns` connections (at most 100 connecting at a time per
 * worker, 400 for four, under the listen queue of 511, so that a full queue
 * does not turn into 1 s SYN retries), echo 64 bytes once on
 * each, report, then keep them all open until stdin ends.
 */
async function hold(args: Args, go: Promise<void>, end: Promise<void>) {
  print("ready");
  await go;
  const t0 = performance.now();
  const conns: Deno.TcpConn[] = [];
  let failed = 0;
  let firstError = "";
  let next = 0;
  const request = randomBytes(64);
  const reply = new Uint8Array(64);
  const opener = async () => {
    while (next < args.conns) {
      next++;
      try {
        const conn = await Deno.connect({ hostname: HOST, port: args.port });
        conns.push(conn);
        await writeAll(conn, request);
        let got = 0;
        while (got < 64) {
          const n = await conn.read(reply.subarray(got));
          if (n === null) throw new Error("closed by the server");
          got += n;
        }
      } catch (err) {
        failed++;
        firstError ||= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(100, args.conns) }, opener));
  const ms = performance.now() - t0;
  print(
    "result " +
      JSON.stringify({ opened: conns.length - failed, failed, firstError, ms }),
  );
  await end;
  for (const conn of conns) {
    try {
      conn.close();
    } catch { /* closed after a failure */ }
  }
}

async function main() {
  const args = parseArgs(Deno.args);
  const lines = stdinLines();
  const go = lines.next().then(() => {});
  const end = go.then(async () => {
    while (!(await lines.next()).done) { /* wait for the end of stdin */ }
  });
  let result: unknown;
  switch (args.mode) {
    case "stream":
      result = await stream(args, go);
      break;
    case "rr":
      result = await roundTrips(args, go);
      break;
    case "udp":
      result = await udpRoundTrips(args, go);
      break;
    case "hold":
      await hold(args, go, end);
      return;
    default:
      throw new Error(`load.ts: unknown mode ${JSON.stringify(args.mode)}`);
  }
  print("result " + JSON.stringify(result));
  await end; // bench.ts reads our CPU time before it lets us go
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
