/**
 * Test helpers: start the playground's scripts the way a user types them
 * (`deno run --allow-net ... server.ts --port 0`), find the port from the
 * `tcp listening on HOST:PORT` line, keep every byte of stdout and stderr,
 * and always stop the child.
 *
 * Children are spawned with `Deno.execPath()` (under `npx` there is no `deno`
 * on PATH) and `DENO_NO_UPDATE_CHECK=1`.
 */

/** The project folder (where the scripts and deno.json live). */
export const ROOT = new URL("..", import.meta.url);

/** Absolute path of a file in the project folder. */
export function projectPath(name: string): string {
  return new URL(name, ROOT).pathname;
}

/** Environment for every child: no update check, no colours in output. */
export const CHILD_ENV: Record<string, string> = {
  DENO_NO_UPDATE_CHECK: "1",
  NO_COLOR: "1",
};

/** The Deno permission flags the README shows for each script. */
export function defaultDenoFlags(script: string): string[] {
  return script === "udp.ts"
    ? ["--allow-net", "--unstable-net"]
    : ["--allow-net"];
}

/** Options for {@link startScript} and {@link runScript}. */
export interface SpawnOptions {
  /** Deno flags placed before the script; default {@link defaultDenoFlags}. */
  denoFlags?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Run the command through `sh -c` with this prefix, e.g. `ulimit -n 64;`. */
  shellPrefix?: string;
}

function commandFor(
  script: string,
  args: string[],
  options: SpawnOptions,
  io: { stdin: "piped" | "null" },
): Deno.Command {
  const denoArgs = [
    "run",
    ...(options.denoFlags ?? defaultDenoFlags(script)),
    projectPath(script),
    ...args,
  ];
  const env = { ...CHILD_ENV, ...options.env };
  if (options.shellPrefix !== undefined) {
    const quote = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
    const line = `${options.shellPrefix} exec ${
      [Deno.execPath(), ...denoArgs].map(quote).join(" ")
    }`;
    return new Deno.Command("sh", {
      args: ["-c", line],
      cwd: ROOT,
      env,
      stdin: io.stdin,
      stdout: "piped",
      stderr: "piped",
    });
  }
  return new Deno.Command(Deno.execPath(), {
    args: denoArgs,
    cwd: ROOT,
    env,
    stdin: io.stdin,
    stdout: "piped",
    stderr: "piped",
  });
}

/** The result of a finished script. */
export interface RunResult {
  code: number;
  stdout: Uint8Array;
  stderr: string;
  /** stdout decoded as UTF-8. */
  out: string;
}

/**
 * Run a script to completion (a client, `--help`, a bad flag), optionally
 * feeding `stdin`. Fails the test if it takes longer than `timeoutMs`.
 */
export async function runScript(
  script: string,
  args: string[],
  options: SpawnOptions & { stdin?: Uint8Array; timeoutMs?: number } = {},
): Promise<RunResult> {
  const child = commandFor(script, args, options, {
    stdin: options.stdin ? "piped" : "null",
  }).spawn();
  const timeoutMs = options.timeoutMs ?? 30_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    if (options.stdin) {
      const writer = child.stdin.getWriter();
      // The child may exit before reading all of stdin (e.g. a refused
      // connection); a broken pipe here is not the test's failure.
      await writer.write(options.stdin).catch(() => {});
      await writer.close().catch(() => {});
    }
    const { code, stdout, stderr } = await child.output();
    if (timedOut) {
      throw new Error(
        `${script} ${args.join(" ")} did not finish within ${timeoutMs} ms`,
      );
    }
    return {
      code,
      stdout,
      stderr: new TextDecoder().decode(stderr),
      out: new TextDecoder().decode(stdout),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Collects a child's output stream: all bytes, and complete lines. */
class OutputCollector {
  readonly lines: string[] = [];
  #chunks: Uint8Array[] = [];
  #partial = "";
  #decoder = new TextDecoder();
  #waiters: { re: RegExp; from: number; resolve: (l: string) => void }[] = [];
  readonly done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const chunk of stream) {
      this.#chunks.push(chunk);
      this.#partial += this.#decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = this.#partial.indexOf("\n")) >= 0) {
        this.#addLine(this.#partial.slice(0, nl));
        this.#partial = this.#partial.slice(nl + 1);
      }
    }
    if (this.#partial) this.#addLine(this.#partial);
    this.#partial = "";
  }

  #addLine(line: string): void {
    this.lines.push(line);
    const index = this.lines.length - 1;
    this.#waiters = this.#waiters.filter((w) => {
      if (index >= w.from && w.re.test(line)) {
        w.resolve(line);
        return false;
      }
      return true;
    });
  }

  /** Resolves with the first line (at index >= `from`) matching `re`. */
  waitFor(re: RegExp, from = 0): Promise<string> {
    const found = this.lines.slice(from).find((l) => re.test(l));
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ re, from, resolve }));
  }

  text(): string {
    return this.lines.join("\n") + (this.#partial ? "\n" + this.#partial : "");
  }
}

