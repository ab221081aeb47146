/**
 * workers.ts: server.ts's echo server on N event loops in one process, all
 * listening on one port.
 *
 * What it shows:
 * - One Deno process runs JavaScript on one thread: one server.ts uses at
 *   most one core. A Deno Worker is another thread with its own event
 *   loop; N workers run N accept loops at once, in one process.
 * - SO_REUSEPORT (`reusePort: true`): N sockets listen on one address and
 *   port, one per worker, as nginx's `listen ... reuseport` does.
 * - The kernel, not this program, picks the listener for each new
 *   connection, from a hash of its addresses and ports: the connections
 *   spread, roughly evenly over many, but not in turn.
 * - Threads share nothing unless asked: `--max-connections` stays one
 *   limit for the whole process through a counter in a SharedArrayBuffer
 *   that every worker updates with Atomics.
 *
 * Run it (loopback only; each worker loads this file and server.ts again,
 * so Deno must be let read those two files, and nothing else):
 *
 *   deno run --allow-net=127.0.0.1 --allow-read=workers.ts,server.ts --unstable-net workers.ts --workers 2 --port 9000
 *
 * (or `deno task workers --workers 2 --port 9000`). Then, in a second
 * terminal, six clients, and see which worker took each:
 *
 *   for i in 1 2 3 4 5 6; do deno run --allow-net=127.0.0.1 client.ts --port 9000 hi$i; echo; done
 *
 * Try next: `ss -tlnp 'sport = :9000'` shows one LISTEN socket per worker;
 * `top -H` shows the threads; `--max-connections 2` with three `nc
 * 127.0.0.1 9000` held open: the third is closed, whichever worker got it.
 * Every flag of server.ts works here too.
 *
 * Unlike server.ts, this file imports: it reuses server.ts's listener, echo
 * and flags rather than copying them.
 */
import {
  listenTcp,
  OPTIONS_HELP,
  parseServerArgs,
  type ServerOptions,
  serveTcp,
  summaryLine,
  type TcpSummary,
  UsageError as ServerUsageError,
} from "./server.ts";

// ─── 1. One port, one limit, N workers ──────────────────────────────────────

/**
 * Start `options.workers` workers, each with a listener of its own on one
 * port; resolves once they all listen. A worker that cannot listen stops
 * them all: the promise rejects with its reason.
 */
export async function startWorkers(
  options: WorkersOptions,
): Promise<WorkerHandle[]> {
  // --max-connections is one limit for the process: the count of open
  // connections lives in memory that every thread sees (a
  // SharedArrayBuffer), and each worker's server takes a slot from it with
  // Atomics, which no other thread can interrupt halfway.
  const slots = new Int32Array(new SharedArrayBuffer(4));
  const workers: WorkerHandle[] = [];
  try {
    // The first worker binds --port (0: the OS picks a free one) ...
    workers.push(new WorkerHandle(1, options, slots));
    const { hostname, port } = await workers[0].listening;
    // ... and the others bind the port it got. Each sets SO_REUSEPORT, so
    // the kernel lets them all listen there; without it the second one
    // would fail: address in use.
    for (let id = 2; id <= options.workers; id++) {
      workers.push(new WorkerHandle(id, { ...options, hostname, port }, slots));
    }
    await Promise.all(workers.map((w) => w.listening));
    return workers;
  } catch (err) {
    for (const w of workers) w.worker.terminate();
    throw err;
  }
}

// ─── 2. In each worker: a listener and an accept loop of its own ────────────

/**
 * A worker's side: listen on the shared port, serve as server.ts does, and
 * tell the main thread when it listens and when it is done. It writes its
 * own log lines: each worker's stdout queue is bounded, and whole lines go
 * out in writes of at most 4 KiB, which a pipe never interleaves, so the
 * lines of two workers never mix.
 */
