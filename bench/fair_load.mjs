/**
 * bench/fair_load.mjs: TCP ping-pong on many connections from ONE process,
 * the load that can see a server starve some of its connections.
 *
 *   node bench/fair_load.mjs --port 9000 --conns 500 --seconds 5
 *   deno run --allow-net=127.0.0.1 bench/fair_load.mjs --port 9000 ...
 *   node bench/fair_load.mjs --path /tmp/echo.sock ...   (a Unix socket)
 *
 * Every connection loops: write SIZE bytes (64 by default), read them back,
 * check them, count one round trip, write again. It runs on `node:net`
 * (Node's libuv, or Deno's node:net, which reads through a FIFO ready queue):
 * one process serves all its sockets in turn, fast enough to drive 500 busy
 * connections without starving any of them itself (a Deno process using
 * `Deno.connect` would: the very problem it looks for).
 *
 * It prints, over the window: round trips, Jain's fairness index over the
 * round trips of each connection (1 = every connection got the same share,
 * 1/n = one got everything), how many connections got no reply at all, and
 * the longest any request waited unanswered (requests still waiting at the
 * end count with their age then).
 *
 * With `--wait-go` (how bench.ts runs it) it connects, prints `ready`,
 * starts on a `go` line on stdin, prints `result {JSON}` and exits when
 * stdin ends. Without it, it starts at once and prints a summary.
 */
import net from "node:net";
import process from "node:process";
import {
  isMainThread,
  parentPort,
  Worker,
  workerData,
} from "node:worker_threads";
import { Buffer } from "node:buffer";
import { randomFillSync } from "node:crypto";

const USAGE =
  "usage: fair_load.mjs --port N [--host H] | --path P [--conns C] " +
  "[--seconds S] [--size B] [--depth D] [--threads T] [--wait-go]";

function parse(argv) {
  const a = {
    host: "127.0.0.1",
    path: "",
    port: 0,
    conns: 500,
    seconds: 5,
    size: 64,
    depth: 1,
    threads: 1,
  };
  let waitGo = false;
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, "");
    if (key === "wait-go") {
      waitGo = true;
    } else if ((key === "host" || key === "path") && i + 1 < argv.length) {
      a[key] = argv[++i];
    } else if (key in a && /^\d+(\.\d+)?$/.test(argv[i + 1] ?? "")) {
      a[key] = Number(argv[++i]);
    } else {
      console.error(`error: bad argument ${argv[i]}\n${USAGE}`);
      process.exit(2);
    }
  }
  const port = a.path ? 1 : a.port; // a Unix socket has no port
  if (![port, a.conns, a.size, a.depth, a.threads].every((v) => v > 0)) {
    console.error(
      `error: --port (or --path), --conns, --size, --depth, --threads: > 0\n${USAGE}`,
    );
    process.exit(2);
  }
  return { ...a, waitGo };
}

/** 16 buckets per power of two of microseconds, as bench/load.ts's. */
const BUCKETS_PER_OCTAVE = 16;

function bucket(ms) {
  const us = ms * 1000;
  return us < 1 ? 0 : Math.floor(Math.log2(us) * BUCKETS_PER_OCTAVE) + 1;
}

/** Lines of stdin, one promise per `next()`; null at the end. */
function stdinLines() {
  let text = "";
  const lines = [];
  const waiting = [];
  let ended = false;
  const flush = () => {
    while (waiting.length > 0 && (lines.length > 0 || ended)) {
      waiting.shift()(lines.length > 0 ? lines.shift() : null);
    }
  };
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (s) => {
    text += s;
    let nl;
    while ((nl = text.indexOf("\n")) >= 0) {
      lines.push(text.slice(0, nl));
      text = text.slice(nl + 1);
    }
    flush();
  });
  process.stdin.on("end", () => {
    ended = true;
    flush();
  });
  return () =>
    new Promise((resolve) => {
      waiting.push(resolve);
      flush();
    });
}

function connectAll(args) {
  return Promise.all(
    Array.from({ length: args.conns }, () =>
      new Promise((resolve, reject) => {
        // `onread` hands each read to `s.onData` with one reused buffer,
        // skipping the stream machinery: the client must be faster than the
        // server, or the server never has many sockets ready at once.
        const holder = { onData: () => true };
        const socket = net.connect({
          ...(args.path ? { path: args.path } : {
            host: args.host,
            port: args.port,
          }),
          onread: {
            buffer: Buffer.alloc(64 * 1024),
            callback: (n, buf) => holder.onData(n, buf),
          },
        });
        socket.holder = holder;
        // Each small request goes out at once (TCP; a Unix socket has no
        // Nagle to turn off, and Node ignores it there).
        socket.setNoDelay(true);
        socket.once("connect", () => {
          socket.off("error", reject);
          resolve(socket);
        });
        socket.once("error", reject);
      })),
  );
}

