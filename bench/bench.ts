/**
 * bench/bench.ts: how fast, how fair and how lean are the echo servers?
 * `deno task bench`. The method, the figures and what they mean:
 * bench/README.md.
 *
 * Starts server.ts and udp.ts the way their deno.json tasks do (`deno task
 * server`, `deno task udp`: the same environment assignments and Deno flags,
 * read from deno.json so the two cannot drift apart), with `--port 0
 * --quiet`; drives them over loopback with load-generator processes and
 * prints a table (`--json`: the same figures as JSON). With `--compare node`
 * it runs the same loads, in the same run and alternating, against a plain
 * Node.js echo server (bench/node_echo.mjs) and prints the ratio
 * project/Node of every figure. The c=500 load and the 10,000 connections
 * also run against the servers started bare (`deno run` without the tasks'
 * settings), to show what the settings change; `--bare` measures every
 * load bare. Where `--workers` exists (workers.ts), a second table measures
 * `--workers 2` beside `--workers 1`. A third puts server.ts on a Unix
 * socket (`--unix PATH`, same settings) beside TCP loopback: the stream and
 * the round trips at c=1 and c=50, measured in the same rounds.
 *
 *   deno task bench                     full run, medians of 3 rounds
 *   deno task bench --compare node      the same, against Node too
 *   deno task bench --quick             small sizes, about 1 s per load
 *   deno task bench --json              figures as JSON on stdout
 *
 * Its limits, stated in the output as well: the load generators run on the
 * same machine and share its CPUs with the server; "server CPU %" shows
 * whether the server was the bottleneck (near 100 %) or not.
 */

import { parseArgs } from "node:util";
import { quantileMs } from "./load.ts";
import {
  cpuTimeMs,
  openFileLimit,
  readProcFile,
  residentBytes,
} from "../tests/lib/proc.ts";
import {
  type Child,
  CHILD_ENV,
  projectPath as path,
  ROOT,
  runScript,
  spawnChild,
} from "../tests/lib/spawn.ts";
import { delay } from "../tests/lib/time.ts";
import { runsOk } from "../tests/lib/tools.ts";
import { scratchDir, unixGrants } from "../tests/lib/unix.ts";

/** The descriptor limit asked for (`ulimit -n`), for 10,000 connections. */
const WANT_FDS = 30_000;
/** UDP sockets doing ping-pong at once (all in one load process). */
const UDP_SOCKETS = 32;
/** Threads of the TCP round-trip client at c=500 (one process; see README). */
const FAIR_THREADS = 4;
/** Which CPU the server runs on, and the load generator, when pinned. */
const SERVER_CPU = "0";
const CLIENT_CPU = "1";

export const USAGE =
  `usage: deno task bench [--quick] [--json] [--compare node] [--bare]
                       [--settings "VAR=value ... --flag ..."] [--rounds N]
                       [--no-pin]

Measures server.ts and udp.ts on loopback, started as their deno.json tasks
start them, and prints a table; then server.ts on a Unix socket beside TCP.
bench/README.md explains the figures.
  --quick          small sizes, about 1 s per load (a smoke test)
  --json           print the figures as JSON instead of a table
  --compare node   run the same loads against a plain Node.js echo server
                   (bench/node_echo.mjs), alternating, and print ratios
  --bare           run every load against the servers started bare too
                   (without the tasks' settings); by default only the
                   500-connection and the many-connection loads are
  --settings S     try other settings instead of the tasks': environment
                   assignments and Deno flags, e.g.
                   "DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64 --v8-flags=--max-semi-space-size=2"
  --rounds N       rounds to take medians over (default 3, --quick 1)
  --no-pin         do not pin the server and the load generator to their
                   own CPUs (taskset), which the bench does when it can
  --help           show this help`;

interface Options {
  quick: boolean;
  json: boolean;
  compare: boolean;
  bare: boolean;
  settings?: string;
  rounds: number;
  pin: boolean;
}

/** Parse the command line; "help" for --help. Throws on a bad argument. */
export function parseBenchArgs(args: string[]): Options | "help" {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      compare: { type: "string" },
      bare: { type: "boolean", default: false },
      settings: { type: "string" },
      rounds: { type: "string" },
      "no-pin": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  if (values.compare !== undefined && values.compare !== "node") {
    throw new Error(`--compare takes "node", not "${values.compare}"`);
  }
  if (values.rounds !== undefined && !/^[1-9]\d?$/.test(values.rounds)) {
    throw new Error(`--rounds takes a number from 1 to 99`);
  }
  return {
    quick: values.quick,
    json: values.json,
    compare: values.compare === "node",
    bare: values.bare,
    settings: values.settings,
    rounds: values.rounds ? Number(values.rounds) : values.quick ? 1 : 3,
    pin: !values["no-pin"],
  };
}

/** Sizes and durations of the loads: the full run and `--quick`. */
function plan(quick: boolean) {
  return quick
    ? { streamBytes: 16 << 20, seconds: 1, holdConns: 1000 }
    : { streamBytes: 256 << 20, seconds: 3, holdConns: 10_000 };
}

// ---------------------------------------------------------------------------
// How each server is started: the deno.json task line, read from deno.json.

/** Environment assignments and Deno flags a server is started with. */
export interface Settings {
  env: Record<string, string>;
  /** Deno flags between `deno run` and the script. */
  flags: string[];
}

/**
 * Split a task line such as
 * `DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=32 deno run --v8-flags=... server.ts`
 * into its environment assignments, Deno flags and script. Only the plain
 * form deno.json uses: words separated by spaces, no quotes.
 */