/** A listening script started by {@link startScript}. */
export class RunningScript implements AsyncDisposable {
  /** The host from the listening line, without brackets (`::1`). */
  readonly host: string;
  /** The port from the listening line. */
  readonly port: number;
  readonly child: Deno.ChildProcess;
  readonly stdout: OutputCollector;
  readonly stderr: OutputCollector;
  #status: Promise<Deno.CommandStatus>;

  constructor(
    child: Deno.ChildProcess,
    stdout: OutputCollector,
    stderr: OutputCollector,
    host: string,
    port: number,
  ) {
    this.child = child;
    this.stdout = stdout;
    this.stderr = stderr;
    this.host = host;
    this.port = port;
    this.#status = child.status;
  }

  /** The process id of the running `deno` (for /proc readings). */
  get pid(): number {
    return this.child.pid;
  }

  /**
   * Wait until stdout has a line matching `re` (a log line about a
   * connection, say). Fails after `timeoutMs` so a missing line is a failed
   * test, not a hung one.
   */
  async waitForLine(re: RegExp, timeoutMs = 10_000, from = 0): Promise<string> {
    return await withTimeout(
      this.stdout.waitFor(re, from),
      timeoutMs,
      () =>
        `no stdout line matching ${re} within ${timeoutMs} ms; stdout so far:\n${this.stdout.text()}\nstderr:\n${this.stderr.text()}`,
    );
  }

  /** Resolves with the exit status when the child ends by itself. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /**
   * Send `signal` and wait for the exit (SIGKILL after `timeoutMs`). Returns
   * the exit status with all output read.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutMs = 15_000,
  ): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch { /* already exited */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killer = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        try {
          this.child.kill("SIGKILL");
        } catch { /* gone */ }
        resolve();
      }, timeoutMs);
    });
    const status = await Promise.race([this.#status, killer.then(() => null)]);
    clearTimeout(timer);
    const final = status ?? await this.#status;
    await Promise.all([this.stdout.done, this.stderr.done]);
    return final;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/** Reject with `message()` if `promise` has not settled after `ms`. */
export async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  message: () => string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message())), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The listening line every listening script prints first on stdout. */
export const LISTENING_LINE =
  /^(tcp|udp) listening on (\[[0-9a-fA-F:.]+\]|[^\s:]+):(\d+)$/;

/**
 * Start a listening script (`server.ts` or `udp.ts`) and wait for its first
 * stdout line, `tcp listening on HOST:PORT`. Use with `await using` so the
 * child is always killed:
 *
 * ```ts
 * await using server = await startScript("server.ts", ["--port", "0"]);
 * ```
 */
export async function startScript(
  script: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<RunningScript> {
  const child = commandFor(script, args, options, { stdin: "null" }).spawn();
  const stdout = new OutputCollector(child.stdout);
  const stderr = new OutputCollector(child.stderr);
  try {
    const first = await withTimeout(
      Promise.race([
        stdout.waitFor(/./),
        child.status.then(() => stdout.done).then(() => stdout.lines[0] ?? ""),
      ]),
      20_000,
      () => `${script} printed no listening line within 20 s`,
    );
    const match = LISTENING_LINE.exec(first);
    if (!match || stdout.lines[0] !== first) {
      await stderr.done.catch(() => {});
      throw new Error(
        `${script} ${args.join(" ")}: expected a listening line first, got ${
          JSON.stringify(first)
        }; stderr: ${stderr.text()}`,
      );
    }
    const host = match[2].replace(/^\[|\]$/g, "");
    return new RunningScript(child, stdout, stderr, host, Number(match[3]));
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await Promise.all([stdout.done, stderr.done]);
    throw err;
  }
}

/** Random bytes (crypto.getRandomValues fills at most 64 KiB per call). */
export function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65_536) {
    crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65_536)));
  }
  return bytes;
}