async function serveInWorker(
  { id, options, slots }: StartMessage,
  stop: AbortSignal,
  force: AbortSignal,
  post: (message: FromWorker) => void,
): Promise<void> {
  const prefix = `worker ${id} | `;
  try {
    const listener = listenTcp({ ...options, reusePort: true });
    const { hostname, port } = listener.addr;
    post({ type: "listening", hostname, port });
    const summary = await serveTcp(listener, {
      ...options,
      slots, // the process's one count of open connections
      signal: stop,
      force,
      log: (line) => log(prefix + line),
      warn: (line) => warn(prefix + line),
    });
    // Our lines go out before the main thread's summary; but if stdout is
    // not being read, wait no more than a second.
    await flushLog(1000);
    post({ type: "done", summary });
  } catch (err) {
    post({ type: "failed", message: errorText(err) });
  }
}

// ─── 3. Stop them all, add up ───────────────────────────────────────────────

/**
 * Once the workers have been told to stop: wait for each one's summary,
 * print it, and return the sum (a worker that failed counts as none, and
 * stops the others).
 */
export async function finishWorkers(
  workers: WorkerHandle[],
): Promise<{ total: TcpSummary; failures: number; each: string[] }> {
  let failures = 0;
  const summaries = await Promise.all(workers.map(async (w) => {
    try {
      return await w.done;
    } catch (err) {
      failures++;
      warn(`error: worker ${w.id} failed: ${errorText(err)}; stopping all`);
      for (const other of workers) other.send({ type: "stop" });
      return undefined;
    }
  }));
  const total = { connections: 0, refused: 0, bytesIn: 0, bytesOut: 0 };
  const each = summaries.map((s, i) => {
    if (!s) return "failed";
    log(`worker ${i + 1} | ${summaryLine(s)}`);
    total.connections += s.connections;
    total.refused += s.refused;
    total.bytesIn += s.bytesIn;
    total.bytesOut += s.bytesOut;
    return String(s.connections);
  });
  return { total, failures, each };
}

// Run as a program (not imported): main and the plumbing it uses are below
// this line, so start once the whole file has loaded. A worker (this same
// file, loaded again in a new thread) gets no "load" event: it starts its
// own side once this module has run.
if (import.meta.main) {
  if ("WorkerGlobalScope" in globalThis) queueMicrotask(workerMain);
  else addEventListener("load", () => runMain(main, USAGE));
}

// ───── plumbing: flags, usage, errors, signals, limits ─────

/**
 * The program: parse flags, start the workers, print the listening lines,
 * serve until SIGINT/SIGTERM, print each worker's summary and the sum.
 * Throws {@link UsageError} or an Error with a plain reason.
 */
export async function main(args: string[]): Promise<number> {
  const options = parseWorkersArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  requireGrants();
  const workers = await startWorkers(options);
  // SIGINT (Ctrl-C) and SIGTERM go on to every worker; a second one ends
  // their grace period.
  const tell = (type: "stop" | "force") => {
    for (const w of workers) w.send({ type });
  };
  const removeSignals = onStopSignals(() => tell("stop"), () => tell("force"));
  try {
    log(`tcp listening on ${formatAddr(workers[0].addr)}`);
    for (const w of workers) {
      log(`worker ${w.id} | tcp listening on ${formatAddr(w.addr)}`);
    }
    const { total, failures, each } = await finishWorkers(workers);
    const sum = `${workers.length} workers: ${each.join(" + ")} connections`;
    log(`${summaryLine(total)} (${sum})`);
    return failures > 0 ? 1 : 0;
  } finally {
    removeSignals();
    for (const w of workers) w.worker.terminate();
  }
}

/** The command line: server.ts's options, and how many workers. */
export interface WorkersOptions extends ServerOptions {
  workers: number;
}

/** How many workers without --workers. */
export const DEFAULT_WORKERS = 2;