export function parseTaskLine(
  line: string,
): Settings & { script: string } {
  if (/["'`$\\;&|<>()]/.test(line)) {
    throw new Error(`task line too clever to read: ${line}`);
  }
  const words = line.trim().split(/\s+/);
  const env: Record<string, string> = {};
  while (/^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0] ?? "")) {
    const word = words.shift()!;
    const eq = word.indexOf("=");
    env[word.slice(0, eq)] = word.slice(eq + 1);
  }
  if (words[0] !== "deno" || words[1] !== "run") {
    throw new Error(`task line does not run "deno run": ${line}`);
  }
  const at = words.findIndex((w, i) => i >= 2 && !w.startsWith("-"));
  if (at < 0) throw new Error(`task line names no script: ${line}`);
  return { env, flags: words.slice(2, at), script: words[at] };
}

/** `--settings` text: environment assignments, then Deno flags. */
function parseSettings(text: string): Settings {
  const words = text.trim().split(/\s+/).filter((w) => w !== "");
  const assignments = words.filter((w) => !w.startsWith("-"));
  const flags = words.filter((w) => w.startsWith("-"));
  const { env } = parseTaskLine(`${assignments.join(" ")} deno run x`.trim());
  return { env, flags };
}

/** The `server` and `udp` task lines of deno.json, parsed. */
async function taskSettings(): Promise<Record<"tcp" | "udp", Settings>> {
  const config = JSON.parse(await Deno.readTextFile(path("deno.json")));
  const read = (task: string, script: string): Settings => {
    const line = config.tasks?.[task];
    if (typeof line !== "string") {
      throw new Error(`deno.json has no "${task}" task`);
    }
    const parsed = parseTaskLine(line);
    if (parsed.script !== script) {
      throw new Error(`deno.json task "${task}" runs ${parsed.script}`);
    }
    return { env: parsed.env, flags: parsed.flags };
  };
  return { tcp: read("server", "server.ts"), udp: read("udp", "udp.ts") };
}

/** Settings as a person would type them before the script. */
function describeSettings(s: Settings): string {
  const words = [
    ...Object.entries(s.env).map(([k, v]) => `${k}=${v}`),
    ...s.flags.filter((f) => !f.startsWith("--allow-")),
  ];
  return words.length > 0 ? words.join(" ") : "none";
}

/** One server set-up measured: a column of the table. */
interface Variant {
  name: string;
  kind: "deno" | "node";
  settings: Record<"tcp" | "udp", Settings>;
  /** The TCP server: server.ts, or workers.ts (N event loops). */
  tcpScript: string;
  /** Extra arguments of the TCP server (`--workers N`). */
  tcpArgs: string[];
  /** Pin the server to SERVER_CPU. */
  pin: boolean;
  /** What it is, for the output. */
  about: string;
}

// ---------------------------------------------------------------------------
// Child processes: servers and load generators, always through `sh -c` so
// the descriptor limit can be raised (and the CPU pinned) first, and always
// killed at the end.

const children = new Set<Child>();

/** The parent's environment without the settings under test. */
function baseEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const key of Object.keys(env)) {
    if (key.startsWith("DENO_TOKIO_") || key === "DENO_V8_FLAGS") {
      delete env[key];
    }
  }
  return { ...env, ...CHILD_ENV };
}

let tasksetWorks = false;

/**
 * Start `cmd` under `sh`, with the descriptor limit raised to WANT_FDS (or
 * the hard limit, when that is lower) and, with `cpus`, pinned by taskset.
 */
function spawnProc(
  name: string,
  cmd: string[],
  opts: { stdin?: boolean; env?: Record<string, string>; cpus?: string } = {},
): Child {
  const pin = opts.cpus && tasksetWorks ? `taskset -c ${opts.cpus}` : "";
  const script = `ulimit -n ${WANT_FDS} 2>/dev/null ||
    ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec ${pin} "$@"`;
  const child = spawnChild(
    new Deno.Command("sh", {
      args: ["-c", script, "sh", ...cmd],
      cwd: ROOT,
      clearEnv: true,
      env: { ...baseEnv(), ...opts.env },
      stdin: opts.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }),
    name,
    { stdin: opts.stdin },
  );
  children.add(child);
  child.status.finally(() => children.delete(child));
  return child;
}

/** SIGTERM, then SIGKILL if it has not exited after `ms`. */
async function stop(child: Child, ms = 8000): Promise<void> {
  await child.stop("SIGTERM", ms);
}

/** Folders the run made (the Unix socket's), for Ctrl-C to remove. */
const scratch = new Set<AsyncDisposable>();

async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stop(c, 3000)));
  for (const dir of scratch) await dir[Symbol.asyncDispose]();
}

// ---------------------------------------------------------------------------
// /proc readings (Linux), NaN where they cannot be read: tests/lib/proc.ts.

const orNaN = (reading: Promise<number>) => reading.catch(() => NaN);

/** CPU seconds (user + system, all threads) the process has used so far. */
const cpuSeconds = (pid: number) =>
  orNaN(cpuTimeMs(pid).then((ms) => ms / 1000));

/** Resident memory in MB (VmRSS of /proc/PID/status). */
const rssMB = (pid: number) =>
  orNaN(residentBytes(pid).then((b) => b / 2 ** 20));

/** The process's open-file limit (soft), from /proc/PID/limits. */
const fdLimit = (pid: number) => orNaN(openFileLimit(pid));

// ---------------------------------------------------------------------------
// Servers.

interface Server {
  proc: Child;
  port: number;
  /** A Unix socket's path (server.ts --unix): no port. */
  path?: string;
}

