/**
 * lib/plumbing.ts: the one source of the plumbing that several scripts need
 * (flag parsing, error lines, logging, signals, the hex dump).
 *
 * The scripts stand alone (a learner copies one file and runs it), so they
 * do not import this module: `deno task sync` copies into each script only
 * the declarations it uses, with what those depend on, between the markers
 * `// ===== shared block: begin =====` and `// ===== shared block: end =====`.
 * Edit here, then run `deno task sync`; tests/shared_block_test.ts fails
 * when a script's copy is stale. Tests import this module directly.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** A bad command line: the reason is printed with the usage, exit 2. */
export class UsageError extends Error {}

/**
 * Parse `args` with `parseArgs` from `node:util` (built into Deno), turning
 * its errors into one-line {@link UsageError}s a person can act on.
 */
export function parseFlags<T extends ParseArgsOptionsConfig>(
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    const message = errorText(err);
    const flag = /'(-[^' ]*)/.exec(message)?.[1] ?? "";
    const code = (err as { code?: string }).code;
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      throw new UsageError(`unknown flag ${JSON.stringify(flag)}`);
    }
    if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
      const arg = /'([^']*)'/.exec(message)?.[1] ?? "";
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    }
    if (/does not take an argument/.test(message)) {
      throw new UsageError(`${flag} takes no value`);
    }
    if (/ambiguous/.test(message)) {
      // `--port -1`: parseArgs will not take a value that looks like a flag.
      const next = args[args.indexOf(flag) + 1] ?? "";
      throw new UsageError(
        `${flag} does not take ${
          JSON.stringify(next)
        } (a value that starts with "-" is written ${flag}=${next})`,
      );
    }
    if (/argument missing/.test(message)) {
      throw new UsageError(`${flag} needs a value`);
    }
    throw new UsageError(message.split("\n")[0]);
  }
}

/**
 * Check `--hostname`: an IPv4 or IPv6 literal (`::1` or `[::1]`) or a name.
 * Host and port in one (`127.0.0.1:8080`) is the usual slip: say so.
 */
export function parseHostname(text: string): string {
  const bracketed = /^\[([^\]]*)\](:\d+)?$/.exec(text);
  const host = bracketed ? bracketed[1] : text;
  if (bracketed?.[2] || (!bracketed && /^[^:]*:\d*$/.test(text))) {
    throw new UsageError(
      `--hostname takes no port (${JSON.stringify(text)}); use --port`,
    );
  }
  if (!/^[0-9A-Za-z.:_%-]+$/.test(host)) {
    throw new UsageError(
      `--hostname: not an address or name: ${JSON.stringify(text)}`,
    );
  }
  return host;
}

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

// The longest wait a JavaScript timer holds: 2^31-1 ms, about 24.8 days. A
// longer setTimeout fires at once, so a longer timeout flag is refused.
export const MAX_TIMER_SECONDS = 2_147_483;

/**
 * A number of seconds from 0 to {@link MAX_TIMER_SECONDS} (`0.5` allowed),
 * or a {@link UsageError}.
 */
export function parseSeconds(flag: string, text: string): number {
  const n = /^\d{1,9}(\.\d{1,6})?$/.test(text) ? Number(text) : NaN;
  if (!(n >= 0 && n <= MAX_TIMER_SECONDS)) {
    throw new UsageError(
      `${flag} must be a number of seconds from 0 to ${MAX_TIMER_SECONDS} (about 24 days, the longest timer JavaScript holds), not ${
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

/** A host as `--allow-net` wants it: IPv6 in brackets. */
export function allowNetHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/**
 * Why a listening socket could not be opened, in one sentence that names
 * the protocol and address (`where`, e.g. `tcp 127.0.0.1:8080`) and what to
 * try: another program has the port, Deno lacks the grant, the OS refuses a
 * low port, the address is not this machine's, the name does not resolve.
 */
export function explainListenError(
  err: unknown,
  where: string,
  hostname: string,
): string {
  if (err instanceof Deno.errors.AddrInUse) {
    return `${where} is already in use: another socket (of this program or another) holds that address and port; stop it, or pick another --port (--port 0 picks a free one)`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `Deno has no permission to listen on ${where}; run again with --allow-net=${
      allowNetHost(hostname)
    }`;
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return `the OS refused to let this process listen on ${where} (ports below 1024 need privileges); use a port from 1024 up`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot listen on ${where}: that address does not belong to this machine; try 127.0.0.1`;
  }
  const message = errorText(err);
  if (/lookup|resolve|Name or service not known|No address/i.test(message)) {
    return `cannot listen on ${where}: the name ${
      JSON.stringify(hostname)
    } does not resolve to an address; check the spelling or use an address such as 127.0.0.1`;
  }
  return `cannot listen on ${where}: ${message}`;
}

/**
 * Bind a Unix socket at `path` with `bind`. A killed server's file is "in
 * use": if a connect to it is refused, it is stale: removed (`note` says
 * so) and bound again. A socket in use, or any other file, stays.
 */
export async function bindUnix<T>(
  path: string,
  bind: () => T,
  note: (line: string) => void,
): Promise<T> {
  try {
    try {
      return bind();
    } catch (err) {
      const info = err instanceof Deno.errors.AddrInUse &&
        await Deno.lstat(path);
      if (!info || !info.isSocket) throw info || err;
      const stale = await Deno.connect({ transport: "unix", path }).then(
        (conn) => conn.close(),
        (e) => e instanceof Deno.errors.ConnectionRefused,
      );
      if (!stale) throw err;
      await Deno.remove(path);
      note(`note: removed stale socket file ${path} (nobody listened)`);
    }
    return bind();
  } catch (err) {
    const why = unixReason(err, path);
    throw new Error(`cannot listen on unix ${path}: ${why}`, { cause: err });
  }
}

/**
 * What went wrong on both ends of a Unix socket: `err`, or the FileInfo of
 * a file in the way. (Deno 2.9 wants read, write and net's `unix:` grants.)
 */
export function unixReason(err: unknown, path: string): string {
  const f = err as Partial<Deno.FileInfo>;
  const abs = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const bytes = new TextEncoder().encode(path).length;
  const kind = f.isDirectory ? "a directory" : "a file";
  return err instanceof Deno.errors.NotCapable
    ? `Deno has no permission for it; run again with --allow-read=${path} --allow-write=${path} --allow-net=unix:${abs}`
    : err instanceof Deno.errors.AddrInUse
    ? "it is in use: a program is bound to it; stop that one, or choose another path"
    : err instanceof Deno.errors.PermissionDenied
    ? "permission denied (to listen, this user needs write permission on the folder; to connect, on the socket file): choose a folder you can write to, or ask the socket's owner"
    : f.isSocket === false
    ? `${kind} is there, not a socket (only a stale socket file is replaced); choose another path`
    : bytes > UNIX_PATH_MAX
    ? `the path is ${bytes} bytes, and a Unix socket's holds at most ${UNIX_PATH_MAX} on Linux; choose a shorter one, e.g. in /tmp`
    : errorText(err);
}

export const UNIX_PATH_MAX = 107; // Linux's sun_path: 108 bytes with its NUL

/**
 * Whether a failed `accept()` belongs to one client only: it reset before
 * we accepted it (Deno 2.9: NotConnected, ENOTCONN). The next client is
 * fine: skip it at once. Anything else (EMFILE, ENOMEM...) is worth a pause.
 */
export function isOneClientsFailure(err: unknown): boolean {
  if (
    err instanceof Deno.errors.NotConnected ||
    err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.ConnectionAborted
  ) return true;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string") {
    return ["ENOTCONN", "ECONNRESET", "ECONNABORTED"].includes(code);
  }
  // ENOTCONN, ECONNRESET, ECONNABORTED as Linux numbers them.
  return /\(os error (107|104|103)\)/.test(String(err));
}

