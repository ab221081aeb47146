/**
 * Spawning the playground's scripts the way a user types them
 * (`deno run --allow-net ... server.ts --port 0`): find the port from the
 * `tcp listening on HOST:PORT` line, keep every byte of stdout and stderr,
 * and always stop the child.
 *
 * Children are spawned with `Deno.execPath()` (under `npx` there is no `deno`
 * on PATH) and `DENO_NO_UPDATE_CHECK=1`.
 */
import assert from "node:assert/strict";

/** The project folder (where the scripts and deno.json live). */
export const ROOT = new URL("../../", import.meta.url);

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

/**
 * The permissions lab.ts is run with in the tests: `deno task lab`'s
 * (deno.json), and --allow-net.
 */
export const LAB_FLAGS = [
  "--allow-run",
  "--allow-read",
  "--allow-env",
  "--allow-net",
];

/** Options for {@link startScript} and {@link runScript}. */
export interface SpawnOptions {
  /** Deno flags placed before the script; default {@link defaultDenoFlags}. */
  denoFlags?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Run the command through `sh -c` with this prefix, e.g. `ulimit -n 64;`. */
  shellPrefix?: string;
  /**
   * A command the child runs under, before everything else, e.g.
   * `["unshare", "-n"]` (see lib/netns.ts).
   */
  wrapper?: string[];
}

