/**
 * server.ts: a TCP echo server, written directly on sockets so you can see
 * what every server is made of: listen, accept, one handler per
 * connection, read and write back (basics/tcp_server.ts: the same, bare).
 * - `Deno.listen` opens a listening socket; the kernel completes each
 *   client's handshake and queues it (the backlog) until we accept it.
 * - Each accepted connection gets its own async handler, the modern form
 *   of "a thread per client": one slow client never blocks the others.
 * - A connection is named by its socket pair, our address:port and the
 *   client's: many clients share the server's port and differ in theirs.
 * - TCP is a stream, not messages: a read returns whatever has arrived, a
 *   write may take fewer bytes than given (`--trace` shows both).
 * - `--unix PATH`: the same calls on a socket named by a file, between the
 *   processes of one machine, with no network at all.
 *
 *   deno run --allow-net=127.0.0.1 server.ts --port 9000
 * then `deno run --allow-net=127.0.0.1 client.ts --port 9000 hello` or `nc
 * -N 127.0.0.1 9000`. Try `--trace --hex`, `--unix /tmp/echo.sock` with `nc
 * -U /tmp/echo.sock` (grants in --help), workers.ts, and `--lines` with
 * client.ts `--rounds` (Nagle meets a delayed ACK). It stands alone.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ─── 1. Listen ──────────────────────────────────────────────────────────────

// How many connections, handshake done, the kernel queues for us until we
// accept() them: listen()'s backlog (511 is Deno's default, and nginx's).
const BACKLOG = 511;

/**
 * Open the listening socket: `socket()`, `bind()` and `listen()` in one
 * call. `reusePort` sets SO_REUSEPORT: sockets that all set it may listen
 * on one address and port, the kernel spreads the connections among them.
 */
export function listenTcp(
  options: Pick<ServerOptions, "hostname" | "port"> & Partial<ServerOptions>,
): Deno.TcpListener {
  if (options.reusePort && !("listenDatagram" in Deno)) {
    throw new Error(
      `--reuse-port needs Deno's --unstable-net flag (SO_REUSEPORT is unstable in Deno ${Deno.version.deno}); run, e.g.: deno run --allow-net=127.0.0.1 --unstable-net server.ts --reuse-port`,
    );
  }
  const { hostname, port, backlog = BACKLOG, reusePort = false } = options;
  try {
    // Deno sets SO_REUSEADDR on every TCP listener: a restarted server binds
    // its port at once, while its old connections linger in TIME-WAIT.
    return Deno.listen({ hostname, port, tcpBacklog: backlog, reusePort });
  } catch (err) {
    const why = explainListenError(err, `tcp ${formatAddr(options)}`, hostname);
    throw new Error(why, { cause: err });
  }
}

/**
 * Or name it by a path: a Unix domain socket, for processes whom the file's
 * mode lets connect. A stale file is replaced; closing removes ours.
 */
export function listenUnix(path: string): Promise<Deno.UnixListener> {
  return bindUnix(path, () => Deno.listen({ transport: "unix", path }), warn);
}

// ─── 2. The accept loop ─────────────────────────────────────────────────────

/** Echo each accepted connection in its own handler until `signal` aborts. */
export async function serveTcp(
  listener: Deno.TcpListener | Deno.UnixListener,
  options: ServeTcpOptions = {},
): Promise<TcpSummary> {
  const server = new Server(listener, options); // counters, limits, log lines
  // Not `for await (const conn of listener)`: one failed accept() would end
  // it, and accept() fails every day (a client resets before we take it).
  while (!server.stop.aborted) {
    let conn: Deno.TcpConn | Deno.UnixConn;
    try {
      // Wait for the next client. The kernel has done the handshake (SYN,
      // SYN-ACK, ACK); accept() takes the connection off the backlog.
      conn = await listener.accept();
    } catch (err) {
      if (server.stop.aborted || err instanceof Deno.errors.BadResource) break;
      // One client's failure is skipped at once; a shortage (descriptors,
      // memory) pauses, longer each time, rather than spin on it.
      await server.backoff.after(err);
      continue;
    }
    server.backoff.reset();
    // Not awaited: each connection runs in its own handler, concurrently.
    server.track(handleConnection(server, conn, options));
  }
  return await server.finish(); // open connections get the grace period
}

// ─── 3. One handler per connection ──────────────────────────────────────────