/** The command that runs workers.ts with the narrowest grants. */
const COMMAND =
  "deno run --allow-net=127.0.0.1 --allow-read=workers.ts,server.ts --unstable-net workers.ts";

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE = `usage: ${COMMAND} [--workers N] [options]

server.ts's TCP echo server on N event loops in one process: N Deno Workers,
each with a listener of its own on one port (SO_REUSEPORT); the kernel
spreads the connections among them.

options:
  --workers N           how many workers, 1..256 (default ${DEFAULT_WORKERS}); each log
                        line of one starts with "worker N | "
${OPTIONS_HELP}

--reuse-port is always on; --max-connections counts the whole process. The
first line of output is "tcp listening on HOST:PORT". Ctrl-C (SIGINT) or
SIGTERM stops every worker, prints each one's summary and the sum, exits 0.`;

/**
 * Parse the command line: `--workers N` here, every other flag by
 * server.ts's own parser. Throws {@link UsageError}; `"help"` for --help.
 */
export function parseWorkersArgs(args: string[]): WorkersOptions | "help" {
  let count: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--workers") {
      count = args[++i];
      if (count === undefined) throw new UsageError("--workers needs a value");
    } else if (arg.startsWith("--workers=")) count = arg.slice(10);
    else rest.push(arg);
  }
  let server: ServerOptions | "help";
  try {
    server = parseServerArgs(rest);
  } catch (err) {
    // server.ts has its own copy of the plumbing, so its own UsageError.
    throw err instanceof ServerUsageError ? new UsageError(err.message) : err;
  }
  if (server === "help") return "help";
  if (server.unix) {
    throw new UsageError(
      "--unix does not go with workers.ts: its workers share a TCP port (SO_REUSEPORT); run server.ts --unix PATH",
    );
  }
  const workers = count === undefined
    ? DEFAULT_WORKERS
    : parseInteger("--workers", count, 1, 256);
  return { ...server, workers };
}

/**
 * What the workers need before they start: `--unstable-net` (SO_REUSEPORT
 * is unstable in Deno 2.9; without it `reusePort` ends the process) and
 * read access to the two files each worker loads.
 */
function requireGrants(): void {
  if (!("listenDatagram" in Deno)) {
    throw new Error(
      `workers.ts needs Deno's --unstable-net flag (SO_REUSEPORT is unstable in Deno ${Deno.version.deno}); run: ${COMMAND}`,
    );
  }
  const files = [
    new URL(import.meta.url),
    new URL("./server.ts", import.meta.url),
  ]
    .filter((url) => url.protocol === "file:");
  const denied = files.filter((url) =>
    Deno.permissions.querySync({ name: "read", path: url }).state !== "granted"
  );
  if (denied.length > 0) {
    const paths = files.map((url) => decodeURIComponent(url.pathname));
    const grant = paths.join(","); // quoted for the shell if need be
    throw new Error(
      `each worker loads workers.ts and server.ts again, so Deno must let it read them: run again with --allow-read=${
        /[^\w@%+=:,./-]/.test(grant) ? `'${grant}'` : grant
      }`,
    );
  }
}

/** Messages from the main thread to a worker. */
type ToWorker = StartMessage | { type: "stop" } | { type: "force" };

/** What a worker is told to do first. */
interface StartMessage {
  type: "start";
  id: number;
  options: ServerOptions;
  slots: Int32Array;
}

/** Messages from a worker to the main thread: never its log lines. */
type FromWorker =
  | { type: "listening"; hostname: string; port: number }
  | { type: "failed"; message: string }
  | { type: "done"; summary: TcpSummary };

/** One worker as the main thread sees it. */
export class WorkerHandle {
  readonly worker: Worker;
  /** Where it listens, once it does. */
  addr: Deno.NetAddr = { transport: "tcp", hostname: "", port: 0 };
  readonly listening: Promise<Deno.NetAddr>;
  readonly done: Promise<TcpSummary>;