/**
 * How an accept loop treats a failed accept(): one client's failure is
 * skipped at once ({@link isOneClientsFailure}); a shortage (no descriptors
 * or memory) or an unknown error backs off, 10 ms doubling up to 1 s.
 */
export class AcceptBackoff {
  #ms = 0;
  constructor(
    readonly warn: (line: string) => void,
    readonly signal: AbortSignal,
  ) {}
  /** A connection was accepted: the next shortage starts again at 10 ms. */
  reset(): void {
    this.#ms = 0;
  }
  /** accept() failed with `err`: return at once, or after the pause. */
  async after(err: unknown): Promise<void> {
    if (isOneClientsFailure(err)) return;
    this.#ms = Math.min(Math.max(this.#ms * 2, 10), 1000);
    this.warn(
      `warning: accept failed: ${errorText(err)}; retrying in ${this.#ms} ms`,
    );
    await sleep(this.#ms, this.signal);
  }
}

/** Why a connection failed, as its close line says it. */
export function describeConnectionError(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "reset by the client";
  if (err instanceof Deno.errors.BrokenPipe) {
    return "the client stopped reading (broken pipe)";
  }
  if (err instanceof Deno.errors.NotConnected) return "the client went away";
  return errorText(err);
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

/**
 * Shutdown: wait for the open handlers at most `grace` s (or until `force`
 * aborts), then `closeAll` with the reason, and wait for them to end.
 */
export async function finishWithin(
  handlers: Set<Promise<void>>,
  grace: number,
  closeAll: (reason: string) => void,
  force?: AbortSignal,
): Promise<void> {
  const timer = setTimeout(
    () => closeAll(`shutdown, grace of ${grace} s over`),
    grace * 1000,
  );
  const forced = () => closeAll("shutdown, forced by a second signal");
  force?.addEventListener("abort", forced, { once: true });
  if (force?.aborted) forced();
  // Handlers that end meanwhile leave the set: wait until it is empty.
  while (handlers.size > 0) await Promise.all(handlers);
  clearTimeout(timer);
  force?.removeEventListener("abort", forced);
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

/** The `xxd` layout: offset, 16 bytes in hex by pairs, the bytes as ASCII. */
export function hexDump(bytes: Uint8Array): string[] {
  const lines: string[] = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const row = bytes.subarray(offset, offset + 16);
    let hex = "";
    let text = "";
    for (let i = 0; i < row.length; i++) {
      hex += row[i].toString(16).padStart(2, "0") + (i % 2 ? " " : "");
      text += row[i] >= 0x20 && row[i] < 0x7f
        ? String.fromCharCode(row[i])
        : ".";
    }
    lines.push(
      `${offset.toString(16).padStart(8, "0")}: ${hex.padEnd(40)} ${text}`,
    );
  }
  return lines;
}

/** What `--trace` gets for each read, write or datagram, and its bytes. */
export type Trace = (what: string, bytes: Uint8Array) => void;

/** `--trace`'s line, `what` (`read 5 bytes`); with `hex`, the bytes too. */
export function traceBytes(
  print: (line: string) => void,
  what: string,
  bytes: Uint8Array,
  hex: boolean,
): void {
  print(what);
  if (hex) { for (const line of hexDump(bytes)) print(line); }
}

/** A {@link Trace} that prints `prefix` + what, and the bytes with `hex`. */
export function tracer(
  print: (line: string) => void,
  prefix: string,
  hex: boolean,
): Trace {
  return (what, bytes) => traceBytes(print, prefix + what, bytes, hex);
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