/** Echo one connection, then close it; log its opening and its close. */
async function handleConnection(
  server: Server,
  conn: Deno.TcpConn | Deno.UnixConn,
  { nodelay, keepalive, lines }: ServeTcpOptions,
): Promise<void> {
  const c = server.admit(conn); // or closed at once over --max-connections
  if (!c) return;
  // TCP's options (a Unix socket has none). TCP_NODELAY: Nagle's algorithm
  // off, a small write goes at once; SO_KEEPALIVE: find a vanished peer.
  if ("setNoDelay" in conn && nodelay) conn.setNoDelay(true);
  if ("setKeepAlive" in conn && keepalive) conn.setKeepAlive(true);
  try {
    await (lines ? echoLines : echo)(conn, c, c.trace);
  } catch (err) {
    // A reset or a broken pipe is the client's choice, not our failure; a
    // connection we closed (idle, shutdown) fails its pending read.
    c.reason ??= describeConnectionError(err);
  } finally {
    server.closed(c); // close the socket (our FIN), log bytes in and out
  }
}

// ─── 4. The echo ────────────────────────────────────────────────────────────

// The read buffer starts at 512 bytes, a typical message (10,000 idle
// clients hold 5 MB, not 640 MB); a read that fills it grows it ×4 up to
// 64 KiB, which streams as fast as a fixed 64 KiB one (bench/ measured it).
const FIRST_BUFFER = 512;
const LARGEST_BUFFER = 64 * 1024;

/** Write back every byte read until the client half-closes; count, trace. */
export async function echo(
  conn: Deno.Conn,
  counts: ByteCounts,
  trace?: Trace,
): Promise<void> {
  let buf = new Uint8Array(FIRST_BUFFER);
  while (true) {
    // A read returns whatever has arrived: 1 byte or 64 KiB, never "a
    // message". TCP keeps the bytes in order, not the sender's writes.
    const n = await conn.read(buf);
    // null (not 0) is the end: the client half-closed (sent FIN), and all
    // its bytes have been echoed. Returning closes our side too.
    if (n === null) return;
    counts.bytesIn += n;
    trace?.(`read ${n} bytes`, buf.subarray(0, n));
    // write() may take only part of the bytes: loop until all are out. We
    // read again only once they are, so a client that does not read its
    // echo stalls our write, then our reads, then the kernel buffers fill
    // and its own writes wait: backpressure. Memory stays one buffer.
    for (let done = 0; done < n;) {
      const wrote = await conn.write(buf.subarray(done, n));
      trace?.(`wrote ${wrote} bytes`, buf.subarray(done, done + wrote));
      done += wrote;
      counts.bytesOut += wrote;
    }
    if (n === buf.length && buf.length < LARGEST_BUFFER) {
      buf = new Uint8Array(Math.min(buf.length * 4, LARGEST_BUFFER));
    }
  }
}

// Run as a program: main and its plumbing are below, so once all is loaded.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/** The program: parse, listen, serve until SIGINT/SIGTERM; the exit status. */
export async function main(args: string[]): Promise<number> {
  const options = parseServerArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  const listener = options.unix
    ? await listenUnix(options.unix)
    : listenTcp(options);
  // Ctrl-C/SIGTERM stop us (a second: no grace); armed before we say we listen.
  const [stop, force] = [new AbortController(), new AbortController()];
  const removeSignals = onStopSignals(() => stop.abort(), () => force.abort());
  try {
    const { transport } = listener.addr;
    log(`${transport} listening on ${formatAddr(listener.addr)}`);
    const signals = { signal: stop.signal, force: force.signal };
    const summary = await serveTcp(listener, { ...options, ...signals });
    log(summaryLine(summary, transport));
  } finally {
    removeSignals();
  }
  return 0;
}

/** What the command line sets, with the defaults `--help` shows. */
export const DEFAULTS = {
  hostname: "127.0.0.1", // the address to bind: only this machine can connect
  port: 8080, // 0 asks the OS for a free one
  unix: "", // a path: listen on a Unix socket there instead ("": TCP)
  backlog: BACKLOG, // listen queue: connections the OS holds for accept()
  maxConnections: 1000, // served at once; one more is closed at once
  idleTimeout: 300, // seconds a connection may move no bytes (0: for ever)
  grace: 5, // seconds open connections get to finish after SIGINT/SIGTERM
  reusePort: false, // SO_REUSEPORT: share the port with others that set it
  nodelay: false, // TCP_NODELAY: Nagle's algorithm off (Deno leaves it on)
  keepalive: false, // SO_KEEPALIVE: the kernel probes idle connections
  lines: false, // echo once the bytes held end in a newline: a line server
  quiet: false, // leave out the per-connection log lines
  trace: false, // one log line per read and per write, with its size
  hex: false, // under each trace line, its bytes in the xxd layout
};