/** The command that runs `script` with `args` as a user would type it. */
export function commandFor(
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
  let line = [Deno.execPath(), ...denoArgs];
  if (options.shellPrefix !== undefined) {
    const quote = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
    line = [
      "sh",
      "-c",
      `${options.shellPrefix} exec ${line.map(quote).join(" ")}`,
    ];
  }
  line = [...options.wrapper ?? [], ...line];
  return new Deno.Command(line[0], {
    args: line.slice(1),
    cwd: ROOT,
    env: { ...CHILD_ENV, ...options.env },
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
export function runScript(
  script: string,
  args: string[],
  options: SpawnOptions & { stdin?: Uint8Array; timeoutMs?: number } = {},
): Promise<RunResult> {
  const command = commandFor(script, args, options, {
    stdin: options.stdin ? "piped" : "null",
  });
  return runCommand(command, `${script} ${args.join(" ")}`, options);
}

/**
 * Run `deno task NAME ARGS...` from the project folder, as the README tells
 * a user to, to completion; the same result and time limit as
 * {@link runScript}.
 */
export function runTask(
  name: string,
  args: string[] = [],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", name, ...args],
    cwd: ROOT,
    env: { ...CHILD_ENV, ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  return runCommand(command, `deno task ${name} ${args.join(" ")}`, options);
}

async function runCommand(
  command: Deno.Command,
  label: string,
  options: { stdin?: Uint8Array; timeoutMs?: number },
): Promise<RunResult> {
  const child = command.spawn();
  const timeoutMs = options.timeoutMs ?? 30_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    // Collect the output while stdin is still being written: a child that
    // echoes (netcat mode) stops reading stdin once its stdout pipe is full.
    const output = child.output();
    if (options.stdin) {
      const writer = child.stdin.getWriter();
      // The child may exit before reading all of stdin (e.g. a refused
      // connection); a broken pipe here is not the test's failure.
      await writer.write(options.stdin).catch(() => {});
      await writer.close().catch(() => {});
    }
    const { code, stdout, stderr } = await output;
    if (timedOut) {
      throw new Error(
        `${label} did not finish within ${timeoutMs} ms`,
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
export class OutputCollector {
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

/**
 * A running child process with its output kept: wait for a line, write to
 * its stdin, and always stop it (`await using`). See {@link spawnChild}.
 */
export class Child implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly stdout: OutputCollector;
  readonly stderr: OutputCollector;
  /** What it is, for error messages. */
  readonly label: string;
  #status: Promise<Deno.CommandStatus>;
  #stdin?: WritableStreamDefaultWriter<Uint8Array>;

  constructor(
    child: Deno.ChildProcess,
    stdout: OutputCollector,
    stderr: OutputCollector,
    label: string,
    stdin?: WritableStreamDefaultWriter<Uint8Array>,
  ) {
    this.child = child;
    this.stdout = stdout;
    this.stderr = stderr;
    this.label = label;
    this.#status = child.status;
    this.#stdin = stdin;
  }

  /** The process id (for /proc readings). */
  get pid(): number {
    return this.child.pid;
  }

  /** Resolves with the exit status when the child ends by itself. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /**
   * Wait until stdout has a line matching `re` (a log line about a
   * connection, say), at index `from` or later. Fails when the child exits
   * without printing it, or after `timeoutMs`, so a missing line is a
   * failed test, not a hung one.
   */
  async waitForLine(re: RegExp, timeoutMs = 10_000, from = 0): Promise<string> {
    const matching = () =>
      this.stdout.lines.slice(from).find((l) => re.test(l));
    const exited = this.#status.then(() => this.stdout.done).then(() => {
      const line = matching();
      if (line !== undefined) return line;
      throw new Error(
        `${this.label} exited with no stdout line matching ${re}; ${this.#output()}`,
      );
    });
    return await withTimeout(
      Promise.race([this.stdout.waitFor(re, from), exited]),
      timeoutMs,
      () =>
        `${this.label}: no stdout line matching ${re} within ${timeoutMs} ms; ${this.#output()}`,
    );
  }

  #output(): string {
    return `stdout so far:\n${this.stdout.text()}\nstderr:\n${this.stderr.text()}`;
  }

  /** Write to the child's stdin (spawned with `stdin: true`). */
  async write(data: Uint8Array | string): Promise<void> {
    if (!this.#stdin) throw new Error(`${this.label} has no stdin pipe`);
    await this.#stdin.write(
      typeof data === "string" ? new TextEncoder().encode(data) : data,
    );
  }

  /** Close the child's stdin (its end of input), if it has one. */
  async closeStdin(): Promise<void> {
    await this.#stdin?.close().catch(() => {});
  }

  /**
   * Close stdin, send `signal` and wait for the exit (SIGKILL after
   * `timeoutMs`). Returns the exit status with all output read.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutMs = 15_000,
  ): Promise<Deno.CommandStatus> {
    await this.closeStdin();
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

  /**
   * Wait for the child to exit on its own (after a signal it was already
   * sent: another one might arrive once its handlers are gone, and kill
   * it). Past `timeoutMs` it is killed and this throws.
   */
  async exited(timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    await this.closeStdin();
    const status = await withTimeout(
      this.#status,
      timeoutMs,
      () => `${this.label} did not exit within ${timeoutMs} ms`,
    ).catch(async (err) => {
      await this.stop("SIGKILL");
      throw err;
    });
    await Promise.all([this.stdout.done, this.stderr.done]);
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/**
 * Spawn `command` (stdout and stderr piped; stdin piped if `stdin`) and
 * keep its output: a {@link Child}, for any program (a load generator, a
 * Node server). Scripts of the project start with {@link startScript}.
 */
export function spawnChild(
  command: Deno.Command,
  label: string,
  options: { stdin?: boolean } = {},
): Child {
  const child = command.spawn();
  return new Child(
    child,
    new OutputCollector(child.stdout),
    new OutputCollector(child.stderr),
    label,
    options.stdin ? child.stdin.getWriter() : undefined,
  );
}

/** A listening script started by {@link startScript}. */
export class RunningScript extends Child {
  /** The host from the listening line, without brackets (`::1`). */
  readonly host: string;
  /** The port from the listening line. */
  readonly port: number;

  constructor(
    child: Deno.ChildProcess,
    stdout: OutputCollector,
    stderr: OutputCollector,
    host: string,
    port: number,
    label = "the script",
  ) {
    super(child, stdout, stderr, label);
    this.host = host;
    this.port = port;
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
      // Not a listener (an error, a wrong line): stop it, then read what
      // it said on stderr (a live child's stderr would never end).
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await stderr.done.catch(() => {});
      throw new Error(
        `${script} ${args.join(" ")}: expected a listening line first, got ${
          JSON.stringify(first)
        }; stderr: ${stderr.text()}`,
      );
    }
    const host = match[2].replace(/^\[|\]$/g, "");
    return new RunningScript(
      child,
      stdout,
      stderr,
      host,
      Number(match[3]),
      `${script} ${args.join(" ")}`,
    );
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await Promise.all([stdout.done, stderr.done]);
    throw err;
  }
}

/** stderr is one `error:` line matching `reason`: no usage, no stack trace. */
export function assertOneErrorLine(stderr: string, reason: RegExp): void {
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line expected, got:\n${stderr}`);
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], reason);
  assert.ok(!hasStackTrace(stderr), stderr);
}

/** Whether the script printed a JavaScript stack trace (it never should). */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+[:(]/m.test(text) || /Uncaught/.test(text);
}
