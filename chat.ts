/**
 * chat.ts: a TCP chat server, one to many. Every line a client sends goes
 * to every other client, after the sender's address:port. TCP cannot copy
 * for us: the server keeps every connection and writes each line once to
 * each of them (udp.ts --join lets the network do the copying instead).
 *
 * First listing: basics/chat.ts (60 lines) is the idea alone. This
 * file adds what a room open to the world needs: a bounded queue per
 * client, a longest line, the flags of server.ts and a clean shutdown.
 *
 * What it shows:
 * - One to many over TCP is N writes, one per connection. A client is named
 *   by its end of the socket pair: `127.0.0.1:51234: hello`.
 * - TCP carries bytes, not lines: a read may end halfway through a line or
 *   hold several. The server keeps the unfinished part until its newline
 *   comes (framing), and a line has a longest length, or one client could
 *   make us hold its line for ever.
 * - Each client has its own writer loop. Sending a line to the room only
 *   queues it for each client and goes on: a client that stops reading
 *   makes no one else wait. Its queue is bounded, in bytes; a client that
 *   falls that far behind is cut off, as IRC servers do.
 *
 * Run it (loopback only, the narrowest permission that works):
 *
 *   deno run --allow-net=127.0.0.1 chat.ts --port 9000
 *
 * Then, in two or three more terminals, type lines into:
 *
 *   nc 127.0.0.1 9000
 *   deno run --allow-net=127.0.0.1 client.ts --port 9000
 *
 * Try next: a client that stops reading. In one terminal a reader that
 * keeps up, `nc 127.0.0.1 9000 > /dev/null`; in another `nc 127.0.0.1
 * 9000`, stopped with Ctrl-Z; then flood the room with 10 MB:
 * `yes 'a line' | head -c 10000000 | nc -N 127.0.0.1 9000`. The log says
 * when the stopped one is cut off; the reader gets every line. `--trace`
 * shows where TCP's reads fall, lines or no lines.
 *
 * This file stands alone (no imports but Deno's own): copy it and run it.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ─── 1. Listen ──────────────────────────────────────────────────────────────

/**
 * Open the listening socket: `socket()`, `bind()` and `listen()` of the
 * classic API in one call. Throws an Error whose message is a plain reason
 * for a person.
 */
export function listenTcp(
  options: { hostname: string; port: number },
): Deno.TcpListener {
  try {
    return Deno.listen({ hostname: options.hostname, port: options.port });
  } catch (err) {
    const where = `tcp ${formatAddr(options)}`;
    throw new Error(explainListenError(err, where, options.hostname), {
      cause: err,
    });
  }
}

// ─── 2. The accept loop ─────────────────────────────────────────────────────

/**
 * Run the room on `listener` until `options.signal` aborts: accept each
 * client and serve it in its own handler. Resolves with the totals once
 * the listener is closed and every client has gone (after at most `grace`
 * seconds to send them what was queued).
 */
export async function serveChat(
  listener: Deno.TcpListener,
  options: ServeChatOptions = {},
): Promise<ChatSummary> {
  const room = new Room(listener, options); // the clients, limits, log lines
  // One failed accept() must not end the room (a client that reset before
  // we took it, no descriptors left): not `for await`, but a loop that
  // skips or waits.
  while (!room.stopping) {
    let conn: Deno.TcpConn;
    try {
      // The kernel did the handshake; accept() takes the next client.
      conn = await listener.accept();
    } catch (err) {
      if (room.stopping || err instanceof Deno.errors.BadResource) break;
      await room.backoff.after(err); // at once, or a pause on a shortage
      continue;
    }
    room.backoff.reset();
    // Not awaited: every client runs in its own handler, concurrently.
    room.track(handleClient(room, conn));
  }
  return await room.finish(); // what is queued gets the grace period
}

// ─── 3. One handler per client ──────────────────────────────────────────────

/**
 * One client, for as long as it stays: it joins, each of its lines goes
 * to the others, then it leaves. Two loops run for it at once: this one
 * reads, and its writer (section 6) writes what the room queued for it.
 */