/** Everything the server can be told on the command line. */
export type ServerOptions = typeof DEFAULTS;

/** The TCP options of the usage text (workers.ts shows them too). */
export const OPTIONS_HELP =
  `  --hostname H         address to bind (default ${DEFAULTS.hostname}, this machine;
                       0.0.0.0 or :: every network's, --allow-net=0.0.0.0)
  --port N             port to bind, 0..65535, 0: a free one (default ${DEFAULTS.port})
  --backlog N          queue of connections for accept() (default ${DEFAULTS.backlog})
  --max-connections N  served at once; more are closed at once (default ${DEFAULTS.maxConnections})
  --idle-timeout S     close connections idle S seconds, 0: never (default ${DEFAULTS.idleTimeout})
  --grace S            after Ctrl-C/SIGTERM, seconds open connections get to
                       finish (default ${DEFAULTS.grace}); a second Ctrl-C closes them now
  --reuse-port         SO_REUSEPORT: servers that all set it share the port
                       (the kernel spreads connections; needs --unstable-net)
  --nodelay            TCP_NODELAY: Nagle off, small writes are sent at once
  --keepalive          SO_KEEPALIVE: probe connections idle for 2 h (Linux's
                       tcp_keepalive_time; Deno cannot set it), drop dead ones
  --lines              echo once the bytes end in a newline (whole lines)
  --quiet              no log line per connection (--trace lines still print)
  --trace              a line per read and write: "tcp #N read 5 bytes"
  --hex                --trace, and the bytes under each line as xxd shows
  --help               show this help`;

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE = `usage: deno run --allow-net=127.0.0.1 server.ts [options]
       deno run --allow-read=PATH --allow-write=PATH --allow-net=unix:PATH server.ts --unix PATH [options]

A TCP echo server: every byte a client sends comes back unchanged.

options:
${OPTIONS_HELP}

--unix PATH: listen on a Unix socket at PATH instead (no TCP flag), replacing
a stale socket file. First output line: "tcp listening on HOST:PORT" or "unix
listening on PATH". Ctrl-C or SIGTERM: stop accepting, let open connections
finish, print a summary, exit 0. workers.ts: N event loops on one port.`;

const FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  unix: { type: "string" },
  backlog: { type: "string" },
  "max-connections": { type: "string" },
  "idle-timeout": { type: "string" },
  grace: { type: "string" },
  "reuse-port": { type: "boolean" },
  nodelay: { type: "boolean" },
  keepalive: { type: "boolean" },
  lines: { type: "boolean" },
  quiet: { type: "boolean" },
  trace: { type: "boolean" },
  hex: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  workers: { type: "string" }, // moved to workers.ts: an error that says so
} as const satisfies ParseArgsOptionsConfig;

// What a Unix socket has no use for (Deno sets none of these on one).
const TCP_ONLY = ["hostname", "port", "backlog", "reuse-port", "nodelay"];

/** Parse the command line, defaults applied: options, "help" or UsageError. */
export function parseServerArgs(args: string[]): ServerOptions | "help" {
  const { values: v } = parseFlags(args, FLAGS);
  if (v.workers) throw new UsageError("--workers is workers.ts's flag now");
  if (v.help) return "help";
  const tcp = [...TCP_ONLY, "keepalive"].find((flag) => flag in v);
  if (v.unix !== undefined && tcp) {
    throw new UsageError(`--${tcp} is a TCP flag: it does not go with --unix`);
  }
  const int = (flag: string, t: string | undefined, min = 1, max = 65535) =>
    t === undefined ? undefined : parseInteger(flag, t, min, max);
  const seconds = (flag: string, text: string | undefined) =>
    text === undefined ? undefined : parseSeconds(flag, text);
  const d = DEFAULTS;
  const hex = v.hex ?? d.hex; // and --hex implies --trace
  return {
    hostname: v.hostname === undefined ? d.hostname : parseHostname(v.hostname),
    port: int("--port", v.port, 0) ?? d.port,
    unix: v.unix ?? d.unix,
    backlog: int("--backlog", v.backlog) ?? d.backlog,
    maxConnections: int("--max-connections", v["max-connections"], 1, 1e6) ??
      d.maxConnections,
    idleTimeout: seconds("--idle-timeout", v["idle-timeout"]) ?? d.idleTimeout,
    grace: seconds("--grace", v.grace) ?? d.grace,
    reusePort: v["reuse-port"] ?? d.reusePort,
    nodelay: v.nodelay ?? d.nodelay,
    keepalive: v.keepalive ?? d.keepalive,
    lines: v.lines ?? d.lines,
    quiet: v.quiet ?? d.quiet,
    trace: (v.trace ?? d.trace) || hex,
    hex,
  };
}

