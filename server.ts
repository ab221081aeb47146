/**
 * server.ts: a TCP echo server, and with `--http` a tiny web server, written
 * directly on sockets so you can see what every server is made of.
 *
 * What it shows:
 * - `Deno.listen` opens a listening socket; the OS queues incoming
 *   connections (the backlog) until the accept loop takes them.
 * - Each accepted connection gets its own async handler: the modern form of
 *   "a thread per client". One slow client never blocks the others.
 * - A TCP connection is named by its socket pair: the server's address:port
 *   and the client's address:port. Every log line shows both ends, so you can
 *   see that many clients share the server's port and differ in theirs.
 * - TCP is a stream, not messages: a read returns whatever bytes have arrived
 *   so far, and a write may accept fewer bytes than you asked.
 *
 * Run it (loopback only, the narrowest permission that works):
 *
 *   deno run --allow-net=127.0.0.1 server.ts --port 8080
 *
 * Then, in another terminal: `deno run --allow-net=127.0.0.1 client.ts
 * --port 8080 hello`, or `nc 127.0.0.1 8080` and type. Try `--http` and open
 * http://127.0.0.1:8080 in a browser. Try `udp.ts --port 8080` at the same
 * time: TCP and UDP share a port number without noticing each other.
 *
 * This file stands alone (no imports): copy it anywhere and run it.
 */

/** Everything the server can be told on the command line. */
export interface ServerOptions {
  /** Address to bind. `127.0.0.1` (only this machine) unless told otherwise. */
  hostname: string;
  /** Port to bind; 0 asks the OS for a free one. */
  port: number;
  /** Length of the listen queue: connections the OS holds before we accept. */
  backlog: number;
  /** Connections served at once; one more is closed at once. */
  maxConnections: number;
  /** Seconds a connection may move no bytes before it is closed (0: never). */
  idleTimeout: number;
  /** Seconds open connections get to finish after SIGINT/SIGTERM. */
  grace: number;
  /** Answer as a minimal HTTP/1.1 server instead of echoing. */
  http: boolean;
  /** Leave out the per-connection log lines. */
  quiet: boolean;
}

/** The defaults, as `--help` shows them. */
export const DEFAULTS: ServerOptions = {
  hostname: "127.0.0.1",
  port: 8080,
  backlog: 511,
  maxConnections: 1000,
  idleTimeout: 300,
  grace: 5,
  http: false,
  quiet: false,
};

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE = `usage: deno run --allow-net=127.0.0.1 server.ts [options]

A TCP echo server: every byte a client sends comes back unchanged.
With --http it answers each connection as a minimal web server instead.

options:
  --hostname H          address to bind (default ${DEFAULTS.hostname}: only this
                        machine can connect). 0.0.0.0 (or ::) accepts
                        connections from every network this machine is on:
                        anyone who can reach it can use your echo server.
                        Deno then needs --allow-net=0.0.0.0 as well.
  --port N              port to bind, 0..65535; 0 picks a free one
                        (default ${DEFAULTS.port})
  --backlog N           listen queue length, connections waiting to be
                        accepted (default ${DEFAULTS.backlog}; the OS may round it)
  --max-connections N   connections served at once; more are closed at
                        once (default ${DEFAULTS.maxConnections})
  --idle-timeout S      close a connection that moves no bytes for S seconds;
                        0 never closes (default ${DEFAULTS.idleTimeout})
  --grace S             on Ctrl-C/SIGTERM, seconds open connections get to
                        finish before they are closed (default ${DEFAULTS.grace});
                        a second Ctrl-C closes them at once
  --http                answer HTTP requests with a page that shows the
                        socket pair, instead of echoing
  --quiet               no log line per connection
  --help                show this help

The first line of output is "tcp listening on HOST:PORT".`;

/** A bad command line: the caller prints the reason and the usage, exit 2. */
export class UsageError extends Error {}