async function startServer(
  v: Variant,
  protocol: "tcp" | "udp",
): Promise<Server> {
  const s = v.settings[protocol];
  const cmd = v.kind === "node"
    ? ["node", path("bench/node_echo.mjs"), protocol, "--port", "0"]
    : protocol === "tcp"
    ? [
      Deno.execPath(),
      "run",
      ...s.flags,
      path(v.tcpScript),
      ...["--port", "0", "--quiet", "--max-connections", "20000"],
      ...v.tcpArgs,
    ]
    : [
      Deno.execPath(),
      "run",
      ...s.flags,
      "--unstable-net",
      path("udp.ts"),
      ...["serve", "--port", "0", "--quiet"],
    ];
  const proc = spawnProc(`${v.name} ${protocol} server`, cmd, {
    env: s.env,
    cpus: v.pin ? SERVER_CPU : undefined,
  });
  try {
    const first = await proc.waitForLine(/./, 20_000);
    const m = new RegExp(`^${protocol} listening on .*:(\\d+)$`).exec(first);
    if (!m) throw new Error(`${proc.label}: first line was ${first}`);
    return { proc, port: Number(m[1]) };
  } catch (err) {
    await stop(proc);
    throw err;
  }
}

/**
 * server.ts on the Unix socket `sock`, started as the `server` task starts
 * it (its environment and flags), with the socket's grants (read, write
 * and net `unix:` on the path) in place of `--allow-net=127.0.0.1`.
 */