  constructor(readonly id: number, options: ServerOptions, slots: Int32Array) {
    this.worker = new Worker(import.meta.url, {
      type: "module",
      name: `worker ${id}`,
    });
    const listening = Promise.withResolvers<Deno.NetAddr>();
    const done = Promise.withResolvers<TcpSummary>();
    this.listening = listening.promise;
    this.done = done.promise;
    // A failure rejects whichever of the two is still pending.
    this.listening.catch(() => {});
    this.done.catch(() => {});
    const fail = (message: string) => {
      listening.reject(new Error(message));
      done.reject(new Error(message));
    };
    this.worker.onmessage = ({ data: m }: MessageEvent<FromWorker>) => {
      if (m.type === "listening") {
        this.addr = { transport: "tcp", hostname: m.hostname, port: m.port };
        listening.resolve(this.addr);
      } else if (m.type === "failed") fail(m.message);
      else done.resolve(m.summary);
    };
    this.worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      fail(event.message);
    };
    this.send({ type: "start", id, options, slots });
  }

  send(message: ToWorker): void {
    this.worker.postMessage(message);
  }
}

/** The part of a worker's global scope we use. */
interface WorkerScope {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
}

/**
 * In a worker: wait for the main thread's messages. "start" serves; "stop"
 * and "force" are SIGINT/SIGTERM passed on. The main thread ends the
 * worker (terminate()) once it has its last message.
 */
function workerMain(): void {
  const scope = globalThis as unknown as WorkerScope;
  const stop = new AbortController();
  const force = new AbortController();
  const post = (message: FromWorker) => scope.postMessage(message);
  scope.onmessage = ({ data: m }) => {
    if (m.type === "start") serveInWorker(m, stop.signal, force.signal, post);
    else if (m.type === "stop") stop.abort();
    else force.abort();
  };
}

// ===== shared block: begin =====
// Written by `deno task sync` from lib/plumbing.ts: only what this file
// uses, so that it runs alone when copied. Edit lib/plumbing.ts, not here;
// tests/shared_block_test.ts fails when this copy is stale.

/** A bad command line: the reason is printed with the usage, exit 2. */
export class UsageError extends Error {}

/** A whole number from `min` to `max`, or a {@link UsageError}. */
export function parseInteger(
  flag: string,
  text: string,
  min: number,
  max: number,
): number {
  const n = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(
      `${flag} must be a whole number from ${min} to ${max}, not ${
        JSON.stringify(text)
      }`,
    );
  }
  return n;
}