/**
 * Parse the command line. Throws {@link UsageError} for an unknown flag or a
 * bad value; returns `"help"` for `--help`.
 */
export function parseServerArgs(args: string[]): ServerOptions | "help" {
  const options = { ...DEFAULTS };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const eq = arg.indexOf("=");
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = flag === arg ? undefined : arg.slice(eq + 1);
    const value = (): string => {
      const v = inline ?? args[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    const noValue = () => {
      if (inline !== undefined) {
        throw new UsageError(`${flag} takes no value`);
      }
    };
    switch (flag) {
      case "--help":
      case "-h":
        return "help";
      case "--hostname":
        options.hostname = parseHostname(value());
        break;
      case "--port":
        options.port = parseInteger(flag, value(), 0, 65535);
        break;
      case "--backlog":
        options.backlog = parseInteger(flag, value(), 1, 65535);
        break;
      case "--max-connections":
        options.maxConnections = parseInteger(flag, value(), 1, 1_000_000);
        break;
      case "--idle-timeout":
        options.idleTimeout = parseSeconds(flag, value());
        break;
      case "--grace":
        options.grace = parseSeconds(flag, value());
        break;
      case "--http":
        noValue();
        options.http = true;
        break;
      case "--quiet":
        noValue();
        options.quiet = true;
        break;
      default:
        throw new UsageError(
          arg.startsWith("-")
            ? `unknown flag ${JSON.stringify(flag)}`
            : `unexpected argument ${JSON.stringify(arg)}`,
        );
    }
  }
  return options;
}

function parseHostname(text: string): string {
  // "[::1]" and "::1" both mean the IPv6 loopback.
  const host = text.replace(/^\[(.*)\]$/, "$1");
  if (!/^[0-9A-Za-z.:_%-]+$/.test(host)) {
    throw new UsageError(
      `--hostname: not an address or name: ${JSON.stringify(text)}`,
    );
  }
  return host;
}

function parseInteger(
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

function parseSeconds(flag: string, text: string): number {
  const n = /^\d{1,9}(\.\d{1,6})?$/.test(text) ? Number(text) : NaN;
  if (!(n >= 0)) {
    throw new UsageError(
      `${flag} must be a number of seconds, 0 or more, not ${
        JSON.stringify(text)
      }`,
    );
  }
  return n;
}

/** `HOST:PORT`, with IPv6 hosts in brackets: `[::1]:8080`. */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") {
    return addr.transport;
  }
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/**
 * Open the listening socket. This is `socket()`, `bind()` and `listen()` of
 * the classic API in one call; `backlog` is the `listen(fd, backlog)` queue.
 * Throws an Error whose message is a plain reason for a person.
 */
export function listenTcp(
  options: { hostname: string; port: number; backlog?: number },
): Deno.TcpListener {
  const where = `tcp ${formatAddr({ transport: "tcp", ...options })}`;
  try {
    return Deno.listen({
      hostname: options.hostname,
      port: options.port,
      tcpBacklog: options.backlog ?? DEFAULTS.backlog,
    });
  } catch (err) {
    throw new Error(explainListenError(err, where, options.hostname), {
      cause: err,
    });
  }
}

function explainListenError(
  err: unknown,
  where: string,
  hostname: string,
): string {
  if (err instanceof Deno.errors.AddrInUse) {
    return `${where} is already in use: another program is listening there; stop it, or pick another --port (--port 0 picks a free one)`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `Deno has no permission to listen on ${where}; run again with --allow-net=${
      hostname.includes(":") ? `[${hostname}]` : hostname
    }`;
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return `the OS refused to let this process listen on ${where} (ports below 1024 need privileges); use a port from 1024 up`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot listen on ${where}: that address does not belong to this machine; try 127.0.0.1`;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/lookup address|Name or service not known|No address/i.test(message)) {
    return `cannot listen on ${where}: the name does not resolve to an address`;
  }
  return `cannot listen on ${where}: ${message}`;
}

/** Counters for one connection, or summed over the whole server. */
export interface ByteCounts {
  bytesIn: number;
  bytesOut: number;
}

/** What {@link serveTcp} reports when it stops. */
export interface ServerSummary extends ByteCounts {
  /** Connections served (accepted and handled). */
  connections: number;
  /** Connections closed at once because --max-connections was reached. */
  refused: number;
}

/** Options for {@link serveTcp}; all but the listener have defaults. */
export interface ServeOptions extends Partial<ServerOptions> {
  /** Abort to stop: stop accepting, give open connections `grace` seconds. */
  signal?: AbortSignal;
  /** Abort to end the grace period early: close open connections now. */
  force?: AbortSignal;
  /** Where event lines go (stdout by default). */
  log?: (line: string) => void;
  /** Where warnings go, such as accept errors (stderr by default). */
  warn?: (line: string) => void;
}

/** One open connection, as the server tracks it. */
interface Connection extends ByteCounts {
  id: number;
  conn: Deno.TcpConn;
  /** The socket pair: our end and the client's end. */
  local: string;
  remote: string;
  /** Bytes moved when the idle check last looked, and since when unchanged. */
  seen: number;
  quietSince: number;
  /** Why we closed it, if it was us (idle timeout, shutdown). */
  reason?: string;
}

/**
 * Serve connections from `listener` until `signal` aborts: echo (or HTTP with
 * `http: true`), one async handler per connection. Resolves with totals once
 * the listener is closed and every connection has ended (after at most
 * `grace` seconds).
 */
export async function serveTcp(
  listener: Deno.TcpListener,
  options: ServeOptions = {},
): Promise<ServerSummary> {
  const opts = { ...DEFAULTS, ...options };
  const log = opts.quiet ? () => {} : (options.log ?? console.log);
  const warn = options.warn ?? console.error;
  const signal = options.signal ?? new AbortController().signal;
  const summary: ServerSummary = {
    connections: 0,
    refused: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  const open = new Map<number, Connection>();
  const handlers = new Set<Promise<void>>();

  // Closing the listener is how a pending accept() is interrupted.
  const closeListener = () => {
    try {
      listener.close();
    } catch { /* already closed */ }
  };
  signal.addEventListener("abort", closeListener, { once: true });
  const stopIdleCheck = watchIdle(open, opts.idleTimeout);

  try {
    for await (const conn of acceptLoop(listener, signal, warn)) {
      const local = formatAddr(conn.localAddr);
      const remote = formatAddr(conn.remoteAddr);
      if (open.size >= opts.maxConnections) {
        // Over the limit: accept and close at once, so the client sees the
        // connection end (instead of waiting in the backlog) and the others
        // keep being served.
        summary.refused++;
        conn.close();
        log(
          `tcp refused local ${local} remote ${remote}: ${open.size} open, --max-connections ${opts.maxConnections}`,
        );
        continue;
      }
      const c: Connection = {
        id: ++summary.connections,
        conn,
        local,
        remote,
        bytesIn: 0,
        bytesOut: 0,
        seen: 0,
        quietSince: performance.now(),
      };
      open.set(c.id, c);
      log(
        `tcp open local ${local} remote ${remote} (#${c.id}, ${open.size} open)`,
      );
      const handler = handleConnection(c, opts.http, log).finally(() => {
        open.delete(c.id);
        handlers.delete(handler);
        summary.bytesIn += c.bytesIn;
        summary.bytesOut += c.bytesOut;
      });
      handlers.add(handler);
    }
    // Stopped accepting. Give the open connections a grace period to finish,
    // then close what is left.
    if (open.size > 0) {
      log(`tcp stopping: ${open.size} open, up to ${opts.grace} s to finish`);
      const closeAll = (reason: string) => {
        for (const c of open.values()) closeConnection(c, reason);
      };
      const timer = setTimeout(
        () => closeAll(`shutdown, grace of ${opts.grace} s over`),
        opts.grace * 1000,
      );
      const forced = () => closeAll("shutdown, forced by a second signal");
      options.force?.addEventListener("abort", forced, { once: true });
      if (options.force?.aborted) forced();
      await Promise.all(handlers);
      clearTimeout(timer);
      options.force?.removeEventListener("abort", forced);
    }
  } finally {
    signal.removeEventListener("abort", closeListener);
    closeListener();
    stopIdleCheck();
  }
  return summary;
}