async function run(args, go) {
  const sockets = await connectAll(args);
  await go();
  const n = sockets.length;
  const counts = new Array(n).fill(0);
  const histogram = [];
  let errors = 0;
  let firstError = "";
  let running = true;
  let maxWaitMs = 0;
  const t0 = performance.now();
  const deadline = t0 + args.seconds * 1000;
  const states = sockets.map((socket, i) => {
    const request = randomFillSync(Buffer.alloc(args.size));
    // `sentAt` holds the send times of the requests in flight, oldest
    // first; `got` counts the bytes of the oldest one's echo so far.
    const s = { socket, request, got: 0, sentAt: [], head: 0 };
    const send = () => {
      s.sentAt.push(performance.now());
      socket.write(request);
    };
    const fail = (err) => {
      if (!running) return;
      errors++;
      firstError ||= err.message;
      s.sentAt.length = s.head = 0;
      socket.destroy();
    };
    socket.holder.onData = (length, buf) => {
      let at = 0;
      while (at < length) {
        const k = Math.min(length - at, args.size - s.got);
        if (request.compare(buf, at, at + k, s.got, s.got + k) !== 0) {
          fail(new Error("echo differs from the request"));
          return false;
        }
        at += k;
        s.got += k;
        if (s.got < args.size) break;
        // One whole echo: the oldest request in flight is answered.
        s.got = 0;
        const now = performance.now();
        const sentAt = s.sentAt[s.head++];
        if (s.head === s.sentAt.length) s.sentAt.length = s.head = 0;
        if (now > deadline) continue; // after the window: not counted
        const ms = now - sentAt;
        if (ms > maxWaitMs) maxWaitMs = ms;
        const b = bucket(ms);
        while (histogram.length <= b) histogram.push(0);
        histogram[b]++;
        counts[i]++;
        if (running) send();
      }
      return true;
    };
    socket.on("error", fail);
    socket.on("end", () => fail(new Error("server closed the connection")));
    return { s, send };
  });
  for (let d = 0; d < args.depth; d++) {
    for (const { send } of states) send();
  }
  await new Promise((r) => setTimeout(r, args.seconds * 1000));
  running = false;
  const end = performance.now();
  for (const { s } of states) {
    // A request still unanswered at the end has waited this long so far.
    if (s.head < s.sentAt.length) {
      maxWaitMs = Math.max(maxWaitMs, end - s.sentAt[s.head]);
    }
    s.socket.destroy();
  }
  return {
    seconds: (Math.min(end, deadline) - t0) / 1000,
    counts,
    maxWaitMs,
    histogram,
    errors,
    firstError,
  };
}

/** One result from the results of the threads, with the fairness figures. */
function merge(parts) {
  const counts = parts.flatMap((p) => p.counts);
  const histogram = [];
  for (const p of parts) {
    p.histogram.forEach((c, i) => histogram[i] = (histogram[i] ?? 0) + c);
  }
  const total = counts.reduce((a, b) => a + b, 0);
  const squares = counts.reduce((a, b) => a + b * b, 0);
  return {
    seconds: Math.max(...parts.map((p) => p.seconds)),
    counts,
    total,
    // Jain's index: (sum x)^2 / (n * sum x^2), 1 when all are equal.
    jain: squares > 0 ? total * total / (counts.length * squares) : 0,
    noReply: counts.filter((c) => c === 0).length,
    maxWaitMs: Math.max(...parts.map((p) => p.maxWaitMs)),
    histogram: Array.from(histogram, (c) => c ?? 0),
    errors: parts.reduce((a, p) => a + p.errors, 0),
    firstError: parts.find((p) => p.firstError)?.firstError ?? "",
  };
}

/**
 * Run the load on `args.threads` threads of this one process (each its own
 * event loop and share of the connections), starting all at `go()`.
 */
async function runAll(args, go) {
  if (args.threads === 1) return merge([await run(args, go)]);
  const shares = Array.from(
    { length: args.threads },
    (_, i) =>
      Math.floor(args.conns / args.threads) +
      (i < args.conns % args.threads ? 1 : 0),
  );
  const workers = shares.map((conns) =>
    new Worker(new URL(import.meta.url), {
      workerData: { ...args, conns, threads: 1 },
    })
  );
  const message = (w) =>
    new Promise((resolve, reject) => {
      w.once("message", resolve);
      w.once("error", reject);
    });
  try {
    await Promise.all(workers.map(message)); // each says "ready"
    await go();
    const results = workers.map(message);
    for (const w of workers) w.postMessage("go");
    return merge(await Promise.all(results));
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

if (!isMainThread) {
  // A thread of runAll: connect, say ready, wait for go, report.
  const r = await run(workerData, () => {
    parentPort.postMessage("ready");
    return new Promise((resolve) => parentPort.once("message", resolve));
  });
  parentPort.postMessage(r);
} else {
  await main();
}

async function main() {
  const args = parse(process.argv.slice(2));
  try {
    if (args.waitGo) {
      const next = stdinLines();
      const r = await runAll(args, async () => {
        process.stdout.write("ready\n");
        await next();
      });
      process.stdout.write(`result ${JSON.stringify(r)}\n`);
      while ((await next()) !== null) { /* bench.ts reads our CPU first */ }
    } else {
      const r = await runAll(args, async () => {});
      const sorted = [...r.counts].sort((a, b) => a - b);
      console.log(
        `${args.conns} connections, ${r.seconds.toFixed(1)} s: ` +
          `${Math.round(r.total / r.seconds)} round trips/s; ` +
          `Jain ${r.jain.toFixed(2)}; ${r.noReply} with no reply; ` +
          `longest wait ${(r.maxWaitMs / 1000).toFixed(2)} s; ` +
          `round trips per connection min ${sorted[0]}, ` +
          `median ${sorted[sorted.length >> 1]}, max ${sorted.at(-1)}` +
          (r.errors ? `; ${r.errors} failed (${r.firstError})` : ""),
      );
    }
    process.exit(0);
  } catch (err) {
    console.error(`error: ${err.message}`);
    process.exit(1);
  }
}
