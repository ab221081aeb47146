/**
 * bench/bench.ts: how fast are the echo servers? `deno task bench`.
 *
 * Starts server.ts and udp.ts as a user would (`--port 0 --quiet`), drives
 * them over loopback with load-generator processes (bench/load.ts) and
 * prints a table; `--json` prints the same figures as JSON. With
 * `--compare node` it runs the same loads, in the same run and alternating,
 * against a plain Node.js echo server (bench/node_echo.mjs) and prints the
 * ratio project/Node for every figure.
 *
 *   deno task bench                     full run, medians of 3 rounds
 *   deno task bench --compare node      the same, against Node too
 *   deno task bench --quick             small sizes, about 1 s per load
 *   deno task bench --json              figures as JSON on stdout
 *
 * Its limits, stated in the output as well: the load generator runs on the
 * same machine and shares the CPU with the server; "server CPU %" shows
 * whether the server was the bottleneck (near 100 %) or not.
 */

import { quantileMs } from "./load.ts";

const ROOT = new URL("..", import.meta.url);
const path = (name: string) => new URL(name, ROOT).pathname;

/** The descriptor limit asked for (`ulimit -n`), for 10,000 connections. */
const WANT_FDS = 30_000;
/** Busy connections per load-generator process (see the fairness notes). */
const CONNS_PER_WORKER = 125;
/** UDP sockets doing ping-pong at once (all in one load process). */
const UDP_SOCKETS = 32;

export const USAGE =
  `usage: deno task bench [--quick] [--json] [--compare node] [--rounds N]

Measures server.ts and udp.ts on loopback and prints a table.
  --quick          small sizes, about 1 s per load (a smoke test)
  --json           print the figures as JSON instead of a table
  --compare node   run the same loads against a plain Node.js echo server
                   (bench/node_echo.mjs), alternating, and print ratios
  --rounds N       rounds to take medians over (default 3, --quick 1)
  --help           show this help`;

interface Options {
  quick: boolean;
  json: boolean;
  compare: boolean;
  rounds: number;
}

function parseArgs(args: string[]): Options | "help" {
  const o: Options = { quick: false, json: false, compare: false, rounds: 0 };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--help" || a === "-h") return "help";
    else if (a === "--quick") o.quick = true;
    else if (a === "--json") o.json = true;
    else if (a === "--compare" && args[i + 1] === "node") {
      o.compare = true;
      i++;
    } else if (a === "--compare=node") o.compare = true;
    else if (a === "--rounds" && /^[1-9]\d?$/.test(args[i + 1] ?? "")) {
      o.rounds = Number(args[++i]);
    } else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  o.rounds ||= o.quick ? 1 : 3;
  return o;
}

/** Sizes and durations of the loads: the full run and `--quick`. */
function plan(quick: boolean) {
  return quick
    ? { streamBytes: 16 << 20, seconds: 1, holdConns: 1000 }
    : { streamBytes: 256 << 20, seconds: 3, holdConns: 10_000 };
}

// ---------------------------------------------------------------------------
// Child processes: servers and load generators, always through `sh -c` so
// the descriptor limit can be raised first, and always killed at the end.

const children = new Set<Proc>();

/** A child process with its stdout split into lines. */
class Proc {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  #waiters: (() => void)[] = [];
  #stdin?: WritableStreamDefaultWriter<Uint8Array>;
  readonly done: Promise<void>;