async function handleClient(room: Room, conn: Deno.TcpConn): Promise<void> {
  const me = await room.join(conn); // welcomed, the others told; or full
  if (!me) return;
  const writing = writeLoop(me); // its own writer, running beside us
  try {
    // A line should leave at once. Nagle's algorithm (on by default) holds
    // back a small write while an earlier one is unacknowledged, and the
    // client may delay its ACK by 40 ms: TCP_NODELAY turns it off, as
    // interactive programs such as ssh do.
    conn.setNoDelay(true);
    for await (const line of readLines(conn, me)) {
      me.lines++;
      broadcast(room.clients, me, line.bytes); // a copy for everyone else
      if (line.cut) room.tellCut(me);
    }
  } catch (err) {
    // A reset is the client's choice. A client we closed (cut off, idle,
    // shutdown) fails its pending read: that is no news.
    if (!me.closed) me.reason ??= describeConnectionError(err);
  } finally {
    room.leave(me); // the others are told; nothing more is queued for it
    await writing; // what was queued before goes out, then the socket closes
    room.closed(me); // its log line
  }
}

// ─── 4. Framing: lines out of a byte stream ─────────────────────────────────

// The longest line, in bytes (newline not counted). IRC allows 512 bytes
// (RFC 1459, 2.3) and servers cut longer lines; we allow 4 KiB, a long
// paste. Without a limit, a client that never sends a newline makes us
// hold everything it sends. A longer line is cut, not refused: the others
// get its first 4 KiB, the sender is told, the rest is dropped up to the
// newline. A paste that is too long should not end the sender's session.
export const MAX_LINE_BYTES = 4096;
// One read takes at most this much: a line or so, or many short ones.
const READ_BUFFER_BYTES = 4096;
const NEWLINE = 0x0a;
const CR = 0x0d;

/** A line from a client, without its newline; `cut` if it was too long. */
export interface Line {
  bytes: Uint8Array;
  cut: boolean;
}

/**
 * The lines a client sends, until it closes. A read returns what has
 * arrived: the end of one line, several lines, half of the next. Complete
 * lines are yielded; the unfinished part waits for the next read. An
 * unfinished last line at the client's FIN (`printf hi | nc`) counts too.
 * Each yielded line's bytes are valid until the next one is asked for.
 */
export async function* readLines(
  conn: Deno.Conn,
  counts: { bytesIn: number; trace?: Trace },
): AsyncGenerator<Line> {
  const buf = new Uint8Array(READ_BUFFER_BYTES);
  // The line so far, from earlier reads: one byte more than the limit, for
  // a CR before the newline and to see when a line is over the limit.
  const line = new Uint8Array(MAX_LINE_BYTES + 1);
  let length = 0;
  let skipping = false; // after a cut: drop bytes up to the newline
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break; // the client's FIN: it is done sending
    counts.bytesIn += n;
    counts.trace?.(`read ${n} bytes`, buf.subarray(0, n));
    const got = buf.subarray(0, n);
    for (let at = 0; at < n;) {
      const newline = got.indexOf(NEWLINE, at);
      const end = newline < 0 ? n : newline; // this line's bytes: at..end
      if (!skipping) {
        const fits = Math.min(end - at, line.length - length);
        line.set(got.subarray(at, at + fits), length);
        length += fits;
        if (at + fits < end) { // over the limit: pass on what fits, now
          yield cutLine(line);
          skipping = true;
        }
      }
      if (newline < 0) break; // the line goes on in the next read
      if (!skipping) yield lineOf(line.subarray(0, length));
      skipping = false;
      length = 0;
      at = newline + 1;
    }
  }
  if (length > 0 && !skipping) yield lineOf(line.subarray(0, length));
}

// A complete line. telnet, and nc -C, end lines with CR LF: the CR goes.
function lineOf(bytes: Uint8Array): Line {
  if (bytes.at(-1) === CR) bytes = bytes.subarray(0, -1);
  return bytes.length > MAX_LINE_BYTES ? cutLine(bytes) : { bytes, cut: false };
}

// The first MAX_LINE_BYTES of a longer line, stopping short of a UTF-8
// character that would be cut in two (characters are 1 to 4 bytes, the
// bytes after the first are 10xxxxxx): half a character shows as "�".
// `bytes[MAX_LINE_BYTES]` is the first byte left out.
function cutLine(bytes: Uint8Array): Line {
  let keep = MAX_LINE_BYTES;
  while (keep > MAX_LINE_BYTES - 3 && (bytes[keep] & 0xc0) === 0x80) keep--;
  return { bytes: bytes.subarray(0, keep), cut: true };
}

// ─── 5. The broadcast: one line, a copy for every other client ──────────────

/**
 * Queue `text` (a line from `from`, or a note from the room if `from` is
 * undefined) for every client but `from`. The message is built once and
 * every queue holds the same bytes. This never waits: it does not write,
 * it queues, and each client's writer writes at that client's speed. Were
 * it to `await` each write in turn, the one client that stopped reading
 * would stop the room.
 */