/** Counters for one connection, or summed over the whole server. */
export type ByteCounts = { bytesIn: number; bytesOut: number };
/** What {@link serveTcp} resolves with (refused: over --max-connections). */
export type TcpSummary = ByteCounts & { connections: number; refused: number };

/** {@link serveTcp}'s options: left out is off (no limit, grace, trace). */
export interface ServeTcpOptions extends Partial<ServerOptions> {
  signal?: AbortSignal; // abort: stop accepting, `grace` s for the open ones
  force?: AbortSignal; // abort: end the grace period, close them now
  log?: (line: string) => void; // event and trace lines (default: stdout)
  warn?: (line: string) => void; // warnings, accept errors (default: stderr)
  slots?: Int32Array; // [0]: open connections; shared, one limit (workers.ts)
}

/** One open connection, as the server tracks it. */
class Connection implements ByteCounts {
  bytesIn = 0;
  bytesOut = 0;
  seen = 0; // bytes moved when the idle sweep last looked
  quietSince = performance.now(); // and since when that number is unchanged
  reason?: string; // why we closed it, if it was us (idle, shutdown)
  constructor(
    readonly id: number,
    readonly conn: Deno.Conn,
    readonly pair: string, // "local A remote B": the socket pair
    readonly trace?: Trace,
  ) {}
  close(reason: string): void { // from outside: its pending read fails
    this.reason ??= reason;
    closeQuietly(this.conn);
  }
}