/**
 * Yield accepted connections until the listener is closed. Why not a plain
 * `for await (const conn of listener)`? Because one failed accept() ends that
 * loop, and with it the server: a client that resets before we accept it
 * (ENOTCONN) or running out of file descriptors (EMFILE) are everyday events
 * for a server. Here each failure is logged and we back off briefly (more on
 * repeated failures) instead of spinning, then keep accepting.
 */
async function* acceptLoop(
  listener: Deno.TcpListener,
  signal: AbortSignal,
  warn: (line: string) => void,
): AsyncGenerator<Deno.TcpConn> {
  let backoff = 0;
  while (!signal.aborted) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (signal.aborted || err instanceof Deno.errors.BadResource) return;
      backoff = Math.min(Math.max(backoff * 2, 10), 1000);
      warn(
        `warning: accept failed: ${
          err instanceof Error ? err.message : err
        }; retrying in ${backoff} ms`,
      );
      await sleep(backoff, signal);
      continue;
    }
    backoff = 0;
    yield conn;
  }
}

/** Resolve after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Close connections that moved no bytes for `idleSeconds`. One timer for the
 * whole server looks at each connection's byte counters now and then, so the
 * per-read hot path pays nothing for it. Returns a function that stops it.
 */
function watchIdle(
  open: Map<number, Connection>,
  idleSeconds: number,
): () => void {
  if (idleSeconds <= 0) return () => {};
  const limit = idleSeconds * 1000;
  const timer = setInterval(() => {
    const now = performance.now();
    for (const c of open.values()) {
      const moved = c.bytesIn + c.bytesOut;
      if (moved !== c.seen) {
        c.seen = moved;
        c.quietSince = now;
      } else if (now - c.quietSince >= limit) {
        closeConnection(c, `idle for ${idleSeconds} s`);
      }
    }
  }, Math.min(1000, Math.max(50, limit / 10)));
  return () => clearInterval(timer);
}