/** SHA-256 of bytes, as hex: compare payloads without printing megabytes. */
export async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** Concatenate chunks into one array. */
export function concat(chunks: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** Write all of `data`, however many calls `write()` needs (client.ts's own). */
export { writeAll } from "../client.ts";

/** Read from `conn` until the peer closes (EOF); returns all bytes. */
export async function readAll(
  conn: Deno.Conn,
): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  return concat(chunks);
}

/** Read exactly `size` bytes (or fewer if the peer closes first). */
export async function readExactly(
  conn: Deno.Conn,
  size: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(size);
  let got = 0;
  while (got < size) {
    const n = await conn.read(out.subarray(got));
    if (n === null) return out.slice(0, got);
    got += n;
  }
  return out;
}

/** Whether this machine can bind the IPv6 loopback `::1`. */
export function hasIpv6Loopback(): boolean {
  try {
    const l = Deno.listen({ hostname: "::1", port: 0 });
    l.close();
    return true;
  } catch {
    return false;
  }
}

/** Whether the script printed a JavaScript stack trace (it never should). */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+[:(]/m.test(text) || /Uncaught/.test(text);
}

// --- /proc readings (Linux): how a spawned script uses the machine ---------
// Deno asks for --allow-all to read another process's /proc entries, so the
// tests read them with `cat` and `ls` (--allow-run is enough for that).

async function procText(command: string, args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    stdin: "null",
  }).output();
  if (code !== 0) {
    throw new Error(
      `${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`,
    );
  }
  return new TextDecoder().decode(stdout);
}