/** One {@link serveTcp}'s book-keeping: connections, limit, idle, shutdown. */
class Server {
  readonly summary = { connections: 0, refused: 0, bytesIn: 0, bytesOut: 0 };
  /** How the accept loop waits after a failed accept(). */
  readonly backoff: AcceptBackoff;
  readonly #open = new Map<number, Connection>();
  readonly #handlers = new Set<Promise<void>>();
  readonly #o:
    & ServeTcpOptions
    & Required<Pick<ServeTcpOptions, "signal" | "log" | "warn" | "slots">>;
  readonly #log: (line: string) => void; // event lines, unless --quiet
  readonly #p: string; // "tcp" or "unix": the first word of each line
  readonly #stopIdleSweep: () => void;
  readonly #listener: Deno.Listener;
  readonly stop: AbortSignal; // aborted: stop accepting (options.signal)
  constructor(listener: Deno.Listener, options: ServeTcpOptions) {
    const o = { signal: new AbortController().signal, log, warn, ...options };
    this.#o = { ...o, slots: options.slots ?? new Int32Array(1) };
    this.#log = o.quiet ? () => {} : o.log;
    this.#p = listener.addr.transport;
    this.backoff = new AcceptBackoff(o.warn, this.stop = o.signal);
    // Closing the listener is how a pending accept() is interrupted.
    this.#listener = listener;
    o.signal.addEventListener("abort", () => closeQuietly(listener));
    this.#stopIdleSweep = sweepIdle(this.#open, o.idleTimeout ?? 0);
  }
  /** Keep a handler to wait for at shutdown (it throws only if `log` does). */
  track(handler: Promise<void>): void {
    const tracked: Promise<void> = handler
      .catch((e) => this.#o.warn(`warning: handler failed: ${errorText(e)}`))
      .finally(() => this.#handlers.delete(tracked));
    this.#handlers.add(tracked);
  }
  /**
   * Take a slot, count and log it; over the limit, close it at once (the
   * client sees its end instead of waiting in the backlog): undefined.
   */
  admit(conn: Deno.Conn): Connection | undefined {
    const [local, remote] = [conn.localAddr, conn.remoteAddr].map(formatAddr);
    const pair = `local ${local} remote ${remote}`;
    const { maxConnections: max = Infinity, trace, hex = false } = this.#o;
    // Count, then look, give the slot back if over: servers on other threads
    // sharing the slots (Atomics steps are indivisible) admit at most `max`.
    const open = Atomics.add(this.#o.slots, 0, 1) + 1;
    if (open > max) {
      Atomics.sub(this.#o.slots, 0, 1);
      this.summary.refused++;
      closeQuietly(conn);
      const why = `${open - 1} open, --max-connections ${max}`;
      this.#log(`${this.#p} refused ${pair}: ${why}`);
      return undefined;
    }
    const id = ++this.summary.connections;
    const print = trace && tracer(this.#o.log, `${this.#p} #${id} `, hex);
    const c = new Connection(id, conn, pair, print || undefined);
    this.#open.set(id, c);
    this.#log(`${this.#p} open ${pair} (#${id}, ${this.#open.size} open)`);
    return c;
  }
  /** The handler is done: close the socket, add up, log the close line. */
  closed(c: Connection): void {
    closeQuietly(c.conn);
    this.#open.delete(c.id);
    Atomics.sub(this.#o.slots, 0, 1); // give the slot back
    this.summary.bytesIn += c.bytesIn;
    this.summary.bytesOut += c.bytesOut;
    const why = c.reason ? `: ${c.reason}` : "";
    this.#log(
      `${this.#p} close ${c.pair} (#${c.id}) in ${c.bytesIn} bytes, out ${c.bytesOut} bytes${why}`,
    );
  }
  /** Stopped accepting: `grace` s for the open ones (`force`: now), close. */
  async finish(): Promise<TcpSummary> {
    closeQuietly(this.#listener);
    const [grace, open] = [this.#o.grace ?? 0, this.#open.size];
    if (open > 0) {
      this.#log(
        `${this.#p} stopping: ${open} open, up to ${grace} s to finish`,
      );
      await finishWithin(this.#handlers, grace, (reason) => {
        for (const c of this.#open.values()) c.close(reason);
      }, this.#o.force);
    }
    await Promise.all(this.#handlers);
    this.#stopIdleSweep();
    return this.summary;
  }
}

// --idle-timeout: a timer looks at the byte counters now and then (reads
// and writes pay nothing) and closes connections that moved none.
function sweepIdle(open: Map<number, Connection>, idleSeconds: number) {
  if (idleSeconds <= 0) return () => {};
  const [limit, why] = [idleSeconds * 1000, `idle for ${idleSeconds} s`];
  const timer = setInterval(() => {
    const now = performance.now();
    for (const c of open.values()) {
      const moved = c.bytesIn + c.bytesOut;
      if (moved !== c.seen) [c.seen, c.quietSince] = [moved, now];
      else if (now - c.quietSince >= limit) c.close(why);
    }
  }, Math.min(1000, Math.max(50, limit / 10)));
  return () => clearInterval(timer);
}

/**
 * `--lines`: echo whole lines only, as a line server answers a whole request
 * (README chapter 15); bytes after the last newline wait for their line.
 */
async function echoLines(conn: Deno.Conn, c: ByteCounts, trace?: Trace) {
  const buf = new Uint8Array(LARGEST_BUFFER); // a longer line goes out cut
  const wrote = (piece: Uint8Array) => {
    trace?.(`wrote ${piece.length} bytes`, piece);
    c.bytesOut += piece.length;
  };
  let held = 0;
  for (let n; (n = await conn.read(buf.subarray(held))) !== null;) {
    trace?.(`read ${n} bytes`, buf.subarray(held, held + n));
    c.bytesIn += n;
    const have = held + n;
    const end = have < buf.length ? buf.lastIndexOf(10, have - 1) + 1 : have;
    await writeAll(conn, buf.subarray(0, end), wrote);
    buf.copyWithin(0, end, have);
    held = have - end;
  }
  await writeAll(conn, buf.subarray(0, held), wrote); // an unended last line
}

function closeQuietly(socket: Deno.Conn | Deno.Listener): void {
  try {
    socket.close();
  } catch { /* already closed */ }
}

/** The summary line at exit (workers.ts prints one per worker, and a sum). */
export function summaryLine(s: TcpSummary, transport = "tcp"): string {
  return `${transport} server stopped: ${s.connections} connections, ${s.refused} refused, ${s.bytesIn} bytes in, ${s.bytesOut} bytes out`;
}

// ===== shared block: begin =====
// Written by `deno task sync` from lib/plumbing.ts: only what this file
// uses, so that it runs alone when copied. Edit lib/plumbing.ts, not here;
// tests/shared_block_test.ts fails when this copy is stale.

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
// ===== shared block: end =====