/** Close a connection from outside its handler (its pending read fails). */
function closeConnection(c: Connection, reason: string): void {
  c.reason ??= reason;
  try {
    c.conn.close();
  } catch { /* already closed */ }
}

/** Run one connection's handler, then close it and log the close line. */
async function handleConnection(
  c: Connection,
  http: boolean,
  log: (line: string) => void,
): Promise<void> {
  try {
    if (http) {
      const line = await answerHttp(c.conn, c);
      log(`http local ${c.local} remote ${c.remote} (#${c.id}) ${line}`);
    } else {
      await echo(c.conn, c);
    }
  } catch (err) {
    // A reset or broken pipe is the client's choice, not our failure; and a
    // connection we closed (idle, shutdown) fails its pending read.
    c.reason ??= describeConnectionError(err);
  } finally {
    try {
      c.conn.close();
    } catch { /* already closed */ }
  }
  log(
    `tcp close local ${c.local} remote ${c.remote} (#${c.id}) in ${c.bytesIn} bytes, out ${c.bytesOut} bytes${
      c.reason ? `: ${c.reason}` : ""
    }`,
  );
}

function describeConnectionError(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "reset by the client";
  if (err instanceof Deno.errors.BrokenPipe) {
    return "client stopped reading (broken pipe)";
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * Echo: write back every byte read, until the client closes its sending side.
 *
 * - A read returns whatever has arrived: 1 byte or 64 KiB, never "a message".
 * - A write may take only part of the buffer, so {@link writeAll} loops.
 * - We read again only after the previous bytes are written. If the client
 *   does not read its echo, our write waits, we stop reading, the kernel's
 *   buffers fill and the client's writes wait in turn (backpressure). Memory
 *   per connection stays at one buffer, whatever the client sends.
 * - `read()` returning `null` means the client half-closed (sent FIN): all its
 *   bytes have arrived and been echoed, so we close, which sends our FIN.
 */
export async function echo(conn: Deno.Conn, counts: ByteCounts): Promise<void> {
  // Start small (1 KiB, a typical message): 10,000 idle connections then
  // hold 10 MB of buffers, not 40 MB. A read that fills the buffer means a
  // fast stream, so grow it (up to 64 KiB: as fast as a fixed 64 KiB buffer,
  // where a fixed 16 KiB one streams 10% slower; see bench/).
  let buf = new Uint8Array(1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return;
    counts.bytesIn += n;
    await writeAll(conn, buf.subarray(0, n), counts);
    if (n === buf.length && buf.length < 64 * 1024) {
      buf = new Uint8Array(buf.length * 4);
    }
  }
}

/** Write all of `data`: `write()` may accept only part of it per call. */
export async function writeAll(
  conn: Deno.Conn,
  data: Uint8Array,
  counts?: ByteCounts,
): Promise<void> {
  let written = 0;
  while (written < data.length) {
    const n = await conn.write(data.subarray(written));
    written += n;
    if (counts) counts.bytesOut += n;
  }
}

// ---------------------------------------------------------------------------
// --http: a web server is a wrapper around a socket.

/** The largest request head (request line and headers) we accept. */
export const MAX_HEAD_BYTES = 8 * 1024;

/** A parsed HTTP request head. */
export interface HttpRequest {
  method: string;
  target: string;
  version: string;
  requestLine: string;
  headers: [string, string][];
}

type HeadResult =
  | { ok: true; request: HttpRequest }
  | { ok: false; status: 400 | 431; why: string };

/**
 * Answer one HTTP request on `conn`, then close: read the request head (up to
 * the blank line), reply with a page that shows the socket pair, and send
 * `Connection: close`. Returns a short description for the log.
 */
export async function answerHttp(
  conn: Deno.TcpConn,
  counts: ByteCounts,
): Promise<string> {
  const head = await readRequestHead(conn, counts);
  let response: Uint8Array;
  let summary: string;
  if (!head.ok) {
    const reason = head.status === 400
      ? "Bad Request"
      : "Request Header Fields Too Large";
    response = httpResponse(
      head.status,
      reason,
      "text/plain",
      `${head.status} ${reason}: ${head.why}\n`,
      false,
    );
    summary = `${head.status} (${head.why})`;
  } else {
    const req = head.request;
    const isHead = req.method === "HEAD";
    if (req.method !== "GET" && !isHead) {
      response = httpResponse(
        405,
        "Method Not Allowed",
        "text/plain",
        "405: only GET and HEAD here\n",
        false,
        [["Allow", "GET, HEAD"]],
      );
      summary = `405 "${req.requestLine}"`;
    } else {
      const info: PageInfo = {
        client: formatAddr(conn.remoteAddr),
        server: formatAddr(conn.localAddr),
        request: req,
        bytesIn: counts.bytesIn,
      };
      const accept = req.headers.find(([k]) =>
        k.toLowerCase() === "accept"
      )?.[1] ?? "";
      const plain = /text\/plain/i.test(accept) &&
        !/text\/html/i.test(accept);
      response = plain
        ? httpResponse(200, "OK", "text/plain", plainPage(info), isHead)
        : httpResponse(200, "OK", "text/html", htmlPage(info), isHead);
      summary = `200 "${req.requestLine}"`;
    }
  }
  await writeAll(conn, response, counts);
  await lingeringClose(conn);
  return summary;
}

/**
 * Read up to the blank line that ends the request head. The bytes arrive in
 * pieces of any size (TCP is a stream), so we keep reading and look again.
 * The request line is checked as soon as it is complete, so junk is answered
 * with 400 at once instead of waiting for a blank line that never comes.
 */
async function readRequestHead(
  conn: Deno.Conn,
  counts: ByteCounts,
): Promise<HeadResult> {
  const buf = new Uint8Array(MAX_HEAD_BYTES + 1);
  let length = 0;
  const latin1 = new TextDecoder("latin1");
  while (length < buf.length) {
    const n = await conn.read(buf.subarray(length));
    if (n === null) {
      const text = latin1.decode(buf.subarray(0, length));
      return {
        ok: false,
        status: 400,
        why: length === 0
          ? "no request was sent"
          : `incomplete request: ${JSON.stringify(text.slice(0, 40))}`,
      };
    }
    counts.bytesIn += n;
    length += n;
    const text = latin1.decode(buf.subarray(0, length));
    const firstLineEnd = text.indexOf("\n");
    const firstLine = (firstLineEnd >= 0 ? text.slice(0, firstLineEnd) : text)
      .replace(/\r$/, "");
    // A request line is printable ASCII, so one other byte (binary junk, the
    // TLS handshake of an https:// client) is answered at once; waiting for
    // a newline that may never come would leave both sides waiting.
    if (
      firstLineEnd >= 0
        ? !REQUEST_LINE.test(firstLine)
        : /[^\x20-\x7e]/.test(firstLine)
    ) {
      return { ok: false, status: 400, why: "malformed request line" };
    }
    const end = text.search(/\r?\n\r?\n/);
    if (end >= 0) return parseRequestHead(text.slice(0, end));
  }
  return {
    ok: false,
    status: 431,
    why: `request head over ${MAX_HEAD_BYTES} bytes`,
  };
}

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const REQUEST_LINE = new RegExp(
  `^(${TOKEN}) ([\\x21-\\x7e]+) HTTP/(\\d\\.\\d)$`,
);
const HEADER_LINE = new RegExp(`^(${TOKEN}):[ \\t]*(.*?)[ \\t]*$`);

function parseRequestHead(text: string): HeadResult {
  const [line, ...rest] = text.split(/\r?\n/);
  const m = REQUEST_LINE.exec(line);
  if (!m) return { ok: false, status: 400, why: "malformed request line" };
  const headers: [string, string][] = [];
  for (const h of rest) {
    const hm = HEADER_LINE.exec(h);
    if (!hm) return { ok: false, status: 400, why: "malformed header line" };
    headers.push([hm[1], hm[2]]);
  }
  return {
    ok: true,
    request: {
      method: m[1],
      target: m[2],
      version: m[3],
      requestLine: line,
      headers,
    },
  };
}

function httpResponse(
  status: number,
  reason: string,
  type: "text/html" | "text/plain",
  body: string,
  headOnly: boolean,
  extra: [string, string][] = [],
): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const head = [
    `HTTP/1.1 ${status} ${reason}`,
    `Content-Type: ${type}; charset=utf-8`,
    `Content-Length: ${bytes.length}`,
    `Connection: close`,
    `Date: ${new Date().toUTCString()}`,
    `Server: deno-socket-playground`,
    ...extra.map(([k, v]) => `${k}: ${v}`),
    "",
    "",
  ].join("\r\n");
  const headBytes = new TextEncoder().encode(head);
  if (headOnly) return headBytes;
  const out = new Uint8Array(headBytes.length + bytes.length);
  out.set(headBytes);
  out.set(bytes, headBytes.length);
  return out;
}

/**
 * Close politely: send our FIN (`closeWrite`), then read and discard what the
 * client still sends until it closes too (at most a second, at most 1 MiB).
 * Closing a socket that has unread bytes makes the OS send a reset, and a
 * reset can destroy the response before the client has read it.
 */
async function lingeringClose(conn: Deno.Conn): Promise<void> {
  try {
    await conn.closeWrite();
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* closed */ }
  }, 1000);
  try {
    const scratch = new Uint8Array(4096);
    for (let total = 0; total < 1024 * 1024;) {
      const n = await conn.read(scratch);
      if (n === null) break;
      total += n;
    }
  } catch {
    /* reset or closed by the timer: fine, we are done */
  } finally {
    clearTimeout(timer);
  }
}

