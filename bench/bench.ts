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
 * load bare. Where `server.ts --workers` exists, a second table measures
 * `--workers 2` beside `--workers 1`.
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

const ROOT = new URL("..", import.meta.url);
const path = (name: string) => new URL(name, ROOT).pathname;

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
start them, and prints a table. bench/README.md explains the figures.
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
  /** Extra server.ts arguments (`--workers N`). */
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

const children = new Set<Proc>();

/** The parent's environment without the settings under test. */
function baseEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const key of Object.keys(env)) {
    if (key.startsWith("DENO_TOKIO_") || key === "DENO_V8_FLAGS") {
      delete env[key];
    }
  }
  return { ...env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
}

let tasksetWorks = false;

/** A child process with its stdout split into lines. */
class Proc {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  #waiters: (() => void)[] = [];
  #stdin?: WritableStreamDefaultWriter<Uint8Array>;
  readonly done: Promise<void>;

  constructor(
    readonly name: string,
    cmd: string[],
    opts: { stdin?: boolean; env?: Record<string, string>; cpus?: string } = {},
  ) {
    // `ulimit -n` above the hard limit fails: fall back to the hard limit.
    const pin = opts.cpus && tasksetWorks ? `taskset -c ${opts.cpus}` : "";
    const script = `ulimit -n ${WANT_FDS} 2>/dev/null ||
      ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec ${pin} "$@"`;
    this.child = new Deno.Command("sh", {
      args: ["-c", script, "sh", ...cmd],
      cwd: ROOT,
      clearEnv: true,
      env: { ...baseEnv(), ...opts.env },
      stdin: opts.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (opts.stdin) this.#stdin = this.child.stdin.getWriter();
    children.add(this);
    this.done = Promise.all([
      this.#read(this.child.stdout, (l) => {
        this.lines.push(l);
        for (const w of this.#waiters.splice(0)) w();
      }),
      this.#read(this.child.stderr, (l) => this.stderr += l + "\n"),
      this.child.status,
    ]).then(() => {
      children.delete(this);
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  async #read(stream: ReadableStream<Uint8Array>, line: (l: string) => void) {
    let text = "";
    for await (const s of stream.pipeThrough(new TextDecoderStream())) {
      text += s;
      let nl: number;
      while ((nl = text.indexOf("\n")) >= 0) {
        line(text.slice(0, nl));
        text = text.slice(nl + 1);
      }
    }
    if (text) line(text);
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The first stdout line matching `re`; fails after `ms` or at exit. */
  async line(re: RegExp, ms: number): Promise<string> {
    const deadline = performance.now() + ms;
    let exited = false;
    this.done.then(() => exited = true);
    while (true) {
      const found = this.lines.find((l) => re.test(l));
      if (found !== undefined) return found;
      const left = deadline - performance.now();
      if (exited || left <= 0) {
        throw new Error(
          `${this.name}: ${exited ? "exited" : `nothing within ${ms} ms`}` +
            ` (expected ${re}); stderr: ${this.stderr.trim().slice(-400)}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }

  async send(text: string): Promise<void> {
    await this.#stdin?.write(new TextEncoder().encode(text));
  }

  async closeStdin(): Promise<void> {
    await this.#stdin?.close().catch(() => {});
  }

  /** SIGTERM, then SIGKILL if it has not exited after `ms`. */
  async stop(ms = 8000): Promise<void> {
    await this.closeStdin();
    try {
      this.child.kill("SIGTERM");
    } catch { /* exited */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((r) =>
      timer = setTimeout(() => {
        try {
          this.child.kill("SIGKILL");
        } catch { /* exited */ }
        r();
      }, ms)
    );
    await Promise.race([this.done, killed]);
    clearTimeout(timer);
    await this.done;
  }
}

async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => c.stop(3000)));
}

/** Whether `cmd args` runs and exits 0. */
async function runs(cmd: string, args: string[]): Promise<boolean> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// /proc readings (Linux). Deno asks for --allow-all to read /proc itself,
// so the task's narrower permissions read it through `cat`.

async function readProc(file: string): Promise<string> {
  try {
    const out = await new Deno.Command("cat", { args: [file], stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout) : "";
  } catch {
    return "";
  }
}

/** CPU seconds (user + system, all threads) the process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readProc(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime, fields 14 and 15 of proc_pid_stat(5), in 1/100 s.
  return stat ? (Number(fields[11]) + Number(fields[12])) / 100 : NaN;
}

/** Resident memory in MB (VmRSS of /proc/PID/status). */
async function rssMB(pid: number): Promise<number> {
  const status = await readProc(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) / 1024;
}

/** The process's open-file limit (soft), from /proc/PID/limits. */
async function fdLimit(pid: number): Promise<number> {
  const limits = await readProc(`/proc/${pid}/limits`);
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  return !m ? NaN : m[1] === "unlimited" ? Infinity : Number(m[1]);
}

// ---------------------------------------------------------------------------
// Servers.

interface Server {
  proc: Proc;
  port: number;
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
      path("server.ts"),
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
  const proc = new Proc(`${v.name} ${protocol} server`, cmd, {
    env: s.env,
    cpus: v.pin ? SERVER_CPU : undefined,
  });
  try {
    const first = await proc.line(/./, 20_000);
    const m = new RegExp(`^${protocol} listening on .*:(\\d+)$`).exec(first);
    if (!m) throw new Error(`${proc.name}: first line was ${first}`);
    return { proc, port: Number(m[1]) };
  } catch (err) {
    await proc.stop();
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

/** How the load generators run: pinned to CLIENT_CPU or free. */
interface LoadContext {
  pin: boolean;
  notes: Set<string>;
  /** The command that runs bench/fair_load.mjs: node, or Deno's node:net. */
  fairLoad: string[];
}

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
    new Proc(`load generator ${i + 1}`, cmd, { stdin: true, cpus })
  );
  try {
    await Promise.all(workers.map((w) => w.line(/^ready$/, 30_000)));
    const clientCpu = () =>
      Promise.all(workers.map((w) => cpuSeconds(w.pid)))
        .then((s) => s.reduce((a, b) => a + b, 0));
    const [cpu0, clientCpu0] = [
      await cpuSeconds(server.proc.pid),
      await clientCpu(),
    ];
    const t0 = performance.now();
    await Promise.all(workers.map((w) => w.send("go\n")));
    const lines = await Promise.all(
      workers.map((w) => w.line(/^result /, timeoutMs)),
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
    await Promise.all(workers.map((w) => w.stop()));
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
  const load = `tcp stream ${bytes >> 20} MiB`;
  const { results, cpu } = await runLoad(
    server,
    [
      denoLoad("stream", "--port", String(server.port), "--bytes", `${bytes}`),
    ],
    120_000,
    ctx.pin ? CLIENT_CPU : undefined,
  );
  const r = results[0] as { received: number; ms: number; verified: boolean };
  return [
    {
      load,
      figure: "MB/s",
      better: "higher",
      value: r.received / 1e6 / (r.ms / 1000),
    },
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
  const load = `tcp rr c=${conns}`;
  const threads = conns >= 500 ? FAIR_THREADS : 1;
  const { results, cpu } = await runLoad(
    server,
    [[
      ...ctx.fairLoad,
      ...["--port", String(server.port), "--conns", String(conns)],
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
    {
      load,
      figure: "round trips/s",
      better: "higher",
      value: r.total / r.seconds,
    },
    {
      load,
      figure: "p50 ms",
      better: "lower",
      value: quantileMs([r.histogram], 0.5),
    },
    {
      load,
      figure: "p99 ms",
      better: "lower",
      value: quantileMs([r.histogram], 0.99),
    },
    { load, figure: "longest wait ms", better: "lower", value: r.maxWaitMs },
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
    {
      load,
      figure: "round trips/s",
      better: "higher",
      value: r.received / r.seconds,
    },
    {
      load,
      figure: "loss %",
      value: r.received + r.lost > 0
        ? r.lost / (r.received + r.lost) * 100
        : 100,
    },
    {
      load,
      figure: "p99 ms",
      better: "lower",
      value: quantileMs([r.histogram], 0.99),
    },
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
  const workers: Proc[] = [];
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
    await new Promise((r) => setTimeout(r, 300)); // let start-up settle
    const idle = await rssMB(server.proc.pid);
    for (const [i, c] of split(conns, 4).entries()) {
      workers.push(
        new Proc(
          `hold load ${i + 1}`,
          denoLoad("hold", "--port", String(server.port), "--conns", `${c}`),
          { stdin: true },
        ),
      );
    }
    await Promise.all(workers.map((w) => w.line(/^ready$/, 30_000)));
    const t0 = performance.now();
    await Promise.all(workers.map((w) => w.send("go\n")));
    const results = await Promise.all(
      workers.map((w) => w.line(/^result /, 120_000)),
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
      { load, figure: "seconds to open", better: "lower", value: seconds },
      { load, figure: "server RSS MB, all open", better: "lower", value: rss },
      { load, figure: "server RSS MB, idle", better: "lower", value: idle },
    ];
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await server.proc.stop();
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
    cpu = /^model name\s*:\s*(.*)$/m.exec(await readProc("/proc/cpuinfo"))
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

/** Whether this server.ts has `--workers` (another part of the project). */
async function hasWorkers(): Promise<boolean> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", path("server.ts"), "--help"],
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).includes("--workers N");
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

async function bench(options: Options): Promise<number> {
  const sizes = plan(options.quick);
  const info = await machine();
  const notes = new Set<string>();
  let compare = options.compare;
  if (compare && !info.node) {
    notes.add("--compare node skipped: node is not on PATH");
    compare = false;
  }
  tasksetWorks = options.pin && Number(info.cores) >= 2 &&
    await runs("taskset", ["-c", SERVER_CPU, "true"]);
  const ctx: LoadContext = {
    pin: tasksetWorks,
    notes,
    fairLoad: info.node ? ["node", path("bench/fair_load.mjs")] : [
      Deno.execPath(),
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      path("bench/fair_load.mjs"),
    ],
  };
  if (!info.node) {
    notes.add(
      "node is not on PATH: the TCP round-trip client (fair_load.mjs) ran " +
        "under Deno's node:net instead",
    );
  }

  const tasks = await taskSettings();
  let project = tasks;
  let projectAbout = "started as `deno task server` / `deno task udp` start " +
    `them (from deno.json): ${describeSettings(tasks.tcp)}`;
  if (options.settings !== undefined) {
    const s = parseSettings(options.settings);
    const flags = ["--allow-net=127.0.0.1", ...s.flags];
    project = { tcp: { env: s.env, flags }, udp: { env: s.env, flags } };
    projectAbout = `started with --settings: ${describeSettings(project.tcp)}`;
  }
  const bareSettings = { env: {}, flags: ["--allow-net=127.0.0.1"] };
  const variant = (
    name: string,
    kind: "deno" | "node",
    settings: Record<"tcp" | "udp", Settings>,
    about: string,
  ): Variant => ({
    name,
    kind,
    settings,
    tcpArgs: [],
    pin: tasksetWorks,
    about,
  });
  const variants: Variant[] = [
    variant("project", "deno", project, projectAbout),
    variant(
      "bare",
      "deno",
      { tcp: bareSettings, udp: bareSettings },
      "`deno run --allow-net=127.0.0.1 server.ts` (udp.ts), no settings",
    ),
  ];
  if (compare) {
    variants.push(variant(
      "node",
      "node",
      { tcp: bareSettings, udp: bareSettings },
      `Node.js ${info.node} bench/node_echo.mjs`,
    ));
  }
  // Loads the bare servers run by default: the ones the settings change
  // (c=500 here; the many-connection load always runs every server).
  const bareLoads = (load: string) => options.bare || load === "tcp rr c=500";
  const main = new Results(variants.map((v) => v.name));

  let failures = 0;
  const attempt = async (
    results: Results,
    v: Variant,
    what: string,
    run: () => Promise<Measured>,
  ) => {
    if (!options.json) {
      await Deno.stderr.write(
        new TextEncoder().encode(`  ${v.name}: ${what}\n`),
      );
    }
    try {
      results.record(v.name, await run());
    } catch (err) {
      failures++;
      notes.add(`${v.name} ${what} failed: ${(err as Error).message}`);
    }
  };

  const started = performance.now();
  for (let round = 1; round <= options.rounds; round++) {
    // Alternate the order, so no server always gets the quieter moment.
    const order = round % 2 ? variants : [...variants].reverse();
    if (!options.json) {
      console.error(`round ${round} of ${options.rounds}`);
    }
    const tcp = new Map<string, Server>();
    const udp = new Map<string, Server>();
    try {
      for (const v of order) {
        tcp.set(v.name, await startServer(v, "tcp"));
        if (v.name === "bare" && !options.bare) continue;
        try {
          udp.set(v.name, await startServer(v, "udp"));
        } catch (err) {
          notes.add(`${v.name} udp server: ${(err as Error).message}`);
        }
      }
      const each = async (
        load: string,
        run: (v: Variant) => Promise<Measured>,
      ) => {
        for (const v of order) {
          if (v.name === "bare" && !bareLoads(load)) continue;
          await attempt(main, v, load, () => run(v));
        }
      };
      await each(
        "tcp stream",
        (v) => tcpStream(tcp.get(v.name)!, sizes.streamBytes, ctx),
      );
      for (const conns of [1, 50, 500]) {
        await each(
          `tcp rr c=${conns}`,
          (v) => tcpRoundTrips(tcp.get(v.name)!, conns, sizes.seconds, ctx),
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
      for (const s of [...tcp.values(), ...udp.values()]) await s.proc.stop();
    }
    for (const v of order) {
      await attempt(
        main,
        v,
        `${sizes.holdConns} connections`,
        () => manyConnections(v, sizes.holdConns, ctx),
      );
    }
  }

  // --workers: the same server on N event loops, nothing pinned.
  const workersTable = new Results(["workers 1", "workers 2"]);
  const workersOk = await hasWorkers();
  if (!workersOk) {
    notes.add("server.ts has no --workers here: the workers table is left out");
  } else {
    const wv = (n: number): Variant => ({
      ...variant(`workers ${n}`, "deno", project, ""),
      settings: {
        ...project,
        tcp: {
          env: project.tcp.env,
          flags: [...project.tcp.flags, `--allow-read=${path("server.ts")}`],
        },
      },
      tcpArgs: ["--workers", String(n)],
      pin: false,
    });
    const wvs = [wv(1), wv(2)];
    const free = { ...ctx, pin: false };
    for (let round = 1; round <= options.rounds; round++) {
      const order = round % 2 ? wvs : [...wvs].reverse();
      for (const v of order) {
        let server: Server | undefined;
        try {
          server = await startServer(v, "tcp");
        } catch (err) {
          failures++;
          notes.add(`${v.name} failed to start: ${(err as Error).message}`);
          continue;
        }
        try {
          if (!options.quick) {
            await attempt(
              workersTable,
              v,
              "tcp stream",
              () => tcpStream(server!, sizes.streamBytes, free),
            );
          }
          for (const conns of options.quick ? [500] : [50, 500]) {
            await attempt(
              workersTable,
              v,
              `tcp rr c=${conns}`,
              () => tcpRoundTrips(server!, conns, sizes.seconds, free),
            );
          }
        } finally {
          await server.proc.stop();
        }
      }
    }
  }
  const elapsed = (performance.now() - started) / 1000;

  const limits = [
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
    workersOk
      ? `The workers table runs server.ts --workers 1 and --workers 2 with ` +
        `nothing pinned: ${info.cores} cores shared by the server's ` +
        `workers and the load generator.`
      : `No workers table: server.ts has no --workers.`,
    `Loopback only: no network, no NIC, no packet loss but the kernel's.`,
    `Figures are medians of ${options.rounds} round(s); the servers ` +
    `alternate, order flipped each round.`,
  ];
  const ratios: Ratio[] = compare
    ? variants.filter((v) => v.kind === "deno").map((v) => [v.name, "node"])
    : [["project", "bare"]];
  const about = Object.fromEntries(variants.map((v) => [v.name, v.about]));
  if (options.json) {
    const figures = (r: Results, rs: Ratio[]) =>
      [...r.rows.values()].map((row) => {
        const m = medians(row);
        return {
          load: row.load,
          figure: row.figure,
          better: row.better ?? null,
          median: m,
          rounds: row.values,
          ratios: Object.fromEntries(
            rs.filter(([a, b]) => row.better && m[a] !== undefined && m[b] > 0)
              .map(([a, b]) => [`${a}/${b}`, m[a] / m[b]]),
          ),
        };
      });
    console.log(JSON.stringify(
      {
        machine: info,
        mode: options.quick ? "quick" : "full",
        rounds: options.rounds,
        seconds: Math.round(elapsed),
        servers: about,
        figures: figures(main, ratios),
        workers: workersOk
          ? figures(workersTable, [["workers 2", "workers 1"]])
          : null,
        limits,
        notes: [...notes],
      },
      null,
      2,
    ));
  } else {
    console.log(
      `Echo servers on loopback: ${options.quick ? "quick" : "full"} run, ` +
        `${options.rounds} round(s), ${Math.round(elapsed)} s`,
    );
    console.log(
      `machine: ${info.cpu}, ${info.cores} cores, ${info.memoryGB} GB, ` +
        `${info.os}; Deno ${info.deno}` +
        (info.node ? `, Node ${info.node}` : "") +
        `; load average at start ${info.loadAverage}`,
    );
    for (const v of variants) console.log(`${v.name}: ${v.about}`);
    console.log();
    console.log(table([...main.rows.values()], main.names, ratios));
    console.log(
      "·: not measured. Ratios: above 1 is better for rates (MB/s, round " +
        "trips/s), below 1 for times and memory (ms, seconds, MB).",
    );
    if (workersOk) {
      console.log();
      console.log(
        "server.ts --workers N: N event loops on one port (SO_REUSEPORT), " +
          `${project === tasks ? "the tasks'" : "the same"} settings, ` +
          `nothing pinned, ${info.cores} cores shared with the load generator`,
      );
      console.log();
      console.log(
        table([...workersTable.rows.values()], workersTable.names, [
          ["workers 2", "workers 1"],
        ]),
      );
    }
    console.log();
    console.log("limits of this benchmark:");
    for (const l of limits) console.log(`- ${l}`);
    if (notes.size > 0) {
      console.log("notes:");
      for (const n of notes) console.log(`- ${n}`);
    }
  }
  return failures > 0 ? 1 : 0;
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