async function startUnixServer(v: Variant, sock: string): Promise<Server> {
  const s = v.settings.tcp;
  const cmd = [
    Deno.execPath(),
    "run",
    ...s.flags.filter((f) => !f.startsWith("--allow-")),
    ...unixGrants(sock),
    path("server.ts"),
    ...["--unix", sock, "--quiet", "--max-connections", "20000"],
  ];
  const proc = spawnProc(`${v.name} unix server`, cmd, {
    env: s.env,
    cpus: v.pin ? SERVER_CPU : undefined,
  });
  try {
    const first = await proc.waitForLine(/./, 20_000);
    if (first !== `unix listening on ${sock}`) {
      throw new Error(`${proc.label}: first line was ${first}`);
    }
    return { proc, port: 0, path: sock };
  } catch (err) {
    await stop(proc);
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Loads: each spawns load-generator processes, waits for all to be `ready`,
// says `go`, and collects their `result` lines.

/** One row of the table: a figure of one load. */
interface Figure {
  load: string;
  figure: string;
  /** Which way is better, for reading the ratio; none: not compared. */
  better?: "higher" | "lower";
  value: number;
}

type Measured = Figure[];

/** A figure where a higher value is better (a rate). */
function higher(load: string, figure: string, value: number): Figure {
  return { load, figure, better: "higher", value };
}

/** A figure where a lower value is better (a time, memory). */
function lower(load: string, figure: string, value: number): Figure {
  return { load, figure, better: "lower", value };
}

/** The `q` quantile of a latency histogram: the figure `p50 ms`, `p99 ms`. */
function latency(load: string, histogram: number[], q: number): Figure {
  return lower(load, `p${q * 100} ms`, quantileMs([histogram], q));
}

/** How the load generators run: pinned to CLIENT_CPU or free. */
interface LoadContext {
  pin: boolean;
  notes: Set<string>;
  /**
   * The command that runs bench/fair_load.mjs: node, or Deno's node:net
   * (with the grants for the Unix socket `sock`, if one).
   */
  fairLoad: (sock?: string) => string[];
}

/** How a load generator names the server: `--port N`, or `--path P`. */
const target = (server: Server) =>
  server.path !== undefined
    ? ["--path", server.path]
    : ["--port", String(server.port)];

/** "tcp", or "unix" for a server on a Unix socket: the loads' names. */
const protoOf = (server: Server) => server.path !== undefined ? "unix" : "tcp";

const denoLoad = (...args: string[]) => [
  Deno.execPath(),
  "run",
  "--allow-net=127.0.0.1",
  "--unstable-net",
  path("bench/load.ts"),
  ...args,
];

async function runLoad(
  server: Server,
  commands: string[][],
  timeoutMs: number,
  cpus: string | undefined,
): Promise<{ results: Record<string, unknown>[]; cpu: Measured }> {
  const workers = commands.map((cmd, i) =>
    spawnProc(`load generator ${i + 1}`, cmd, { stdin: true, cpus })
  );
  try {
    await Promise.all(workers.map((w) => w.waitForLine(/^ready$/, 30_000)));
    const clientCpu = () =>
      Promise.all(workers.map((w) => cpuSeconds(w.pid)))
        .then((s) => s.reduce((a, b) => a + b, 0));
    const [cpu0, clientCpu0] = [
      await cpuSeconds(server.proc.pid),
      await clientCpu(),
    ];
    const t0 = performance.now();
    await Promise.all(workers.map((w) => w.write("go\n")));
    const lines = await Promise.all(
      workers.map((w) => w.waitForLine(/^result /, timeoutMs)),
    );
    const seconds = (performance.now() - t0) / 1000;
    const [cpu1, clientCpu1] = [
      await cpuSeconds(server.proc.pid),
      await clientCpu(),
    ];
    const load = "";
    return {
      results: lines.map((l) => JSON.parse(l.slice("result ".length))),
      cpu: [
        { load, figure: "server CPU %", value: (cpu1 - cpu0) / seconds * 100 },
        {
          load,
          figure: "load generator CPU %",
          value: (clientCpu1 - clientCpu0) / seconds * 100,
        },
      ],
    };
  } finally {
    await Promise.all(workers.map((w) => stop(w)));
  }
}

/** Split `total` into `parts` nearly equal whole numbers. */
function split(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

async function tcpStream(
  server: Server,
  bytes: number,
  ctx: LoadContext,
): Promise<Measured> {
  const load = `${protoOf(server)} stream ${bytes >> 20} MiB`;
  const args = ["stream", ...target(server), "--bytes", `${bytes}`];
  const { results, cpu } = await runLoad(
    server,
    [
      server.path !== undefined
        ? [
          Deno.execPath(),
          "run",
          ...unixGrants(server.path),
          path("bench/load.ts"),
          ...args,
        ]
        : denoLoad(...args),
    ],
    120_000,
    ctx.pin ? CLIENT_CPU : undefined,
  );
  const r = results[0] as { received: number; ms: number; verified: boolean };
  return [
    higher(load, "MB/s", r.received / 1e6 / (r.ms / 1000)),
    { load, figure: "bytes verified (1 = all)", value: r.verified ? 1 : 0 },
    ...cpu.map((f) => ({ ...f, load })),
  ];
}

/**
 * TCP ping-pong, 64 bytes, on `conns` connections, all from ONE process
 * (bench/fair_load.mjs). At c=500 it runs FAIR_THREADS threads and is not
 * pinned, so that it answers the server's echoes faster than the server
 * serves them: many requests wait at the server at once, where unfairness
 * shows (see bench/README.md).
 */
async function tcpRoundTrips(
  server: Server,
  conns: number,
  seconds: number,
  ctx: LoadContext,
): Promise<Measured> {
  const load = `${protoOf(server)} rr c=${conns}`;
  const threads = conns >= 500 ? FAIR_THREADS : 1;
  const { results, cpu } = await runLoad(
    server,
    [[
      ...ctx.fairLoad(server.path),
      ...target(server),
      ...["--conns", String(conns)],
      ...["--seconds", String(seconds), "--size", "64"],
      ...["--threads", String(threads), "--wait-go"],
    ]],
    seconds * 1000 + 30_000,
    ctx.pin && threads === 1 ? CLIENT_CPU : undefined,
  );
  const r = results[0] as {
    seconds: number;
    total: number;
    jain: number;
    noReply: number;
    maxWaitMs: number;
    histogram: number[];
    errors: number;
    firstError: string;
  };
  if (r.errors > 0) {
    ctx.notes.add(`${load}: ${r.errors} connections failed (${r.firstError})`);
  }
  return [
    higher(load, "round trips/s", r.total / r.seconds),
    latency(load, r.histogram, 0.5),
    latency(load, r.histogram, 0.99),
    lower(load, "longest wait ms", r.maxWaitMs),
    { load, figure: "connections with no reply", value: r.noReply },
    { load, figure: "Jain fairness (1 = fair)", value: r.jain },
    ...cpu.map((f) => ({ ...f, load })),
  ];
}

async function udpRoundTrips(
  server: Server,
  size: number,
  seconds: number,
  ctx: LoadContext,
): Promise<Measured> {
  const load = `udp rr ${size} B`;
  const { results, cpu } = await runLoad(
    server,
    [denoLoad(
      "udp",
      ...["--port", String(server.port), "--sockets", String(UDP_SOCKETS)],
      ...["--seconds", String(seconds), "--size", String(size)],
    )],
    seconds * 1000 + 30_000,
    ctx.pin ? CLIENT_CPU : undefined,
  );
  const r = results[0] as {
    seconds: number;
    received: number;
    lost: number;
    histogram: number[];
  };
  return [
    higher(load, "round trips/s", r.received / r.seconds),
    {
      load,
      figure: "loss %",
      value: r.received + r.lost > 0
        ? r.lost / (r.received + r.lost) * 100
        : 100,
    },
    latency(load, r.histogram, 0.99),
    ...cpu.map((f) => ({ ...f, load })),
  ];
}

/**
 * Many connections: a fresh server, `conns` connections opened by 4
 * load processes and held, one echo each; time to open them all, and the
 * server's resident memory before and with all of them open.
 */
async function manyConnections(
  v: Variant,
  conns: number,
  ctx: LoadContext,
): Promise<Measured> {
  const load = `tcp hold ${conns} connections`;
  const server = await startServer(v, "tcp");
  const workers: Child[] = [];
  try {
    const limit = await fdLimit(server.proc.pid);
    if (limit < conns + 100) {
      ctx.notes.add(
        `${v.name} server: open-file limit ${limit}, under the ${conns} ` +
          `connections asked for (ulimit -n ${WANT_FDS} was not allowed): ` +
          `the connections over it fail`,
      );
    } else if (limit < WANT_FDS) {
      ctx.notes.add(
        `ulimit -n ${WANT_FDS} was not allowed here; ran with the hard ` +
          `limit, ${limit}, which is enough for ${conns} connections`,
      );
    }
    await delay(300); // let start-up settle
    const idle = await rssMB(server.proc.pid);
    for (const [i, c] of split(conns, 4).entries()) {
      workers.push(
        spawnProc(
          `hold load ${i + 1}`,
          denoLoad("hold", "--port", String(server.port), "--conns", `${c}`),
          { stdin: true },
        ),
      );
    }
    await Promise.all(workers.map((w) => w.waitForLine(/^ready$/, 30_000)));
    const t0 = performance.now();
    await Promise.all(workers.map((w) => w.write("go\n")));
    const results = await Promise.all(
      workers.map((w) => w.waitForLine(/^result /, 120_000)),
    );
    const seconds = (performance.now() - t0) / 1000;
    const rs = results.map((l) =>
      JSON.parse(l.slice("result ".length)) as {
        opened: number;
        failed: number;
        firstError: string;
      }
    );
    const opened = rs.reduce((a, r) => a + r.opened, 0);
    const failed = rs.reduce((a, r) => a + r.failed, 0);
    if (failed > 0) {
      ctx.notes.add(
        `${v.name}: ${failed} of ${conns} connections failed to open or ` +
          `echo (${rs.find((r) => r.firstError)?.firstError})`,
      );
    }
    const rss = await rssMB(server.proc.pid);
    return [
      { load, figure: "connections open and echoed", value: opened },
      lower(load, "seconds to open", seconds),
      lower(load, "server RSS MB, all open", rss),
      lower(load, "server RSS MB, idle", idle),
    ];
  } finally {
    await Promise.all(workers.map((w) => stop(w)));
    await stop(server.proc);
  }
}

// ---------------------------------------------------------------------------
// Statistics and output.

function median(values: number[]): number {
  const v = values.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function format(value: number | undefined, figure: string): string {
  if (value === undefined) return "·";
  if (Number.isNaN(value)) return "failed";
  if (figure.startsWith("bytes verified")) return value === 1 ? "yes" : "NO";
  if (figure.includes("Jain")) return value.toFixed(2);
  if (figure.includes(" ms")) {
    return value < 10 ? value.toFixed(3) : value.toFixed(1);
  }
  if (
    figure.includes("%") || figure.includes(" MB") ||
    figure.startsWith("seconds")
  ) {
    return value.toFixed(value < 10 ? 2 : 1);
  }
  return Math.round(value).toLocaleString("en-US");
}

/** A row: one figure of one load, its value per round for each variant. */
interface Row {
  load: string;
  figure: string;
  better?: "higher" | "lower";
  values: Record<string, number[]>;
}

/** Medians of a row, by variant name; absent where it was not measured. */
function medians(r: Row): Record<string, number> {
  return Object.fromEntries(
    Object.entries(r.values).map(([k, v]) => [k, median(v)]),
  );
}

/** `a/b` ratio columns to print: [numerator, denominator] variant names. */
type Ratio = [string, string];

function table(rows: Row[], names: string[], ratios: Ratio[]): string {
  const head = ["load", "figure", ...names, ...ratios.map((r) => r.join("/"))];
  const body = rows.map((r) => {
    const m = medians(r);
    const cells = [
      r.load,
      r.figure,
      ...names.map((n) => format(m[n], r.figure)),
    ];
    for (const [a, b] of ratios) {
      const ok = r.better && m[a] !== undefined && m[b] > 0;
      cells.push(ok ? (m[a] / m[b]).toFixed(2) : "");
    }
    return cells;
  });
  const widths = head.map((h, i) =>
    Math.max(h.length, ...body.map((c) => c[i].length))
  );
  const line = (cells: string[]) =>
    "| " +
    cells.map((c, i) => i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))
      .join(" | ") +
    " |";
  const rule = "|" +
    widths.map((w, i) => i < 2 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")
      .join("|") +
    "|";
  return [line(head), rule, ...body.map(line)].join("\n");
}

async function machine(): Promise<Record<string, string | number>> {
  let cpu = "unknown";
  try {
    cpu = /^model name\s*:\s*(.*)$/m.exec(await readProcFile("/proc/cpuinfo"))
      ?.[1] ?? cpu;
  } catch { /* not Linux */ }
  let node = "";
  try {
    const out = await new Deno.Command("node", { args: ["--version"] })
      .output();
    node = new TextDecoder().decode(out.stdout).trim();
  } catch { /* no node on PATH */ }
  return {
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    deno: Deno.version.deno,
    node,
    loadAverage: Number(Deno.loadavg()[0].toFixed(2)),
  };
}

/**
 * How this project runs server.ts on N event loops, `--workers N`: in
 * workers.ts, or in server.ts itself (older versions), or not at all.
 */
async function workersScript(): Promise<string | null> {
  try {
    await Deno.stat(path("workers.ts"));
    return "workers.ts";
  } catch { /* not here */ }
  const help = await runScript("server.ts", ["--help"], {
    denoFlags: ["--allow-net=127.0.0.1"],
  });
  return /^\s*--workers N/m.test(help.out) ? "server.ts" : null;
}

// ---------------------------------------------------------------------------

/** Results of one table: its rows and the variants it has columns for. */
class Results {
  readonly rows = new Map<string, Row>();
  constructor(readonly names: string[]) {}
  record(name: string, figures: Measured): void {
    for (const f of figures) {
      const key = `${f.load}\0${f.figure}`;
      if (!this.rows.has(key)) {
        this.rows.set(key, { ...f, values: {} });
      }
      (this.rows.get(key)!.values[name] ??= []).push(f.value);
    }
  }
}

// ---------------------------------------------------------------------------
// A run: set-up, the servers measured, the two tables, the report.

/** What a run knows as it goes. */
interface Run {
  options: Options;
  sizes: ReturnType<typeof plan>;
  info: Record<string, string | number>;
  ctx: LoadContext;
  notes: Set<string>;
  /** Whether Node is compared (asked for, and on PATH). */
  compare: boolean;
  failures: number;
}

/** The machine, whether taskset pins, how the load generators run. */
async function setUp(options: Options): Promise<Run> {
  const info = await machine();
  const notes = new Set<string>();
  let compare = options.compare;
  if (compare && !info.node) {
    notes.add("--compare node skipped: node is not on PATH");
    compare = false;
  }
  tasksetWorks = options.pin && Number(info.cores) >= 2 &&
    runsOk("taskset", ["-c", SERVER_CPU, "true"]);
  const ctx: LoadContext = {
    pin: tasksetWorks,
    notes,
    fairLoad: (sock) =>
      info.node ? ["node", path("bench/fair_load.mjs")] : [
        Deno.execPath(),
        "run",
        sock ? `--allow-net=127.0.0.1,unix:${sock}` : "--allow-net=127.0.0.1",
        "--allow-read",
        ...(sock ? [`--allow-write=${sock}`] : []),
        path("bench/fair_load.mjs"),
      ],
  };
  if (!info.node) {
    notes.add(
      "node is not on PATH: the TCP round-trip client (fair_load.mjs) ran " +
        "under Deno's node:net instead",
    );
  }
  return {
    options,
    sizes: plan(options.quick),
    info,
    ctx,
    notes,
    compare,
    failures: 0,
  };
}

function variant(
  name: string,
  kind: "deno" | "node",
  settings: Record<"tcp" | "udp", Settings>,
  about: string,
): Variant {
  return {
    name,
    kind,
    settings,
    tcpScript: "server.ts",
    tcpArgs: [],
    pin: tasksetWorks,
    about,
  };
}

/**
 * The columns of the main table: the project's servers as their tasks
 * start them (or with --settings), the same bare, and Node with --compare.
 */
async function mainVariants(run: Run): Promise<{
  variants: Variant[];
  project: Record<"tcp" | "udp", Settings>;
  fromTasks: boolean;
}> {
  const tasks = await taskSettings();
  let project = tasks;
  let projectAbout = "started as `deno task server` / `deno task udp` start " +
    `them (from deno.json): ${describeSettings(tasks.tcp)}`;
  if (run.options.settings !== undefined) {
    const s = parseSettings(run.options.settings);
    const flags = ["--allow-net=127.0.0.1", ...s.flags];
    project = { tcp: { env: s.env, flags }, udp: { env: s.env, flags } };
    projectAbout = `started with --settings: ${describeSettings(project.tcp)}`;
  }
  const bareSettings = { env: {}, flags: ["--allow-net=127.0.0.1"] };
  const variants: Variant[] = [
    variant("project", "deno", project, projectAbout),
    variant(
      "bare",
      "deno",
      { tcp: bareSettings, udp: bareSettings },
      "`deno run --allow-net=127.0.0.1 server.ts` (udp.ts), no settings",
    ),
  ];
  if (run.compare) {
    variants.push(variant(
      "node",
      "node",
      { tcp: bareSettings, udp: bareSettings },
      `Node.js ${run.info.node} bench/node_echo.mjs`,
    ));
  }
  return { variants, project, fromTasks: project === tasks };
}

/**
 * Measure `what` for `v` into `results` (if any) and return the figures;
 * a failure is a note, counts, and returns null.
 */
async function attempt(
  run: Run,
  results: Results | null,
  v: Variant,
  what: string,
  measure: () => Promise<Measured>,
): Promise<Measured | null> {
  if (!run.options.json) {
    await Deno.stderr.write(new TextEncoder().encode(`  ${v.name}: ${what}\n`));
  }
  try {
    const figures = await measure();
    results?.record(v.name, figures);
    return figures;
  } catch (err) {
    run.failures++;
    run.notes.add(`${v.name} ${what} failed: ${(err as Error).message}`);
    return null;
  }
}

/** The figures the Unix-beside-TCP table shows, of each load. */
const SIDE_FIGURES = new Set([
  "MB/s",
  "bytes verified (1 = all)",
  "round trips/s",
  "p50 ms",
  "p99 ms",
  "server CPU %",
]);

/** A load's figures for that table: named without "tcp"/"unix". */
function sideBySide(figures: Measured): Measured {
  return figures.filter((f) => SIDE_FIGURES.has(f.figure))
    .map((f) => ({ ...f, load: f.load.replace(/^(tcp|unix) /, "") }));
}

/**
 * The main table: each round starts every variant's servers, runs every
 * load against them in turn (the order flipped each round, so no server
 * always gets the quieter moment), then the many-connection load. The
 * project's server.ts also runs on a Unix socket: right beside its TCP
 * stream and c=1 and c=50 round trips (before or after them, flipped each
 * round), the same load over the path, into the `unix` table.
 */
async function mainTable(
  run: Run,
  variants: Variant[],
): Promise<{ results: Results; unix: Results }> {
  const { options, sizes, ctx } = run;
  // Loads the bare servers run by default: the ones the settings change
  // (c=500 here; the many-connection load always runs every server).
  const bareLoads = (load: string) => options.bare || load === "tcp rr c=500";
  const results = new Results(variants.map((v) => v.name));
  const unix = new Results(["tcp", "unix"]);
  // A folder of our own for the socket (bench has no --allow-write: mktemp),
  // removed at the end, or by Ctrl-C (see `scratch`).
  await using dir = await scratchDir();
  scratch.add(dir);
  for (let round = 1; round <= options.rounds; round++) {
    const order = round % 2 ? variants : [...variants].reverse();
    if (!options.json) console.error(`round ${round} of ${options.rounds}`);
    const tcp = new Map<string, Server>();
    const udp = new Map<string, Server>();
    let onUnix: Server | undefined;
    try {
      for (const v of order) {
        tcp.set(v.name, await startServer(v, "tcp"));
        if (v.name === "project") {
          try {
            onUnix = await startUnixServer(v, `${dir.path}/echo.sock`);
          } catch (err) {
            run.failures++;
            run.notes.add(`unix server: ${(err as Error).message}`);
          }
        }
        if (v.name === "bare" && !options.bare) continue;
        try {
          udp.set(v.name, await startServer(v, "udp"));
        } catch (err) {
          run.notes.add(`${v.name} udp server: ${(err as Error).message}`);
        }
      }
      const each = async (
        load: string,
        measure: (v: Variant) => Promise<Measured>,
        overUnix?: (server: Server) => Promise<Measured>,
      ) => {
        for (const v of order) {
          if (v.name === "bare" && !bareLoads(load)) continue;
          if (!overUnix || v.name !== "project" || !onUnix) {
            await attempt(run, results, v, load, () => measure(v));
            continue;
          }
          const server = onUnix;
          const viaUnix = () =>
            attempt(
              run,
              null,
              v,
              load.replace(/^tcp/, "unix"),
              () => overUnix(server),
            );
          const viaTcp = () => attempt(run, results, v, load, () => measure(v));
          let t: Measured | null, u: Measured | null;
          if (round % 2) {
            t = await viaTcp();
            u = await viaUnix();
          } else { // the other goes first this round
            u = await viaUnix();
            t = await viaTcp();
          }
          if (t && u) {
            unix.record("tcp", sideBySide(t));
            unix.record("unix", sideBySide(u));
          }
        }
      };
      await each(
        "tcp stream",
        (v) => tcpStream(tcp.get(v.name)!, sizes.streamBytes, ctx),
        (server) => tcpStream(server, sizes.streamBytes, ctx),
      );
      for (const conns of [1, 50, 500]) {
        await each(
          `tcp rr c=${conns}`,
          (v) => tcpRoundTrips(tcp.get(v.name)!, conns, sizes.seconds, ctx),
          conns === 500
            ? undefined
            : (server) => tcpRoundTrips(server, conns, sizes.seconds, ctx),
        );
      }
      for (const size of [64, 1400]) {
        await each(`udp rr ${size} B`, (v) => {
          const server = udp.get(v.name);
          if (!server) throw new Error("no udp server");
          return udpRoundTrips(server, size, sizes.seconds, ctx);
        });
      }
    } finally {
      for (const s of [...tcp.values(), ...udp.values()]) await stop(s.proc);
      if (onUnix) await stop(onUnix.proc); // SIGTERM: it removes its file
    }
    for (const v of order) {
      await attempt(
        run,
        results,
        v,
        `${sizes.holdConns} connections`,
        () => manyConnections(v, sizes.holdConns, ctx),
      );
    }
  }
  return { results, unix };
}

/**
 * The workers table: --workers 1 and 2 (N event loops on one port, by
 * workers.ts), nothing pinned; null where the project has no --workers.
 */
async function workersTable(
  run: Run,
  project: Record<"tcp" | "udp", Settings>,
): Promise<{ results: Results; script: string } | null> {
  const script = await workersScript();
  if (script === null) {
    run.notes.add(
      "server.ts has no --workers here: the workers table is left out",
    );
    return null;
  }
  const { options, sizes } = run;
  const results = new Results(["workers 1", "workers 2"]);
  // Each worker loads the script (and server.ts) again: grant those reads.
  const reads = [...new Set([script, "server.ts"])].map(path).join(",");
  const wv = (n: number): Variant => ({
    ...variant(`workers ${n}`, "deno", project, ""),
    settings: {
      ...project,
      tcp: {
        env: project.tcp.env,
        flags: [
          ...project.tcp.flags,
          `--allow-read=${reads}`,
          "--unstable-net",
        ],
      },
    },
    tcpScript: script,
    tcpArgs: ["--workers", String(n)],
    pin: false,
  });
  const wvs = [wv(1), wv(2)];
  const free = { ...run.ctx, pin: false };
  for (let round = 1; round <= options.rounds; round++) {
    const order = round % 2 ? wvs : [...wvs].reverse();
    for (const v of order) {
      let server: Server;
      try {
        server = await startServer(v, "tcp");
      } catch (err) {
        run.failures++;
        run.notes.add(`${v.name} failed to start: ${(err as Error).message}`);
        continue;
      }
      try {
        if (!options.quick) {
          await attempt(
            run,
            results,
            v,
            "tcp stream",
            () => tcpStream(server, sizes.streamBytes, free),
          );
        }
        for (const conns of options.quick ? [500] : [50, 500]) {
          await attempt(
            run,
            results,
            v,
            `tcp rr c=${conns}`,
            () => tcpRoundTrips(server, conns, sizes.seconds, free),
          );
        }
      } finally {
        await stop(server.proc);
      }
    }
  }
  return { results, script };
}

/** What the figures can and cannot say, printed with them. */
function limitsOf(run: Run, workersScript: string | undefined): string[] {
  const { info } = run;
  return [
    `The load generators run on this machine (${info.cores} cores) and ` +
    `share its CPUs with the server. ` +
    (tasksetWorks
      ? `In the first table the server is pinned to CPU ${SERVER_CPU} and ` +
        `the load generator to CPU ${CLIENT_CPU} (taskset), except at ` +
        `c=500, where the client's ${FAIR_THREADS} threads may use both ` +
        `CPUs so that they can send faster than the server answers. `
      : `Nothing is pinned to a CPU. `) +
    `"server CPU %" is the server's CPU time over the load (100 = one ` +
    `core, loopback kernel time included): well under 100 means the server ` +
    `waited for the client.`,
    `TCP round trips come from ONE client process on node:net ` +
    `(bench/fair_load.mjs), whatever the number of connections, so that ` +
    `it can see a server starve some of them: "longest wait" is the ` +
    `longest any request waited for its echo, Jain's index is 1 when every ` +
    `connection got the same number of round trips.`,
    `"bare" is the same server started without the tasks' settings; by ` +
    `default only the loads those settings change run bare (--bare: all).`,
    workersScript
      ? `The workers table runs ${workersScript} --workers 1 and --workers 2 with ` +
        `nothing pinned: ${info.cores} cores shared by the server's ` +
        `workers and the load generator.`
      : `No workers table: server.ts has no --workers.`,
    `The Unix-socket table runs server.ts --unix PATH (a socket file in a ` +
    `temporary folder) with the same settings and the same load ` +
    `generators, connecting to the path instead of 127.0.0.1:PORT; each ` +
    `round measures it right beside the TCP figures it is set against.`,
    `Loopback only: no network, no NIC, no packet loss but the kernel's.`,
    `Figures are medians of ${run.options.rounds} round(s); the servers ` +
    `alternate, order flipped each round.`,
  ];
}

/** Everything the output shows. */
interface Report {
  run: Run;
  variants: Variant[];
  fromTasks: boolean;
  main: Results;
  /** server.ts on a Unix socket beside TCP: columns "tcp" and "unix". */
  unix: Results;
  ratios: Ratio[];
  workers: { results: Results; script: string } | null;
  limits: string[];
  seconds: number;
}

/** `--json`: the figures, medians and every round, as JSON on stdout. */
function printJson(r: Report): void {
  const { run } = r;
  const figures = (results: Results, ratios: Ratio[]) =>
    [...results.rows.values()].map((row) => {
      const m = medians(row);
      return {
        load: row.load,
        figure: row.figure,
        better: row.better ?? null,
        median: m,
        rounds: row.values,
        ratios: Object.fromEntries(
          ratios.filter(([a, b]) =>
            row.better && m[a] !== undefined && m[b] > 0
          ).map(([a, b]) => [`${a}/${b}`, m[a] / m[b]]),
        ),
      };
    });
  console.log(JSON.stringify(
    {
      machine: run.info,
      mode: run.options.quick ? "quick" : "full",
      rounds: run.options.rounds,
      seconds: Math.round(r.seconds),
      servers: Object.fromEntries(r.variants.map((v) => [v.name, v.about])),
      figures: figures(r.main, r.ratios),
      unix: figures(r.unix, [["unix", "tcp"]]),
      workers: r.workers
        ? figures(r.workers.results, [["workers 2", "workers 1"]])
        : null,
      limits: r.limits,
      notes: [...run.notes],
    },
    null,
    2,
  ));
}

/** The tables, the limits and the notes, for a person. */
function printTables(r: Report): void {
  const { info, options, notes } = r.run;
  console.log(
    `Echo servers on loopback: ${options.quick ? "quick" : "full"} run, ` +
      `${options.rounds} round(s), ${Math.round(r.seconds)} s`,
  );
  console.log(
    `machine: ${info.cpu}, ${info.cores} cores, ${info.memoryGB} GB, ` +
      `${info.os}; Deno ${info.deno}` +
      (info.node ? `, Node ${info.node}` : "") +
      `; load average at start ${info.loadAverage}`,
  );
  for (const v of r.variants) console.log(`${v.name}: ${v.about}`);
  console.log();
  console.log(table([...r.main.rows.values()], r.main.names, r.ratios));
  console.log(
    "·: not measured. Ratios: above 1 is better for rates (MB/s, round " +
      "trips/s), below 1 for times and memory (ms, seconds, MB).",
  );
  if (r.unix.rows.size > 0) {
    console.log();
    console.log(
      "server.ts --unix PATH beside TCP loopback (127.0.0.1): the same " +
        "server, settings and loads, in the same rounds",
    );
    console.log();
    console.log(
      table([...r.unix.rows.values()], r.unix.names, [["unix", "tcp"]]),
    );
  }
  if (r.workers) {
    console.log();
    console.log(
      `${r.workers.script} --workers N: N event loops on one port (SO_REUSEPORT), ` +
        `${r.fromTasks ? "the tasks'" : "the same"} settings, ` +
        `nothing pinned, ${info.cores} cores shared with the load generator`,
    );
    console.log();
    console.log(
      table([...r.workers.results.rows.values()], r.workers.results.names, [
        ["workers 2", "workers 1"],
      ]),
    );
  }
  console.log();
  console.log("limits of this benchmark:");
  for (const l of r.limits) console.log(`- ${l}`);
  if (notes.size > 0) {
    console.log("notes:");
    for (const n of notes) console.log(`- ${n}`);
  }
}

/** The whole run: 0 if every load was measured, 1 if any failed. */
async function bench(options: Options): Promise<number> {
  const run = await setUp(options);
  const { variants, project, fromTasks } = await mainVariants(run);
  const started = performance.now();
  const { results: main, unix } = await mainTable(run, variants);
  const workers = await workersTable(run, project);
  const report: Report = {
    run,
    variants,
    fromTasks,
    main,
    unix,
    ratios: run.compare
      ? variants.filter((v) => v.kind === "deno").map((v) => [v.name, "node"])
      : [["project", "bare"]],
    workers,
    limits: limitsOf(run, workers?.script),
    seconds: (performance.now() - started) / 1000,
  };
  if (options.json) printJson(report);
  else printTables(report);
  return run.failures > 0 ? 1 : 0;
}

if (import.meta.main) {
  let options: Options | "help";
  try {
    options = parseBenchArgs(Deno.args);
  } catch (err) {
    console.error(`error: ${(err as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (options === "help") {
    console.log(USAGE);
    Deno.exit(0);
  }
  const interrupt = () => stopAll().then(() => Deno.exit(130));
  Deno.addSignalListener("SIGINT", interrupt);
  let code = 1;
  try {
    code = await bench(options);
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
  } finally {
    await stopAll();
  }
  Deno.exit(code);
}