/** Resident memory of process `pid` (VmRSS in /proc/PID/status), in bytes. */
export async function residentBytes(pid: number): Promise<number> {
  const status = await procText("cat", [`/proc/${pid}/status`]);
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** How many file descriptors process `pid` has open (/proc/PID/fd). */
export async function openFdCount(pid: number): Promise<number> {
  const list = await procText("ls", ["-U", `/proc/${pid}/fd`]);
  return list.split("\n").filter((l) => l !== "").length;
}

/**
 * CPU time process `pid` has used so far, user plus system, in milliseconds
 * (fields 14 and 15 of /proc/PID/stat, in clock ticks of 1/100 s).
 */
export async function cpuTimeMs(pid: number): Promise<number> {
  const stat = await procText("cat", [`/proc/${pid}/stat`]);
  // The command name (field 2) is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The command name of process `pid` (/proc/PID/comm): `deno`, `sh`. */
export async function processName(pid: number): Promise<string> {
  return (await procText("cat", [`/proc/${pid}/comm`])).trim();
}

/**
 * A small seeded pseudo-random generator (mulberry32): numbers in [0, 1).
 * Tests that draw random inputs print the seed so a failure can be replayed.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What one run of a script with a junk command line did. */
export interface JunkRun {
  args: string[];
  code: number;
  /** Whether it printed a listening line (it was then stopped with SIGTERM). */
  listened: boolean;
  /** Whether it had to be killed because it neither exited nor listened. */
  hung: boolean;
  out: string;
  stderr: string;
}

/**
 * Run `script` with `args` as a user would, for at most `timeoutMs`. A
 * script that prints a listening line has valid arguments and is serving:
 * it is stopped with SIGTERM (and must then exit 0). One that neither exits
 * nor listens in time is killed and reported as hung.
 */
export async function runJunk(
  script: string,
  args: string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<JunkRun> {
  const child = commandFor(script, args, options, { stdin: "null" }).spawn();
  const stdout = new OutputCollector(child.stdout);
  const stderr = new OutputCollector(child.stderr);
  let listened = false;
  let hung = false;
  stdout.waitFor(LISTENING_LINE).then(() => {
    listened = true;
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
  });
  const timer = setTimeout(() => {
    hung = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs ?? 10_000);
  try {
    const { code } = await child.status;
    await Promise.all([stdout.done, stderr.done]);
    return {
      args,
      code,
      listened,
      hung,
      out: stdout.text(),
      stderr: stderr.text(),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Odd strings a command line may hold: edge numbers, unicode, shell bits. */
const JUNK_WORDS = [
  "",
  " ",
  "-",
  "--",
  "---",
  "-x",
  "--=",
  "=",
  "==",
  "--port=",
  "-1",
  "3.5",
  "1e3",
  "0x10",
  "NaN",
  "Infinity",
  "٣",
  "８０",
  "🦕",
  "é",
  "日本語",
  "\u202e",
  "\n",
  "\t",
  "'",
  '"',
  "\\",
  "$(true)",
  "%s%n",
  "../../etc/passwd",
  "/",
  "::",
  "0.0.0.0",
  "::1",
  "[::1]",
  "[::1",
  "127.0.0.1",
  "localhost",
  "256.1.1.1",
  "fe80::1%lo",
  "1.2.3.4.5",
  "serve",
  "send",
  "--HELP",
  "--Port",
  "-p",
];

/** Port values that never name a real port: 0 (any free one) or invalid. */
const JUNK_PORTS = [
  "0",
  "00",
  "-0",
  "-1",
  "65536",
  "70000",
  "99999999999999999999",
  "1e3",
  "0x50",
  " 0",
  "+0",
  "abc",
  "٠",
  "",
];

/** Timeouts (ms) that keep a run short, or are invalid. */
const JUNK_TIMEOUTS = ["1", "50", "200", "0", "-5", "1.5", "abc", "", "1e9x"];

/**
 * A random junk command line for a script that knows `flags`. Any port in
 * it is 0 or invalid and any timeout is short, so a run never touches a
 * real service or waits long; `--port 0` comes first so the default port is
 * never used either.
 */
export function junkArgs(random: () => number, flags: string[]): string[] {
  const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)];
  const word = (): string => {
    const r = random();
    if (r < 0.6) return pick(JUNK_WORDS);
    if (r < 0.8) {
      // A random unicode string, some of it outside the BMP.
      const length = 1 + Math.floor(random() * 12);
      return Array.from(
        { length },
        () => String.fromCodePoint(0x21 + Math.floor(random() * 0x1f000)),
      ).join("").replace(/[\ud800-\udfff]/g, "?");
    }
    if (r < 0.9) return pick(["a", "é", "🦕", "-", "9"]).repeat(20_000);
    // A number, but never a usable port (a flag left without its value
    // takes the next word as its value).
    return String(65_536 + Math.floor(random() * 1e6));
  };
  const value = (flag: string): string =>
    flag === "--port"
      ? pick(JUNK_PORTS)
      : flag === "--timeout"
      ? pick(JUNK_TIMEOUTS)
      : random() < 0.5
      ? word()
      : String(Math.floor(random() * 100));
  const args = ["--port", "0"];
  const count = Math.floor(random() * 8);
  for (let i = 0; i < count; i++) {
    if (random() < 0.55) {
      const flag = pick(flags);
      const r = random();
      if (r < 0.25) args.push(`${flag}=${value(flag)}`);
      else if (r < 0.85) args.push(flag, value(flag));
      else args.push(flag);
    } else {
      args.push(word());
    }
  }
  return args;
}

/** Run `task(0..count-1)` with at most `concurrency` running at once. */
export async function pool<T>(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

/** Why a junk run broke the rules, or "" if it kept them. */
export function junkProblem(r: JunkRun): string {
  if (r.hung) return "neither exited nor listened within the time limit";
  if (hasStackTrace(r.stderr)) return "stack trace on stderr";
  if (r.listened) return r.code === 0 ? "" : `exit ${r.code} after SIGTERM`;
  if (r.code === 0) {
    return /^usage: /.test(r.out) ? "" : "exit 0 without usage or listening";
  }
  if (r.code !== 1 && r.code !== 2) return `exit ${r.code}`;
  if (!/^error: \S/.test(r.stderr)) return `exit ${r.code} without "error: "`;
  if (r.code === 2 && !/\nusage: /.test(r.stderr)) return "exit 2, no usage";
  return "";
}

/**
 * Run `count` random junk command lines (see {@link junkArgs}) against
 * `script`, six at a time, under `denoFlags`. Returns a one-line summary
 * (with the seed, to replay a failure) and a description of each run that
 * broke the rules of {@link junkProblem}.
 */
export async function junkRound(
  script: string,
  flags: readonly string[],
  count: number,
  denoFlags: string[],
  seed = Math.floor(Math.random() * 2 ** 32),
): Promise<{ summary: string; problems: string[] }> {
  const random = seededRandom(seed);
  const lists = Array.from(
    { length: count },
    () => junkArgs(random, [...flags]),
  );
  const started = performance.now();
  const runs = await pool(
    count,
    6,
    (i) => runJunk(script, lists[i], { denoFlags, timeoutMs: 10_000 }),
  );
  const tally = (code: number) => runs.filter((r) => r.code === code).length;
  const summary = `junk ${script}: ${count} command lines (seed ${seed}) in ${
    (performance.now() - started).toFixed(0)
  } ms: ${runs.filter((r) => r.listened).length} listened, exit 0/1/2: ${
    tally(0)
  }/${tally(1)}/${tally(2)}`;
  const short = (a: string) => a.length > 60 ? a.slice(0, 60) + "…" : a;
  const problems = runs.flatMap((r) => {
    const why = junkProblem(r);
    return why === "" ? [] : [
      `${why}: ${script} ${
        JSON.stringify(r.args.map(short))
      } -> exit ${r.code}\n${r.stderr.slice(0, 600)}`,
    ];
  });
  return { summary, problems };
}