  constructor(readonly name: string, cmd: string[], stdin = false) {
    // `ulimit -n` above the hard limit fails: fall back to the hard limit.
    const script = `ulimit -n ${WANT_FDS} 2>/dev/null ||
      ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"`;
    this.child = new Deno.Command("sh", {
      args: ["-c", script, "sh", ...cmd],
      cwd: ROOT,
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin) this.#stdin = this.child.stdin.getWriter();
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

type Target = "project" | "node";

interface Server {
  proc: Proc;
  port: number;
}

async function startServer(
  target: Target,
  protocol: "tcp" | "udp",
): Promise<Server> {
  const deno = [Deno.execPath(), "run", "--allow-net=127.0.0.1"];
  const cmd = target === "node"
    ? ["node", path("bench/node_echo.mjs"), protocol, "--port", "0"]
    : protocol === "tcp"
    ? [
      ...deno,
      path("server.ts"),
      ...["--port", "0", "--quiet", "--max-connections", "20000"],
    ]
    : [...deno, "--unstable-net", path("udp.ts"), "serve", "--port", "0"]
      .concat("--quiet");
  const proc = new Proc(`${target} ${protocol} server`, cmd);
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
// Loads: each spawns load-generator workers, waits for all to be `ready`,
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

async function runWorkers(
  server: Server,
  argsPerWorker: string[][],
  timeoutMs: number,
): Promise<{ results: Record<string, unknown>[]; cpu: Measured }> {
  const workers = argsPerWorker.map((args, i) =>
    new Proc(`load worker ${i + 1} (${args[0]})`, [
      Deno.execPath(),
      "run",
      "--allow-net=127.0.0.1",
      "--unstable-net",
      path("bench/load.ts"),
      ...args,
    ], true)
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

async function tcpStream(server: Server, bytes: number): Promise<Measured> {
  const load = `tcp stream ${bytes >> 20} MiB`;
  const { results, cpu } = await runWorkers(server, [[
    "stream",
    ...["--port", String(server.port), "--bytes", String(bytes)],
  ]], 120_000);
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

async function tcpRoundTrips(
  server: Server,
  conns: number,
  seconds: number,
  notes: Set<string>,
): Promise<Measured> {
  const load = `tcp rr c=${conns}`;
  const workers = Math.ceil(conns / CONNS_PER_WORKER);
  const { results, cpu } = await runWorkers(
    server,
    split(conns, workers).map((c) => [
      "rr",
      ...["--port", String(server.port), "--conns", String(c)],
      ...["--seconds", String(seconds), "--size", "64"],
    ]),
    seconds * 1000 + 30_000,
  );
  const rs = results as {
    seconds: number;
    counts: number[];
    histogram: number[];
    errors: number;
    firstError: string;
  }[];
  const errors = rs.reduce((a, r) => a + r.errors, 0);
  if (errors > 0) {
    const first = rs.find((r) => r.firstError)?.firstError;
    notes.add(`${load}: ${errors} connections failed (${first})`);
  }
  const counts = rs.flatMap((r) => r.counts);
  const total = counts.reduce((a, b) => a + b, 0);
  const squares = counts.reduce((a, b) => a + b * b, 0);
  const secs = Math.max(...rs.map((r) => r.seconds));
  const hist = rs.map((r) => r.histogram);
  return [
    { load, figure: "round trips/s", better: "higher", value: total / secs },
    { load, figure: "p50 ms", better: "lower", value: quantileMs(hist, 0.5) },
    { load, figure: "p99 ms", better: "lower", value: quantileMs(hist, 0.99) },
    {
      load,
      figure: "connections with no reply",
      value: counts.filter((c) => c === 0).length,
    },
    {
      load,
      figure: "Jain fairness (1 = fair)",
      value: squares > 0 ? total * total / (counts.length * squares) : 0,
    },
    ...cpu.map((f) => ({ ...f, load })),
  ];
}

async function udpRoundTrips(
  server: Server,
  size: number,
  seconds: number,
): Promise<Measured> {
  const load = `udp rr ${size} B`;
  const { results, cpu } = await runWorkers(
    server,
    [[
      "udp",
      ...["--port", String(server.port), "--sockets", String(UDP_SOCKETS)],
      ...["--seconds", String(seconds), "--size", String(size)],
    ]],
    seconds * 1000 + 30_000,
  );
  const rs = results as {
    seconds: number;
    received: number;
    lost: number;
    histogram: number[];
  }[];
  const received = rs.reduce((a, r) => a + r.received, 0);
  const lost = rs.reduce((a, r) => a + r.lost, 0);
  const secs = Math.max(...rs.map((r) => r.seconds));
  return [
    {
      load,
      figure: "round trips/s",
      better: "higher",
      value: received / secs,
    },
    {
      load,
      figure: "loss %",
      value: received + lost > 0 ? lost / (received + lost) * 100 : 100,
    },
    {
      load,
      figure: "p99 ms",
      better: "lower",
      value: quantileMs(rs.map((r) => r.histogram), 0.99),
    },
    ...cpu.map((f) => ({ ...f, load })),
  ];
}

/**
 * Many connections: a fresh server, `conns` connections opened by 4
 * workers and held, one echo each; time to open them all, and the server's
 * resident memory before and with all of them open.
 */
async function manyConnections(
  target: Target,
  conns: number,
  notes: Set<string>,
): Promise<Measured> {
  const load = `tcp hold ${conns} connections`;
  const server = await startServer(target, "tcp");
  const workers: Proc[] = [];
  try {
    const limit = await fdLimit(server.proc.pid);
    if (limit < conns + 100) {
      notes.add(
        `${target} server: open-file limit ${limit}, under the ${conns} ` +
          `connections asked for (ulimit -n ${WANT_FDS} was not allowed): ` +
          `the connections over it fail`,
      );
    } else if (limit < WANT_FDS) {
      notes.add(
        `ulimit -n ${WANT_FDS} was not allowed here; ran with the hard ` +
          `limit, ${limit}, which is enough for ${conns} connections`,
      );
    }
    await new Promise((r) => setTimeout(r, 300)); // let start-up settle
    const idle = await rssMB(server.proc.pid);
    for (const [i, c] of split(conns, 4).entries()) {
      workers.push(
        new Proc(`hold worker ${i + 1}`, [
          Deno.execPath(),
          "run",
          "--allow-net=127.0.0.1",
          path("bench/load.ts"),
          ...["hold", "--port", String(server.port), "--conns", String(c)],
        ], true),
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
      notes.add(
        `${target}: ${failed} of ${conns} connections failed to open or echo` +
          ` (${rs.find((r) => r.firstError)?.firstError})`,
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

function format(value: number, figure: string): string {
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

interface Row {
  load: string;
  figure: string;
  better?: "higher" | "lower";
  project: number[];
  node: number[];
}

function table(rows: Row[], compare: boolean): string {
  const head = compare
    ? ["load", "figure", "project", "node", "project/node"]
    : ["load", "figure", "project"];
  const body = rows.map((r) => {
    const p = median(r.project);
    const cells = [r.load, r.figure, format(p, r.figure)];
    if (compare) {
      const n = median(r.node);
      const ratio = r.better && n > 0 ? (p / n).toFixed(2) : "";
      cells.push(format(n, r.figure), ratio);
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

// ---------------------------------------------------------------------------

async function bench(options: Options): Promise<number> {
  const sizes = plan(options.quick);
  const info = await machine();
  const notes = new Set<string>();
  let compare = options.compare;
  if (compare && !info.node) {
    notes.add("--compare node skipped: node is not on PATH");
    compare = false;
  }
  const targets: Target[] = compare ? ["project", "node"] : ["project"];
  const rows = new Map<string, Row>();
  const record = (target: Target, figures: Measured) => {
    for (const f of figures) {
      const key = `${f.load}\0${f.figure}`;
      if (!rows.has(key)) {
        rows.set(key, { ...f, project: [], node: [] });
      }
      rows.get(key)![target].push(f.value);
    }
  };
  let failures = 0;
  const attempt = async (
    target: Target,
    what: string,
    run: () => Promise<Measured>,
  ) => {
    if (!options.json) {
      await Deno.stderr.write(
        new TextEncoder().encode(`  ${target}: ${what}\n`),
      );
    }
    try {
      record(target, await run());
    } catch (err) {
      failures++;
      notes.add(`${target} ${what} failed: ${(err as Error).message}`);
    }
  };

  const started = performance.now();
  for (let round = 1; round <= options.rounds; round++) {
    // Alternate which server goes first, so neither always gets the
    // quieter moment.
    const order = round % 2 ? targets : [...targets].reverse();
    if (!options.json) {
      console.error(`round ${round} of ${options.rounds}`);
    }
    const tcp = new Map<Target, Server>();
    const udp = new Map<Target, Server>();
    try {
      for (const t of order) {
        tcp.set(t, await startServer(t, "tcp"));
        try {
          udp.set(t, await startServer(t, "udp"));
        } catch (err) {
          notes.add(`${t} udp server: ${(err as Error).message}`);
        }
      }
      for (const t of order) {
        await attempt(
          t,
          "tcp stream",
          () => tcpStream(tcp.get(t)!, sizes.streamBytes),
        );
      }
      for (const conns of [1, 50, 500]) {
        for (const t of order) {
          await attempt(
            t,
            `tcp rr c=${conns}`,
            () => tcpRoundTrips(tcp.get(t)!, conns, sizes.seconds, notes),
          );
        }
      }
      for (const size of [64, 1400]) {
        for (const t of order) {
          const server = udp.get(t);
          if (!server) continue;
          await attempt(
            t,
            `udp rr ${size} B`,
            () => udpRoundTrips(server, size, sizes.seconds),
          );
        }
      }
    } finally {
      for (const s of [...tcp.values(), ...udp.values()]) await s.proc.stop();
    }
    for (const t of order) {
      await attempt(
        t,
        `${sizes.holdConns} connections`,
        () => manyConnections(t, sizes.holdConns, notes),
      );
    }
  }
  const elapsed = (performance.now() - started) / 1000;

  const limits = [
    `The load generator (bench/load.ts, Deno) runs on this machine ` +
    `(${info.cores} cores) and shares the CPU with the server. "server CPU ` +
    `%" is the server's CPU time over the load (100 = one core, kernel ` +
    `time for loopback included): well under 100 means the server was ` +
    `waiting for the client, and the figure is the client's limit more ` +
    `than the server's; Node and our servers then score alike.`,
    `To keep the client from being the bottleneck it uses as few processes ` +
    `as each load allows (on 2 cores, every extra client process measured ` +
    `slower): one for the stream, c=1, c=50 and UDP (${UDP_SOCKETS} ` +
    `sockets), four for c=500 and for many connections.`,
    `No load process drives more than ${CONNS_PER_WORKER} busy ` +
    `connections: a Deno process serves at most 128 ready sockets per turn ` +
    `of its event loop (tokio's cooperative budget), so a bigger client ` +
    `would starve its own connections and blame the server.`,
    `Loopback only: no network, no NIC, no packet loss but the kernel's.`,
    `Figures are medians of ${options.rounds} round(s)` +
    (compare ? "; project and Node alternate, order flipped each round." : "."),
  ];
  const ordered = [...rows.values()];
  if (options.json) {
    console.log(JSON.stringify(
      {
        machine: info,
        mode: options.quick ? "quick" : "full",
        rounds: options.rounds,
        seconds: Math.round(elapsed),
        figures: ordered.map((r) => ({
          load: r.load,
          figure: r.figure,
          better: r.better ?? null,
          project: median(r.project),
          projectRounds: r.project,
          ...(compare
            ? {
              node: median(r.node),
              nodeRounds: r.node,
              ratio: r.better ? median(r.project) / median(r.node) : null,
            }
            : {}),
        })),
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
    console.log();
    console.log(table(ordered, compare));
    if (compare) {
      console.log(
        "project/node: above 1 is better for rates (MB/s, round trips/s), " +
          "below 1 for times and memory (ms, seconds, MB).",
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
    options = parseArgs(Deno.args);
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