/** What went wrong, in words: an Error's message, or whatever was thrown. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `HOST:PORT` (`[::1]:8080`), or a Unix socket's path or `(unnamed)`. */
export function formatAddr(
  addr: Deno.Addr | { hostname: string; port: number },
): string {
  if ("path" in addr) return addr.path || "(unnamed)"; // a client's end
  if (!("hostname" in addr)) return addr.transport;
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/** Resolve after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Anything with a `write` that may take only part of the bytes. */
export interface Writer {
  write(p: Uint8Array): Promise<number>;
}

/**
 * Write all of `data`: `write()` may accept only part of it per call, so
 * loop. `onWrite`, if given, sees each piece a single write() took.
 */
export async function writeAll(
  writer: Writer,
  data: Uint8Array,
  onWrite?: (piece: Uint8Array) => void,
): Promise<void> {
  let written = 0;
  while (written < data.length) {
    const n = await writer.write(data.subarray(written));
    if (onWrite) onWrite(data.subarray(written, written + n));
    written += n;
  }
}

// Log lines wait here for stdout, at most this many bytes of them. A
// reader that stops (`| less` at a screenful, a suspended `| grep`, a
// terminal paused with Ctrl-S) must not stop the server: beyond the bound,
// lines are dropped and counted, and one line says how many.
export const LOG_QUEUE_BYTES = 1 << 20;
// One write at most this big, whole lines only: the OS writes up to 4 KiB to
// a pipe in one piece, so lines from several writers (Workers) never mix.
const LOG_WRITE_BYTES = 4096;

/**
 * Print a log line on stdout, best effort: it never waits (lines queue and
 * are written in the background), a slow reader loses lines (counted), and
 * a stdout that cannot be written at all is said once on stderr.
 */
export function log(line: string): void {
  if (logState.failed) return;
  const size = line.length + 1;
  if (logState.queued + size > LOG_QUEUE_BYTES) {
    logState.dropped++;
    if (!logState.warned) {
      logState.warned = true;
      warn("warning: stdout is not being read; dropping log lines");
    }
    return;
  }
  if (logState.dropped > 0) {
    const note =
      `(${logState.dropped} log lines dropped: stdout was not read fast enough)`;
    logState.dropped = 0;
    logState.lines.push(note);
    logState.queued += note.length + 1;
  }
  logState.lines.push(line);
  logState.queued += size;
  if (!logState.writing) logState.writing = drainLog();
}

const logState = {
  lines: [] as string[],
  queued: 0,
  dropped: 0,
  warned: false,
  failed: false,
  writing: undefined as Promise<void> | undefined,
};

/** Write the queued log lines, in order, until none is left. */
async function drainLog(): Promise<void> {
  const encoder = new TextEncoder();
  try {
    while (logState.lines.length > 0) {
      let batch = "";
      let n = 0;
      const lines = logState.lines;
      while (
        n < lines.length &&
        (n === 0 || batch.length + lines[n].length + 1 <= LOG_WRITE_BYTES)
      ) batch += lines[n++] + "\n";
      lines.splice(0, n);
      logState.queued -= batch.length;
      await writeAll(Deno.stdout, encoder.encode(batch));
    }
  } catch (err) {
    logState.failed = true;
    logState.lines = [];
    warn(
      `warning: cannot write to stdout (${
        errorText(err)
      }); going on without log lines`,
    );
  } finally {
    logState.writing = undefined;
  }
}

/**
 * Wait until the queued log lines are written, at most `ms` milliseconds
 * (stdout may never be read again). Before exit, so the summary is seen.
 */
export async function flushLog(ms = 2000): Promise<void> {
  const deadline = performance.now() + ms;
  while (logState.writing && performance.now() < deadline) {
    const left = deadline - performance.now();
    await Promise.race([logState.writing, sleep(left)]);
  }
}

/** Print a line on stderr; if even that fails, there is nowhere to say so. */
export function warn(line: string): void {
  try {
    console.error(line);
  } catch { /* stderr is gone too */ }
}

/**
 * Call `stop` on the first SIGINT (Ctrl-C) or SIGTERM, `force` on a second.
 * Add the listeners before printing the listening line: a signal that comes
 * before them kills the process. `signals` may add SIGHUP (the terminal
 * closed). Returns a function that removes them.
 */
export function onStopSignals(
  stop: (signal: Deno.Signal) => void,
  force: (signal: Deno.Signal) => void = () => {},
  signals: Deno.Signal[] = ["SIGINT", "SIGTERM"],
): () => void {
  let count = 0;
  const handlers = new Map<Deno.Signal, () => void>();
  const wanted = Deno.build.os === "windows" ? ["SIGINT" as const] : signals;
  for (const s of wanted) {
    const handler = () => ++count === 1 ? stop(s) : force(s);
    handlers.set(s, handler);
    Deno.addSignalListener(s, handler);
  }
  return () => {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  };
}

/**
 * Run a command-line `main` and exit: a {@link UsageError} prints the reason
 * and `usage` (exit 2); any other error is an expected failure, one
 * `error:` line with no stack trace (exit 1).
 */
export async function runMain(
  main: (args: string[]) => Promise<number>,
  usage: string,
): Promise<never> {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (err) {
    const usageError = err instanceof UsageError;
    warn(`error: ${errorText(err)}${usageError ? `\n\n${usage}` : ""}`);
    code = usageError ? 2 : 1;
  }
  await flushLog();
  Deno.exit(code);
}

/** Print text on stdout (usage, data); a failure is an `error:` line. */
export async function writeStdout(data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string"
    ? new TextEncoder().encode(data)
    : data;
  try {
    await writeAll(Deno.stdout, bytes);
  } catch (err) {
    // Whoever reads our stdout went away (`| head`): that is their choice.
    if (err instanceof Deno.errors.BrokenPipe) Deno.exit(0);
    throw new Error(
      `cannot write to stdout: ${errorText(err)}`,
      { cause: err },
    );
  }
}
// ===== shared block: end =====