interface PageInfo {
  client: string;
  server: string;
  request: HttpRequest;
  bytesIn: number;
}

/** Escape text for HTML: every value from the request is untrusted. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function htmlPage(info: PageInfo): string {
  const e = escapeHtml;
  const headers = info.request.headers.map(([k, v]) => `${k}: ${v}`).join("\n");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Socket playground: your request</title>
<style>body{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em}pre,td{font-family:ui-monospace,monospace}td,th{padding:.2em .8em;text-align:left}</style>
</head>
<body>
<h1>Hello from a socket</h1>
<p>Your browser opened a TCP connection to this server and sent the request
below. The connection is named by its <strong>socket pair</strong>:</p>
<table>
<tr><th>you (client)</th><td>${e(info.client)}</td></tr>
<tr><th>me (server)</th><td>${e(info.server)}</td></tr>
<tr><th>protocol</th><td>TCP, carrying HTTP/${e(info.request.version)}</td></tr>
</table>
<p>The client port is not the one in the address bar: your OS picked a free
"ephemeral" port for your end of the connection. Reload and it changes;
the server's port stays.</p>
<h2>Request line</h2>
<pre>${e(info.request.requestLine)}</pre>
<h2>Headers received</h2>
<pre>${e(headers)}</pre>
<h2>What happened on the wire</h2>
<ol>
<li>Your client (a browser, curl, client.ts) connected: SYN, SYN-ACK, ACK, the TCP handshake.</li>
<li>It wrote ${info.bytesIn} bytes of text: the request line, the headers, a blank line.</li>
<li>The server read them, wrote this page after a status line and headers
(Content-Length, Connection: close) and closed its end.</li>
</ol>
</body>
</html>
`;
}

function plainPage(info: PageInfo): string {
  const headers = info.request.headers.map(([k, v]) => `  ${k}: ${v}`).join(
    "\n",
  );
  return `Hello from a socket.
socket pair:
  you (client): ${info.client}
  me (server):  ${info.server}
  protocol:     TCP, carrying HTTP/${info.request.version}
request line:
  ${info.request.requestLine}
headers received:
${headers}
on the wire: your client connected (SYN, SYN-ACK, ACK), wrote ${info.bytesIn} bytes
of request, the server wrote this reply and closed (Connection: close).
`;
}

// ---------------------------------------------------------------------------

/**
 * The command-line program: parse flags, listen, print the listening line,
 * serve until SIGINT/SIGTERM, print a summary. Returns the exit status.
 */
export async function main(args: string[]): Promise<number> {
  let options: ServerOptions | "help";
  try {
    options = parseServerArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`error: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (options === "help") {
    console.log(USAGE);
    return 0;
  }
  let listener: Deno.TcpListener;
  try {
    listener = listenTcp(options);
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
  // Ctrl-C (SIGINT) and `kill` (SIGTERM) stop the server cleanly. Listen
  // for them before saying we listen: whoever reads that line may stop us.
  // A second signal (the impatient second Ctrl-C) skips the grace period.
  const stop = new AbortController();
  const force = new AbortController();
  const onSignal = () => stop.signal.aborted ? force.abort() : stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  console.log(`tcp listening on ${formatAddr(listener.addr)}`);
  try {
    const s = await serveTcp(listener, {
      ...options,
      signal: stop.signal,
      force: force.signal,
    });
    console.log(
      `tcp server stopped: ${s.connections} connections, ${s.refused} refused, ${s.bytesIn} bytes in, ${s.bytesOut} bytes out`,
    );
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