export function broadcast(
  clients: Iterable<Client>,
  from: Client | undefined,
  text: Uint8Array,
): void {
  const message = from ? concat(from.prefix, text, LF) : concat(text, LF);
  for (const c of clients) if (c !== from) c.send(message);
}

// ─── 6. Each client's own writer and its bounded queue ──────────────────────

// What the room may owe one client, in bytes, before it is cut off: queued
// plus being written. The kernel holds more (the socket's send buffer, the
// client's receive buffer), so this fills only once a client is well
// behind. IRC servers do the same: each client has a SendQ limit (100 KB
// in ircd-hybrid's and ratbox's example configs), and one over it is
// dropped with "Max SendQ exceeded". 128 KiB holds 32 of the longest lines,
// thousands of short ones; 1,000 stuck clients would hold at most 128 MiB.
export const SEND_QUEUE_BYTES = 128 * 1024;
// Several queued messages go out in one write of at most this many bytes:
// one system call instead of one per line.
const WRITE_BATCH_BYTES = 64 * 1024;

/** What waits to be written to one client: messages, bounded in bytes. */
export class SendQueue {
  #messages: Uint8Array[] = [];
  #bytes = 0; // queued, plus the write under way
  #ended = false;
  #wake?: () => void;

  /** Bytes owed to the client: queued, or in the write under way. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Queue `message`; false, and nothing queued, if past the bound. */
  push(message: Uint8Array): boolean {
    if (this.#ended) return true; // leaving: nothing more is sent
    if (this.#bytes + message.length > SEND_QUEUE_BYTES) return false;
    this.#messages.push(message);
    this.#bytes += message.length;
    this.#wake?.();
    return true;
  }

  /** No more messages: the writer sends what is queued (or drops it). */
  end(drop = false): void {
    this.#ended = true;
    if (drop) this.#messages = [];
    this.#wake?.();
  }

  /** The next bytes to write, waiting for some; null once ended and empty. */
  async next(): Promise<Uint8Array | null> {
    while (this.#messages.length === 0) {
      if (this.#ended) return null;
      await new Promise<void>((wake) => this.#wake = wake);
      this.#wake = undefined;
    }
    // Everything waiting, up to a batch, in one buffer: one write.
    let take = 1;
    let size = this.#messages[0].length;
    while (
      take < this.#messages.length &&
      size + this.#messages[take].length <= WRITE_BATCH_BYTES
    ) size += this.#messages[take++].length;
    const batch = this.#messages.splice(0, take);
    return take === 1 ? batch[0] : concat(...batch);
  }

  /** A write of `n` bytes is done: they are owed no more. */
  written(n: number): void {
    this.#bytes -= n;
  }
}

/**
 * A client's writer: write what its queue holds, in order, for as long as
 * the client stays; then close the socket. A write waits while the
 * client's kernel buffers are full (it is not reading): only this loop
 * waits, and the queue behind it grows until the client is cut off.
 */
async function writeLoop(c: Client): Promise<void> {
  try {
    for (let bytes; (bytes = await c.queue.next()) !== null;) {
      // write() may take only part of the bytes: writeAll loops.
      await writeAll(c.conn, bytes, (piece) => {
        c.bytesOut += piece.length;
        c.trace?.(`wrote ${piece.length} bytes`, piece);
      });
      c.queue.written(bytes.length);
    }
  } catch (err) {
    if (!c.closed) c.reason ??= describeConnectionError(err); // a reset
  } finally {
    c.close(); // our FIN; the reader's pending read ends too
  }
}

// Run as a program (not imported): main and the plumbing it uses are below
// this line, so start once the whole file has loaded.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/**
 * The program: parse flags, listen, print the listening line, run the room
 * until SIGINT/SIGTERM, print a summary. Throws {@link UsageError} or an
 * Error.
 */
export async function main(args: string[]): Promise<number> {
  const options = parseChatArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  const listener = listenTcp(options);
  // SIGINT (Ctrl-C) and SIGTERM stop the room; a second one skips the grace.
  // Listen for them before saying we listen: whoever reads that may stop us.
  const stop = new AbortController();
  const force = new AbortController();
  const removeSignals = onStopSignals(() => stop.abort(), () => force.abort());
  try {
    log(`tcp listening on ${formatAddr(listener.addr)}`);
    const summary = await serveChat(listener, {
      ...options,
      signal: stop.signal,
      force: force.signal,
    });
    log(summaryLine(summary));
  } finally {
    removeSignals();
  }
  return 0;
}

/** What the command line sets, with the defaults `--help` shows. */
export const DEFAULTS = {
  hostname: "127.0.0.1", // the address to bind: only this machine can connect
  port: 8080, // 0 asks the OS for a free one
  maxConnections: 1000, // clients in the room at once; one more is turned away
  idleTimeout: 3600, // seconds a client may move no bytes (0: for ever)
  grace: 5, // seconds to send what is queued after SIGINT/SIGTERM
  quiet: false, // leave out the join and leave log lines
  trace: false, // one log line per read and per write, with its size
  hex: false, // under each trace line, its bytes in the xxd layout
};

/** Everything the chat server can be told on the command line. */
export type ChatOptions = typeof DEFAULTS;

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE = `usage: deno run --allow-net=127.0.0.1 chat.ts [options]

A TCP chat room: each line a client sends goes to every other client,
after the sender's address:port; joins and leaves are announced.

options:
  --hostname H          address to bind (default ${DEFAULTS.hostname}: only this
                        machine can connect); 0.0.0.0 or :: accepts clients
                        from every network, and needs --allow-net=0.0.0.0
  --port N              port to bind, 0..65535; 0 picks a free one (default ${DEFAULTS.port})
  --max-connections N   clients in the room at once; one more is told the
                        room is full and closed (default ${DEFAULTS.maxConnections})
  --idle-timeout S      close a client that moves no bytes, in or out, for
                        S seconds; 0 never closes (default ${DEFAULTS.idleTimeout})
  --grace S             on Ctrl-C/SIGTERM, seconds to send each client what
                        is queued for it (default ${DEFAULTS.grace}); a second Ctrl-C closes now
  --quiet               no log line per join and leave (--trace lines still print)
  --trace               a line per read and per write with its size, e.g.
                        "chat #N read 6 bytes" (#N: the number in its join line)
  --hex                 --trace, and the bytes under each line as xxd shows
  --help                show this help

Limits: a line is at most ${MAX_LINE_BYTES} bytes (a longer one is cut, and its
sender told); a client that falls ${SEND_QUEUE_BYTES} bytes behind (it stopped
reading) is cut off. The first line of output is "tcp listening on
HOST:PORT". Ctrl-C (SIGINT) or SIGTERM tells the room, sends what is
queued, prints a summary and exits 0.`;

const FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  "max-connections": { type: "string" },
  "idle-timeout": { type: "string" },
  grace: { type: "string" },
  quiet: { type: "boolean" },
  trace: { type: "boolean" },
  hex: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsOptionsConfig;

/**
 * Parse the command line; the defaults, and "--hex implies --trace", are
 * applied here, once. Throws {@link UsageError} for an unknown flag or a
 * bad value; returns `"help"` for `--help`.
 */
export function parseChatArgs(args: string[]): ChatOptions | "help" {
  const { values: v } = parseFlags(args, FLAGS);
  if (v.help) return "help";
  const int = (flag: string, t: string | undefined, min: number, max: number) =>
    t === undefined ? undefined : parseInteger(flag, t, min, max);
  const seconds = (flag: string, text: string | undefined) =>
    text === undefined ? undefined : parseSeconds(flag, text);
  const d = DEFAULTS;
  const hex = v.hex ?? d.hex;
  return {
    hostname: v.hostname === undefined ? d.hostname : parseHostname(v.hostname),
    port: int("--port", v.port, 0, 65535) ?? d.port,
    maxConnections: int("--max-connections", v["max-connections"], 1, 1e6) ??
      d.maxConnections,
    idleTimeout: seconds("--idle-timeout", v["idle-timeout"]) ?? d.idleTimeout,
    grace: seconds("--grace", v.grace) ?? d.grace,
    quiet: v.quiet ?? d.quiet,
    trace: (v.trace ?? d.trace) || hex,
    hex,
  };
}

/** What {@link serveChat} resolves with. */
export interface ChatSummary {
  clients: number; // that joined
  refused: number; // turned away: --max-connections was reached
  cutOff: number; // dropped for falling SEND_QUEUE_BYTES behind
  lines: number; // lines received (each went to all the others)
  bytesIn: number;
  bytesOut: number;
}

/**
 * Options for {@link serveChat}. The command line's defaults are applied
 * by {@link parseChatArgs}; in-process, what is left out is off: no limit,
 * no idle timeout, no grace (an abort closes every client), no trace.
 */
export interface ServeChatOptions extends Partial<ChatOptions> {
  signal?: AbortSignal; // abort: stop accepting, `grace` s to send the rest
  force?: AbortSignal; // abort: end the grace period, close them now
  log?: (line: string) => void; // event and trace lines (default: stdout)
  warn?: (line: string) => void; // warnings, accept errors (default: stderr)
}

const utf8 = new TextEncoder();
const LF = new Uint8Array([NEWLINE]);

/** One client in the room. */
export class Client {
  bytesIn = 0;
  bytesOut = 0;
  lines = 0;
  seen = 0; // bytes moved when the idle sweep last looked
  quietSince = performance.now(); // and since when that number is unchanged
  reason?: string; // why it left, if not by closing its end
  readonly queue = new SendQueue();
  /** What goes before each of its lines: `127.0.0.1:51234: `. */
  readonly prefix: Uint8Array;
  #closed = false;
  constructor(
    readonly id: number,
    readonly conn: Deno.TcpConn,
    readonly local: string, // the socket pair: our end
    readonly remote: string, // and the client's
    readonly trace?: Trace,
  ) {
    this.prefix = utf8.encode(`${remote}: `);
  }

  /** Queue a message; a client too far behind is cut off instead. */
  send(message: Uint8Array): void {
    if (this.#closed || this.queue.push(message)) return;
    this.close(
      `cut off: over ${SEND_QUEUE_BYTES} bytes queued for it, it is not reading (IRC's "Max SendQ exceeded")`,
    );
  }

  /** Whether its socket is closed (by us: its loops are ending). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Close the socket now, dropping what is queued; its loops end. */
  close(reason?: string): void {
    if (this.#closed) return;
    this.reason ??= reason;
    this.#closed = true;
    this.queue.end(true);
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** One {@link serveChat}'s book-keeping: clients, limit, idle, shutdown. */
class Room {
  readonly summary: ChatSummary = {
    clients: 0,
    refused: 0,
    cutOff: 0,
    lines: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  /** How the accept loop waits after a failed accept(). */
  readonly backoff: AcceptBackoff;
  /** Who is in the room now (a client that left is not). */
  readonly clients = new Set<Client>();
  readonly #open = new Set<Client>(); // joined, socket not yet closed
  readonly #handlers = new Set<Promise<void>>();
  readonly #o:
    & ServeChatOptions
    & Required<
      Pick<ServeChatOptions, "signal" | "log" | "warn">
    >;
  readonly #log: (line: string) => void; // event lines, unless --quiet
  readonly #stopIdleSweep: () => void;
  readonly #closeListener: () => void;

  constructor(listener: Deno.TcpListener, options: ServeChatOptions) {
    this.#o = { signal: new AbortController().signal, log, warn, ...options };
    this.#log = this.#o.quiet ? () => {} : this.#o.log;
    this.backoff = new AcceptBackoff(this.#o.warn, this.#o.signal);
    // Closing the listener is how a pending accept() is interrupted.
    this.#closeListener = () => {
      try {
        listener.close();
      } catch { /* already closed */ }
    };
    this.#o.signal.addEventListener("abort", this.#closeListener);
    this.#stopIdleSweep = sweepIdle(this.#open, this.#o.idleTimeout ?? 0);
  }

  /** Whether the room was told to stop. */
  get stopping(): boolean {
    return this.#o.signal.aborted;
  }

  /** Keep the handler of a client, to wait for it at shutdown. */
  track(handler: Promise<void>): void {
    // A handler throws only if a `log` given in-process does: warn, go on.
    const tracked: Promise<void> = handler
      .catch((e) => this.#o.warn(`warning: handler failed: ${errorText(e)}`))
      .finally(() => this.#handlers.delete(tracked));
    this.#handlers.add(tracked);
  }

  /**
   * A client arrives: log it, welcome it, tell the others. Over
   * --max-connections it is told the room is full and closed: undefined.
   */
  async join(conn: Deno.TcpConn): Promise<Client | undefined> {
    const local = formatAddr(conn.localAddr);
    const remote = formatAddr(conn.remoteAddr);
    const { maxConnections: max = Infinity, trace, hex = false } = this.#o;
    if (this.#open.size >= max) {
      this.summary.refused++;
      const why = `${this.#open.size} here, --max-connections ${max}`;
      this.#log(`chat refused local ${local} remote ${remote}: ${why}`);
      // A few bytes fit in a new socket's empty send buffer: no wait.
      await conn.write(utf8.encode(`* the room is full (${why})\n`))
        .catch(() => {});
      try {
        conn.close();
      } catch { /* already closed */ }
      return undefined;
    }
    const id = ++this.summary.clients;
    const print = trace ? tracer(this.#o.log, `chat #${id} `, hex) : undefined;
    const c = new Client(id, conn, local, remote, print);
    this.#open.add(c);
    const here = `${this.clients.size + 1} here`;
    this.#log(`chat join local ${local} remote ${remote} (#${id}, ${here})`);
    broadcast(
      this.clients,
      undefined,
      utf8.encode(`* ${remote} joined (${here})`),
    );
    this.clients.add(c);
    c.send(utf8.encode(`* you are ${remote} (${here})\n`));
    return c;
  }

  /** Its line was cut at MAX_LINE_BYTES: tell the sender, once a line. */
  tellCut(c: Client): void {
    this.#log(`chat #${c.id} line cut to ${MAX_LINE_BYTES} bytes`);
    c.send(
      utf8.encode(
        `* your line was cut to ${MAX_LINE_BYTES} bytes, the longest line here\n`,
      ),
    );
  }

  /** It left (or was cut off): tell the others; nothing more is queued. */
  leave(c: Client): void {
    if (!this.clients.delete(c)) return;
    c.queue.end(); // what is queued still goes out, then its writer closes
    if (this.stopping) return; // everyone is leaving: no one to tell
    const why = c.reason ? `: ${c.reason}` : "";
    const text = `* ${c.remote} left (${this.clients.size} here)${why}`;
    broadcast(this.clients, undefined, utf8.encode(text));
  }

  /** Its socket is closed: add up, log the leave line. */
  closed(c: Client): void {
    this.#open.delete(c);
    const s = this.summary;
    s.bytesIn += c.bytesIn;
    s.bytesOut += c.bytesOut;
    s.lines += c.lines;
    if (c.reason?.startsWith("cut off")) s.cutOff++;
    if (this.stopping) c.reason ??= "the server stopped";
    this.#log(
      `chat leave local ${c.local} remote ${c.remote} (#${c.id}) in ${c.bytesIn} bytes, out ${c.bytesOut} bytes, ${c.lines} lines${
        c.reason ? `: ${c.reason}` : ""
      }`,
    );
  }

  /**
   * Stopped accepting: tell everyone, give their writers the grace period
   * to send what is queued (a second signal, `force`, ends it early), then
   * close what is left.
   */
  async finish(): Promise<ChatSummary> {
    this.#o.signal.removeEventListener("abort", this.#closeListener);
    this.#closeListener();
    const grace = this.#o.grace ?? 0;
    if (this.#open.size > 0) {
      this.#log(
        `chat stopping: ${this.#open.size} here, up to ${grace} s to send what is queued`,
      );
      broadcast(
        this.clients,
        undefined,
        utf8.encode("* the server is stopping"),
      );
      for (const c of this.clients) c.queue.end(); // send the rest, close
      await finishWithin(this.#handlers, grace, (reason) => {
        for (const c of this.#open) c.close(reason);
      }, this.#o.force);
    }
    await Promise.all(this.#handlers);
    this.#stopIdleSweep();
    return this.summary;
  }
}

/**
 * `--idle-timeout`: one timer for the whole room sweeps the byte counters
 * now and then and closes clients that moved no bytes, in or out, for that
 * long (a client that only listens, in a room that talks, is not idle).
 * Returns a function that stops it.
 */
function sweepIdle(open: Set<Client>, idleSeconds: number) {
  if (idleSeconds <= 0) return () => {};
  const limit = idleSeconds * 1000;
  const timer = setInterval(() => {
    const now = performance.now();
    for (const c of open) {
      const moved = c.bytesIn + c.bytesOut;
      if (moved !== c.seen) {
        c.seen = moved;
        c.quietSince = now;
      } else if (now - c.quietSince >= limit) {
        c.close(`idle for ${idleSeconds} s`);
      }
    }
  }, Math.min(1000, Math.max(50, limit / 10)));
  return () => clearInterval(timer);
}

/** The byte arrays one after the other, in one new array. */
function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The summary line at exit. */
export function summaryLine(s: ChatSummary): string {
  return `chat server stopped: ${s.clients} clients, ${s.refused} refused, ${s.cutOff} cut off, ${s.lines} lines, ${s.bytesIn} bytes in, ${s.bytesOut} bytes out`;
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
