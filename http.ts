/**
 * http.ts: a web server written by hand on a TCP socket, no HTTP library.
 *
 * First listing: basics/http_hello.ts (76 lines) is this lesson alone: read
 * the head up to its empty line, answer 200 with an exact Content-Length,
 * close. This file adds an escaped HTML page, HEAD, 4xx answers, time limits
 * (408), --trace and --hex, and a clean shutdown.
 *
 * What it shows:
 * - A web server is a TCP server: `Deno.listen`, an accept loop, one handler
 *   per connection. HTTP is only what the two ends write on the socket.
 * - A request is just bytes: a request line (`GET / HTTP/1.1`), header lines,
 *   an empty line. Each line ends in CR LF, so the head ends in CR LF CR LF.
 * - Those bytes arrive in pieces of any size (TCP is a stream), so the server
 *   reads until it has seen the empty line, and no longer than it allows.
 * - The reply is bytes too: a status line, headers, an empty line, the page.
 *   `Content-Length` says where the page ends; `Connection: close` says the
 *   server closes after this one exchange.
 * - The page shows the socket pair (your address:port and the server's) and
 *   the request your client sent, escaped.
 *
 * Run it (loopback only, the narrowest permission that works):
 *
 *   deno run --allow-net=127.0.0.1 http.ts --port 8000
 *
 * Or on a Unix socket, a path instead of an address and port (no TCP, no
 * IP: the same HTTP bytes over an IPC socket; Deno wants read, write and
 * net grants on the path):
 *
 *   deno run --allow-read=/tmp/http.sock --allow-write=/tmp/http.sock --allow-net=unix:/tmp/http.sock http.ts --unix /tmp/http.sock
 *   curl --unix-socket /tmp/http.sock http://localhost/
 *
 * Then open http://127.0.0.1:8000 in a browser, or in another terminal:
 *
 *   curl -v http://127.0.0.1:8000/
 *   deno run --allow-net=127.0.0.1 client.ts --port 8000 --http
 *
 * Reload and watch the client's port change while the server's stays. Run it
 * with `--hex` to see every byte your browser sends, CR LF included.
 *
 * The short version is basics/http_hello.ts. This one adds what clients out
 * there need: limits on the head's size and time, the checks RFC 9112 and
 * 9110 require of a server, a graceful shutdown, `--trace` and `--hex`.
 *
 * This file stands alone (no imports but `node:util`, built into Deno).
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ─── 1. Listen ──────────────────────────────────────────────────────────────

const BACKLOG = 511; // connections the kernel queues for us before accept()

/**
 * Open the listening socket: `socket()`, `bind()` and `listen()` of the
 * classic API in one call. Throws an Error whose message is a plain reason.
 * (On a path: {@link listenHttpUnix}.)
 */
export function listenHttp(
  options: { hostname: string; port: number },
): Deno.TcpListener {
  try {
    return Deno.listen({
      hostname: options.hostname,
      port: options.port,
      tcpBacklog: BACKLOG,
    });
  } catch (err) {
    const where = `tcp ${formatAddr(options)}`;
    throw new Error(explainListenError(err, where, options.hostname), {
      cause: err,
    });
  }
}

/**
 * The same on a Unix stream socket at `path`: bind() creates the socket
 * file, and its mode decides who may connect. A file a killed server left
 * behind is replaced if nobody listens on it (a connect is refused); any
 * other file stays, and is an Error. Closing the listener removes the file.
 */
export async function listenHttpUnix(path: string): Promise<Deno.UnixListener> {
  return await bindUnix(
    path,
    () => Deno.listen({ transport: "unix", path }),
    warn,
  );
}

// ─── 2. The accept loop ─────────────────────────────────────────────────────

/**
 * Serve HTTP on `listener` until `options.signal` aborts: accept each
 * connection and answer it in its own async handler, so one slow client
 * never holds up the others. Resolves with totals once the listener is
 * closed and every open exchange has ended (after at most `grace` seconds).
 */
export async function serveHttp(
  listener: Listener,
  options: ServeHttpOptions,
): Promise<HttpSummary> {
  const server = new HttpServer(listener, options); // totals, limit, log
  while (!server.stopping) {
    let conn: Deno.Conn;
    try {
      // The next connection the kernel has completed (SYN, SYN-ACK, ACK)
      // and queued for us; accept() waits if there is none.
      conn = await listener.accept();
    } catch (err) {
      if (server.stopping || err instanceof Deno.errors.BadResource) break;
      await server.backoff.after(err); // one client's reset: no wait at all
      continue;
    }
    server.backoff.reset();
    const admitted = server.admit(conn); // or closed at once, over the limit
    if (!admitted) continue;
    // Not awaited: the loop goes straight back to accept(), so we never
    // wait for one client before taking the next.
    server.track(admitted, answerHttp(conn, admitted.options));
  }
  return await server.finish(); // exchanges in flight get `grace` seconds
}

// ─── 3. One exchange per connection ─────────────────────────────────────────

/**
 * Answer ONE HTTP/1.1 request on `conn`, then close it: read the head,
 * parse it, answer, close politely. Never throws: what happened is in the
 * returned {@link HttpExchange} (for the log line).
 */
export async function answerHttp(
  conn: Deno.Conn,
  options: AnswerHttpOptions,
): Promise<HttpExchange> {
  const exchange: HttpExchange = {
    status: 0,
    outcome: "",
    bytesIn: 0,
    bytesOut: 0,
  };
  // Every read and write goes through these two, so the byte counts (and
  // --trace) see them all.
  const read = async (into: Uint8Array): Promise<number | null> => {
    const n = await conn.read(into);
    if (n !== null) {
      exchange.bytesIn += n;
      options.trace?.(`read ${n} bytes`, into.subarray(0, n));
    }
    return n;
  };
  const write = (bytes: Uint8Array) =>
    writeAll(conn, bytes, (piece) => {
      exchange.bytesOut += piece.length;
      options.trace?.(`wrote ${piece.length} bytes`, piece);
    });
  // Shutdown closes the socket: a pending read or write fails, and the
  // catch below says why.
  const close = () => closeQuietly(conn);
  options.signal?.addEventListener("abort", close, { once: true });
  try {
    const head = await readHead(read, options); // step 4
    if (head instanceof NoRequest) {
      exchange.outcome = head.why; // nothing to answer: just close
      return exchange;
    }
    const request = head instanceof Rejection ? head : parseHead(head); // 5
    const reply = respond(request, conn); // step 6: the page, or why not
    exchange.status = reply.status;
    exchange.outcome = reply.outcome;
    // Write the whole response (a write may take only part of it, so
    // writeAll loops), unless the client reads none of it for so long.
    const idle = options.idleTimeout;
    const sent = await untilOrTimeout(write(reply.bytes), timeoutMs(idle));
    if (sent === TIMED_OUT) {
      exchange.outcome += `; closed: the client read nothing for ${idle} s`;
      return exchange;
    }
    await lingeringClose(conn, read); // step 7
  } catch (err) {
    // A reset or a broken pipe is the client's choice, not our failure; a
    // connection we closed (shutdown) fails its pending read or write.
    const why = options.signal?.aborted
      ? `closed: ${options.signal.reason}`
      : describeConnectionError(err);
    exchange.outcome = exchange.outcome
      ? `${exchange.outcome}; ${why}`
      : `no reply: ${why}`;
  } finally {
    options.signal?.removeEventListener("abort", close);
    closeQuietly(conn);
  }
  return exchange;
}

// ─── 4. Read the head: bytes in pieces, up to a limit ───────────────────────

/**
 * The largest request head (request line, headers and the empty line that
 * ends them) we accept: 8 KiB, as nginx and Node. More is 431 (414 when the
 * request line alone is longer). A limit is what keeps a client from making
 * us hold an endless head in memory.
 */
export const MAX_HEAD_BYTES = 8 * 1024;

/**
 * Read until the empty line that ends the head (CR LF CR LF; a bare LF is
 * accepted too, RFC 9112 section 2.2). It may come in one read or in many
 * pieces, a byte at a time even: append each read to the buffer and look
 * for the empty line. The whole head must come within --head-timeout of
 * the connection opening, however slowly it trickles (slowloris), and no
 * pause in it may last --idle-timeout.
 */
async function readHead(
  read: (into: Uint8Array) => Promise<number | null>,
  limits: { headTimeout: number; idleTimeout: number },
): Promise<Head | Rejection | NoRequest> {
  const buf = new Uint8Array(MAX_HEAD_BYTES);
  let length = 0;
  let line: RequestLine | undefined; // the request line, once it is whole
  const deadline = performance.now() + timeoutMs(limits.headTimeout);
  while (true) {
    const received = buf.subarray(0, length);
    if (length === buf.length) return tooLarge(received, line);
    const headLeft = deadline - performance.now();
    const n = await untilOrTimeout(
      read(buf.subarray(length)),
      Math.min(headLeft, timeoutMs(limits.idleTimeout)),
    );
    // No byte in time: a connection that sent nothing (a browser's spare)
    // is closed without a word; part of a head gets 408.
    if (n === TIMED_OUT) return timedOut(received, headLeft, limits);
    if (n === null) { // the client closed its side (FIN): no more bytes
      return length === 0
        ? new NoRequest("no request: the client closed without sending one")
        : new Rejection(
          400,
          "the client closed before the end of the head",
          isHeadRequest(received),
        );
    }
    const before = length;
    length += n;
    // The request line is checked as soon as it is whole, and a byte that
    // cannot be in one (binary junk, the TLS handshake of an https://
    // client) gets 400 at once: no waiting for a line end that never comes.
    if (!line) {
      const checked = checkRequestLine(buf.subarray(0, length), before);
      if (checked instanceof Rejection) return checked;
      line = checked;
    }
    const end = findHeadEnd(buf, Math.max(0, before - 3), length);
    if (line && end > 0) return { line, bytes: buf.subarray(0, end) };
  }
}

// ─── 5. Parse it ────────────────────────────────────────────────────────────

/**
 * Parse a whole head: the request line (checked as it came in), then one
 * `Name: value` field per line, up to the empty line. What RFC 9112 and 9110
 * say a server MUST refuse gets a {@link Rejection} instead (the checks are
 * under the plumbing divider).
 */
export function parseHead(head: Head): HttpRequest | Rejection {
  const isHead = head.line.method === "HEAD"; // no body, even for an error
  // The head is bytes; UTF-8 text leaves the ASCII of the grammar (and any
  // control character) as it is, and shows non-ASCII values readably.
  const lines = new TextDecoder().decode(head.bytes).split(/\r?\n/);
  const headers: [string, string][] = [];
  for (const line of lines.slice(1, lines.indexOf(""))) {
    const field = parseFieldLine(line); // [name, value], or why not
    if (typeof field === "string") return new Rejection(400, field, isHead);
    headers.push(field);
  }
  const why = mustRefuse(head.line, headers); // Host, Content-Length, ...
  if (why) return new Rejection(400, why, isHead);
  return { ...head.line, headers, headBytes: head.bytes.length };
}

// ─── 6. Answer ──────────────────────────────────────────────────────────────

/** Reason phrases of the statuses this server sends. */
export const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  405: "Method Not Allowed",
  408: "Request Timeout",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  505: "HTTP Version Not Supported",
};

/**
 * What to send, and how the log line names it. One page for every path, to
 * GET and HEAD; other methods get 405, a refused head its error status.
 */
function respond(request: HttpRequest | Rejection, conn: Deno.Conn): Reply {
  if (request instanceof Rejection) {
    const { status, why, isHead } = request;
    const body = `${status} ${REASONS[status]}: ${why}\n`;
    const bytes = httpResponse(status, "text/plain", body, isHead);
    return { status, outcome: `${status} (${why})`, bytes };
  }
  const quoted = `"${request.requestLine}"`;
  if (request.method !== "GET" && request.method !== "HEAD") {
    const body = `405 ${REASONS[405]}: only GET and HEAD here\n`;
    const allow: [string, string] = ["Allow", "GET, HEAD"];
    const bytes = httpResponse(405, "text/plain", body, false, [allow]);
    return { status: 405, outcome: `405 ${quoted}`, bytes };
  }
  // The page (step 8): HTML for a browser, plain text when Accept asks.
  // HEAD gets the same headers, Content-Length included, and no body.
  const unix = conn.localAddr.transport === "unix";
  const page: PageInfo = {
    client: formatAddr(conn.remoteAddr),
    server: formatAddr(conn.localAddr),
    transport: unix ? "Unix socket" : "TCP",
    request,
  };
  const isHead = request.method === "HEAD";
  const bytes = prefersPlainText(request.headers)
    ? httpResponse(200, "text/plain", plainPage(page), isHead)
    : httpResponse(200, "text/html", htmlPage(page), isHead);
  return { status: 200, outcome: `200 ${quoted}`, bytes };
}

/**
 * A whole response as bytes: status line, headers, empty line, body.
 * `Content-Length` is the body's size in BYTES (not characters): the client
 * reads exactly that many. `headOnly` (for HEAD) leaves the body out but
 * keeps its length.
 */
export function httpResponse(
  status: number,
  type: "text/html" | "text/plain",
  body: string,
  headOnly = false,
  extra: [string, string][] = [],
): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const head = [
    `HTTP/1.1 ${status} ${REASONS[status]}`,
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

// ─── 7. Close politely ──────────────────────────────────────────────────────

const LINGER_MS = 1000; // how long we wait for the client's FIN after ours
const LINGER_MAX_BYTES = 1024 * 1024; // how much we read and discard

/**
 * Close politely: send our FIN (`closeWrite`), then read and throw away what
 * the client still sends until it closes too (at most LINGER_MS, at most
 * LINGER_MAX_BYTES). Closing a socket with unread bytes in it makes the OS
 * send a reset, and a reset can destroy the response before the client has
 * read it.
 */
async function lingeringClose(
  conn: Deno.Conn,
  read: (into: Uint8Array) => Promise<number | null>,
): Promise<void> {
  try {
    await conn.closeWrite();
    const until = performance.now() + LINGER_MS;
    const scratch = new Uint8Array(4096);
    for (let total = 0; total < LINGER_MAX_BYTES;) {
      const n = await untilOrTimeout(read(scratch), until - performance.now());
      if (n === null || n === TIMED_OUT) return;
      total += n;
    }
  } catch {
    // A reset now changes nothing: the response is already on its way.
  }
}

// ─── 8. The page ────────────────────────────────────────────────────────────

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
<p>Your browser opened a ${
    e(info.transport)
  } connection to this server and sent the request
below. The connection is named by its <strong>socket pair</strong>:</p>
<table>
<tr><th>you (client)</th><td>${e(info.client)}</td></tr>
<tr><th>me (server)</th><td>${e(info.server)}</td></tr>
<tr><th>protocol</th><td>${e(protocolOf(info))}, carrying HTTP/${
    e(info.request.version)
  }</td></tr>
</table>
<p>${e(aboutYourEnd(info))}</p>
<h2>Request line</h2>
<pre>${e(info.request.requestLine)}</pre>
<h2>Headers received</h2>
<pre>${e(headers)}</pre>
<h2>What happened on the wire</h2>
<ol>
<li>Your client (a browser, curl, client.ts) connected: ${
    e(handshakeOf(info))
  }.</li>
<li>It wrote a request head of ${info.request.headBytes} bytes: the request line, the headers, an empty line.</li>
<li>The server read them, wrote this page after a status line and headers
(Content-Length, Connection: close) and closed its end.</li>
</ol>
<p>Run the server with <code>--hex</code> to see those bytes.</p>
</body>
</html>
`;
}

function plainPage(info: PageInfo): string {
  const headers = info.request.headers.map(([k, v]) => `  ${k}: ${v}`)
    .join("\n");
  return `Hello from a socket.
socket pair:
  you (client): ${info.client}
  me (server):  ${info.server}
  protocol:     ${protocolOf(info)}, carrying HTTP/${info.request.version}
request line:
  ${info.request.requestLine}
headers received:
${headers}
on the wire: your client connected (${handshakeOf(info)}), wrote a request head
of ${info.request.headBytes} bytes, the server wrote this reply and closed (Connection: close).
`;
}

/** The protocol row of the page. */
function protocolOf(info: PageInfo): string {
  return info.transport === "TCP"
    ? "TCP"
    : "a Unix stream socket (no TCP, no IP: the kernel copies the bytes)";
}

/** What the page says about the client's end of the socket pair. */
function aboutYourEnd(info: PageInfo): string {
  return info.transport === "TCP"
    ? `The client port is not the one in the address bar: your OS picked a free "ephemeral" port for your end of the connection. Reload and it changes; the server's port stays.`
    : `Your end of a Unix socket has no name (no port, no path): only the server's end is bound, to the path your client connected to. The file's permissions decided whether you could connect.`;
}

/** How the connection was opened, for the page. */
function handshakeOf(info: PageInfo): string {
  return info.transport === "TCP"
    ? "SYN, SYN-ACK, ACK, the TCP handshake"
    : "connect() on the path; no packets, no handshake on any wire";
}

// Run as a program (not imported): main and the plumbing it uses are below
// this line, so start once the whole file has loaded.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/**
 * The command-line program: parse flags, listen, print the listening line,
 * serve until SIGINT/SIGTERM, print a summary. Returns the exit status;
 * throws {@link UsageError} or an Error with a plain reason.
 */
export async function main(args: string[]): Promise<number> {
  const options = parseHttpArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  const listener = options.unix !== null
    ? await listenHttpUnix(options.unix)
    : listenHttp(options);
  // Ctrl-C (SIGINT) and `kill` (SIGTERM) stop the server cleanly. Listen
  // for them before saying we listen: whoever reads that line may stop us.
  const stop = new AbortController();
  const force = new AbortController();
  const removeSignals = onStopSignals(() => stop.abort(), () => force.abort());
  try {
    const proto = listener.addr.transport; // "tcp" or "unix"
    log(`${proto} listening on ${formatAddr(listener.addr)}`);
    const s = await serveHttp(listener, {
      ...options,
      grace: GRACE_SECONDS,
      signal: stop.signal,
      force: force.signal,
    });
    log(
      `http server stopped: ${s.connections} connections, ${s.refused} refused, ${s.bytesIn} bytes in, ${s.bytesOut} bytes out`,
    );
  } finally {
    removeSignals();
  }
  return 0;
}

/**
 * Parse the command line into complete {@link HttpOptions}: the defaults
 * are filled in here, and `--hex` turns `--trace` on, once for the whole
 * program. Throws {@link UsageError} for an unknown flag or a bad value;
 * returns `"help"` for `--help`.
 */
export function parseHttpArgs(args: string[]): HttpOptions | "help" {
  const { values: v } = parseFlags(args, FLAGS);
  if (v.help) return "help";
  const o = { ...DEFAULTS };
  if (v.unix !== undefined) {
    if (v.hostname !== undefined || v.port !== undefined) {
      throw new UsageError(
        `--unix PATH replaces --hostname and --port (a Unix socket is ` +
          `named by a path, not an address and port): give one or the other`,
      );
    }
    if (v.unix === "") throw new UsageError(`--unix needs a path`);
    o.unix = v.unix;
  }
  if (v.hostname !== undefined) o.hostname = parseHostname(v.hostname);
  if (v.port !== undefined) o.port = parseInteger("--port", v.port, 0, 65535);
  if (v["max-connections"] !== undefined) {
    o.maxConnections = parseInteger(
      "--max-connections",
      v["max-connections"],
      1,
      1_000_000,
    );
  }
  // Both timeouts are timers: parseSeconds refuses more than a JavaScript
  // timer holds (a longer one would fire at once).
  if (v["idle-timeout"] !== undefined) {
    o.idleTimeout = parseSeconds("--idle-timeout", v["idle-timeout"]);
  }
  if (v["head-timeout"] !== undefined) {
    o.headTimeout = parseSeconds("--head-timeout", v["head-timeout"]);
  }
  o.quiet = v.quiet ?? false;
  o.hex = v.hex ?? false;
  o.trace = (v.trace ?? false) || o.hex;
  return o;
}

const FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  unix: { type: "string" },
  "max-connections": { type: "string" },
  "idle-timeout": { type: "string" },
  "head-timeout": { type: "string" },
  quiet: { type: "boolean" },
  trace: { type: "boolean" },
  hex: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsOptionsConfig;

/** Everything http.ts can be told on the command line. */
export interface HttpOptions {
  /** Address to bind: `127.0.0.1` (only this machine) unless told. */
  hostname: string;
  /** Port to bind; 0 asks the OS for a free one. */
  port: number;
  /** A Unix socket's path to listen on instead (null: TCP). */
  unix: string | null;
  /** Connections served at once; one more is closed at once. */
  maxConnections: number;
  /** Seconds a connection may move no bytes before it is closed (0: never). */
  idleTimeout: number;
  /** Seconds from the connection opening to the end of the head (0: never). */
  headTimeout: number;
  /** Leave out the per-exchange log lines. */
  quiet: boolean;
  /** One line per read and write, with its size. */
  trace: boolean;
  /** Under each traced line, the bytes in the xxd layout (with `trace`). */
  hex: boolean;
}

/** The defaults, as `--help` shows them. */
export const DEFAULTS: HttpOptions = {
  hostname: "127.0.0.1",
  port: 8080,
  unix: null,
  maxConnections: 1000,
  idleTimeout: 30,
  headTimeout: 10,
  quiet: false,
  trace: false,
  hex: false,
};

/** Seconds exchanges in flight get to finish after SIGINT/SIGTERM. */
export const GRACE_SECONDS = 5;

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE = `usage: deno run --allow-net=127.0.0.1 http.ts [options]
       deno run --allow-read=PATH --allow-write=PATH --allow-net=unix:PATH http.ts --unix PATH [options]

A web server written by hand on a TCP socket: each connection gets one
HTTP/1.1 exchange, a page that shows the socket pair and the request.

options:
  --hostname H          address to bind (default ${DEFAULTS.hostname}: only this
                        machine can connect); 0.0.0.0 (or ::) opens it to
                        every network this machine is on, and Deno then
                        needs --allow-net=0.0.0.0
  --port N              port to bind, 0..65535; 0 picks a free one
                        (default ${DEFAULTS.port})
  --unix PATH           listen on a Unix stream socket at PATH instead of
                        --hostname and --port (curl --unix-socket PATH
                        http://localhost/). A stale socket file nobody
                        listens on is replaced, any other file left alone;
                        the file goes when the server stops. Deno needs
                        --allow-read=PATH --allow-write=PATH
                        --allow-net=unix:PATH (an absolute path after unix:)
  --max-connections N   connections served at once; more are closed at
                        once (default ${DEFAULTS.maxConnections})
  --idle-timeout S      close a connection that moves no bytes for S
                        seconds, with 408 if its request head had begun;
                        0 never (default ${DEFAULTS.idleTimeout})
  --head-timeout S      the whole request head must arrive within S seconds
                        of connecting, else 408; 0 never (default ${DEFAULTS.headTimeout})
  --quiet               no log line per exchange
  --trace               one line per read and write: "tcp #N read 78 bytes"
                        ("unix #N ..." with --unix)
  --hex                 also dump those bytes as xxd does (implies --trace)
  --help                show this help

A connection that sends nothing (a browser's spare) times out silently, no 408.

The first line of output is "tcp listening on HOST:PORT" ("unix listening
on PATH" with --unix). Ctrl-C (or
SIGTERM) stops accepting, gives exchanges in flight up to ${GRACE_SECONDS} s, prints a
summary; a second Ctrl-C closes them at once.`;

// --- for serveHttp: the accept loop's bookkeeping and shutdown --------------

/**
 * What {@link serveHttp} needs: the limits and log choices of the command
 * line (all of them: `{ ...DEFAULTS, ... }` gives the defaults) and how to
 * stop. `hex` adds the bytes to the lines of `trace`.
 */
export interface ServeHttpOptions extends
  Pick<
    HttpOptions,
    "maxConnections" | "idleTimeout" | "headTimeout" | "quiet" | "trace" | "hex"
  > {
  /** Abort to stop: stop accepting, give open exchanges `grace` seconds. */
  signal: AbortSignal;
  /** Abort to end the grace period early: close open connections now. */
  force?: AbortSignal;
  /** Seconds open exchanges get after `signal` (main: GRACE_SECONDS). */
  grace: number;
  /** Where log and trace lines go (best-effort stdout by default). */
  log?: (line: string) => void;
  /** Where warnings go, such as accept errors (stderr by default). */
  warn?: (line: string) => void;
}

/** What the accept loop needs of a listener (TCP, or a Unix socket's). */
export interface Listener {
  accept(): Promise<Deno.Conn>;
  close(): void;
}

/** What {@link serveHttp} reports when it stops. */
export interface HttpSummary {
  /** Connections accepted and answered (or closed by a limit). */
  connections: number;
  /** Connections closed at once because --max-connections was reached. */
  refused: number;
  bytesIn: number;
  bytesOut: number;
}

/** A connection the accept loop took on: its number, ends and options. */
interface Admitted {
  id: number;
  local: string;
  remote: string;
  options: AnswerHttpOptions;
}

/**
 * The accept loop's bookkeeping: the totals, the open exchanges (to keep
 * to --max-connections, and to close them at shutdown), one log line per
 * exchange, and the shutdown with its grace period.
 */
class HttpServer {
  readonly summary: HttpSummary = {
    connections: 0,
    refused: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  readonly backoff: AcceptBackoff;
  #open = new Map<number, AbortController>();
  #handlers = new Set<Promise<void>>();
  #print: (line: string) => void; // log and trace lines
  #note: (line: string) => void; // the lines --quiet leaves out

  constructor(readonly listener: Listener, readonly options: ServeHttpOptions) {
    this.#print = options.log ?? log;
    this.#note = options.quiet ? () => {} : this.#print;
    this.backoff = new AcceptBackoff(options.warn ?? warn, options.signal);
    // Closing the listening socket is how a pending accept() is interrupted.
    options.signal.addEventListener("abort", this.#closeListener, {
      once: true,
    });
  }

  /** Whether the stop signal came: accept no more. */
  get stopping(): boolean {
    return this.options.signal.aborted;
  }

  /**
   * Take `conn` on, or close it at once when --max-connections are open:
   * the client sees the end (instead of waiting in the queue) and the
   * connections we have keep going.
   */
  admit(conn: Deno.Conn): Admitted | undefined {
    const local = formatAddr(conn.localAddr);
    const remote = formatAddr(conn.remoteAddr);
    const { maxConnections, headTimeout, idleTimeout, trace, hex } =
      this.options;
    if (this.#open.size >= maxConnections) {
      this.summary.refused++;
      conn.close();
      this.#note(
        `http refused local ${local} remote ${remote}: ${this.#open.size} open, --max-connections ${maxConnections}`,
      );
      return undefined;
    }
    const id = ++this.summary.connections;
    const stop = new AbortController();
    this.#open.set(id, stop);
    return {
      id,
      local,
      remote,
      options: {
        headTimeout,
        idleTimeout,
        signal: stop.signal,
        trace: trace
          ? tracer(this.#print, `${conn.localAddr.transport} #${id} `, hex)
          : undefined,
      },
    };
  }

  /** Count an exchange in, and log its outcome when it ends. */
  track(admitted: Admitted, answering: Promise<HttpExchange>): void {
    const { id, local, remote } = admitted;
    const handler = answering
      .then(({ outcome, bytesIn, bytesOut }) => {
        this.summary.bytesIn += bytesIn;
        this.summary.bytesOut += bytesOut;
        this.#note(
          `http local ${local} remote ${remote} (#${id}) ${outcome}, in ${bytesIn} bytes, out ${bytesOut} bytes`,
        );
      })
      .finally(() => {
        this.#open.delete(id);
        this.#handlers.delete(handler);
      });
    this.#handlers.add(handler);
  }

  /**
   * Stop accepting; the exchanges in flight get `grace` seconds to finish
   * (or until `force`), then are closed. Resolves with the totals.
   */
  async finish(): Promise<HttpSummary> {
    this.options.signal.removeEventListener("abort", this.#closeListener);
    this.#closeListener();
    if (this.#open.size > 0) {
      this.#note(
        `http stopping: ${this.#open.size} open, up to ${this.options.grace} s to finish`,
      );
      await finishWithin(this.#handlers, this.options.grace, (reason) => {
        for (const stop of this.#open.values()) stop.abort(reason);
      }, this.options.force);
    }
    return this.summary;
  }

  #closeListener = () => {
    try {
      this.listener.close();
    } catch { /* already closed */ }
  };
}

// --- for answerHttp: one exchange's options, outcome and timers -------------

/** Options for {@link answerHttp}. */
export interface AnswerHttpOptions {
  /** Seconds from the start to the end of the request head (0: never). */
  headTimeout: number;
  /** Seconds without a byte moving before the connection is closed. */
  idleTimeout: number;
  /** Abort to close the connection now; the reason goes in the log. */
  signal?: AbortSignal;
  /** Called for each read and write (`read 78 bytes`) when tracing. */
  trace?: Trace;
}

/** What one connection's exchange came to, for the log line. */
export interface HttpExchange {
  /** The status sent, or 0 when nothing was sent. */
  status: number;
  /** `200 "GET / HTTP/1.1"`, `400 (why)`, or `no reply: why`. */
  outcome: string;
  bytesIn: number;
  bytesOut: number;
}

/** Close a connection that may be closed already. */
function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* closed already */ }
}

/** A complete request head: its request line, checked, and all its bytes. */
export interface Head {
  line: RequestLine;
  bytes: Uint8Array;
}

/**
 * A head we refuse: the status, why (for the body and the log line), and
 * whether it is a HEAD request, which gets no body, even with an error,
 * even one in its request line: so its first five bytes decide.
 */
export class Rejection {
  constructor(
    readonly status: number,
    readonly why: string,
    readonly isHead = false,
  ) {}
}

/** A connection that sent no request: nothing to answer, just close. */
export class NoRequest {
  constructor(readonly why: string) {}
}

/** What {@link untilOrTimeout} returns when the time ran out. */
const TIMED_OUT = Symbol("timed out");

/**
 * Wait for `promise` at most `ms` milliseconds (Infinity: no limit): its
 * value, or TIMED_OUT. A read left pending then still counts its bytes when
 * it completes; its failure (the connection closed meanwhile) is ignored.
 */
async function untilOrTimeout<T>(
  promise: Promise<T>,
  ms: number,
): Promise<T | typeof TIMED_OUT> {
  if (ms === Infinity) return await promise;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), Math.max(0, ms));
  });
  try {
    const result = await Promise.race([promise, timeout]);
    if (result === TIMED_OUT) promise.catch(() => {});
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/** A timeout flag's seconds as milliseconds; 0 (never) is Infinity. */
function timeoutMs(seconds: number): number {
  return seconds > 0 ? seconds * 1000 : Infinity;
}

// --- for readHead: limits, timeouts, the request line -----------------------

/**
 * The head filled the buffer without ending: 431 (RFC 6585). Or its request
 * line did: then the target is longer than we parse, and RFC 9112 section 3
 * says that MUST be 414.
 */
function tooLarge(received: Uint8Array, line?: RequestLine): Rejection {
  const isHead = isHeadRequest(received);
  return line
    ? new Rejection(431, `request head over ${MAX_HEAD_BYTES} bytes`, isHead)
    : new Rejection(414, `request line over ${MAX_HEAD_BYTES} bytes`, isHead);
}

/** Whether a request starts `HEAD ` (its response then has no body). */
function isHeadRequest(received: Uint8Array): boolean {
  return received.length >= 5 && latin1(received.subarray(0, 5)) === "HEAD ";
}

/**
 * No byte came within the time left (`headLeft` ms of the head deadline)
 * or the idle timeout: which timer fired, and what to do. With nothing
 * received there is no request to answer (a browser opens spare
 * connections it may never use); part of a head gets 408.
 */
function timedOut(
  received: Uint8Array,
  headLeft: number,
  limits: { headTimeout: number; idleTimeout: number },
): Rejection | NoRequest {
  const idle = headLeft > timeoutMs(limits.idleTimeout);
  if (received.length === 0) {
    return new NoRequest(
      idle
        ? `no reply: idle for ${limits.idleTimeout} s`
        : `no request within ${limits.headTimeout} s`,
    );
  }
  return new Rejection(
    408,
    idle
      ? `the request head stalled: no byte for ${limits.idleTimeout} s`
      : `the request head did not arrive within ${limits.headTimeout} s`,
    isHeadRequest(received),
  );
}

const LF = 0x0a;
const CR = 0x0d;

// The grammar, from RFC 9112 (HTTP/1.1) and RFC 9110 (HTTP semantics).
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+"; // method and header names
const REQUEST_LINE = new RegExp(
  `^(${TOKEN}) ([\\x21-\\x7e]+) HTTP/(\\d)\\.(\\d)$`,
); // method SP request-target SP HTTP-version

/**
 * The request line in `received` (the head so far; the bytes from `from`
 * on are new): `undefined` while it has not ended, else the line or a
 * {@link Rejection}: 400 for anything that is not `METHOD TARGET HTTP/x.y`
 * (at once for a byte a request line cannot hold: it is printable ASCII),
 * 505 for a version other than 1.x.
 */
function checkRequestLine(
  received: Uint8Array,
  from: number,
): RequestLine | Rejection | undefined {
  const isHead = isHeadRequest(received);
  const end = received.indexOf(LF, from);
  if (end < 0) {
    const fresh = received.subarray(from);
    for (let i = 0; i < fresh.length; i++) {
      const b = fresh[i];
      if ((b < 0x20 || b > 0x7e) && !(b === CR && i === fresh.length - 1)) {
        return new Rejection(400, "malformed request line", isHead);
      }
    }
    return undefined;
  }
  const text = latin1(received.subarray(0, end)).replace(/\r$/, "");
  const m = REQUEST_LINE.exec(text);
  if (!m) return new Rejection(400, "malformed request line", isHead);
  if (m[3] !== "1") {
    return new Rejection(
      505,
      `HTTP/${m[3]}.${m[4]} is not spoken here, only HTTP/1.x`,
      isHead,
    );
  }
  return {
    method: m[1],
    target: m[2],
    version: `${m[3]}.${m[4]}`,
    requestLine: text,
  };
}

/** Bytes as text, one character per byte (for the ASCII grammar checks). */
function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return text;
}

/** Index just past the first empty line (LF [CR] LF) in buf[0..length). */
function findHeadEnd(buf: Uint8Array, from: number, length: number): number {
  for (let i = buf.indexOf(LF, from); i >= 0 && i < length;) {
    const next = buf[i + 1] === CR ? i + 2 : i + 1;
    if (next < length && buf[next] === LF) return next + 1;
    i = buf.indexOf(LF, i + 1);
  }
  return -1;
}

// --- for parseHead: the checks RFC 9112 and 9110 require --------------------

/** A checked request line: `GET / HTTP/1.1`. */
export interface RequestLine {
  method: string;
  target: string;
  /** `1.1` or `1.0`. */
  version: string;
  /** The line as sent, without its line end. */
  requestLine: string;
}

/** A parsed request head. */
export interface HttpRequest extends RequestLine {
  /** Header lines in order, name as sent, value without the spaces around. */
  headers: [string, string][];
  /** Size of the head, the empty line that ends it included. */
  headBytes: number;
}

const HEADER_LINE = new RegExp(`^(${TOKEN}):([^]*)$`); // name ":" value
const SPACE_BEFORE_COLON = new RegExp(`^${TOKEN}[ \t]+:`);
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/; // CTLs but HTAB: never in a value

/**
 * One header line, `Name: value`, as [name, value], or why it is refused
 * (400). RFC 9112 section 5 says to refuse a space before the colon, and
 * (or else unfold) obsolete line folding: a line that starts with a space
 * or a tab continues the one above.
 */
function parseFieldLine(line: string): [string, string] | string {
  const m = HEADER_LINE.exec(line);
  if (!m) {
    if (/^[ \t]/.test(line)) {
      return "obsolete line folding (a header line starts with a space or tab) is not accepted";
    }
    if (SPACE_BEFORE_COLON.test(line)) {
      return "whitespace before the colon of a header is not accepted";
    }
    return "malformed header line";
  }
  const value = trimSpaces(m[2]); // spaces and tabs around are not value
  if (CONTROL.test(value)) return `control character in the ${m[1]} header`;
  return [m[1], value];
}

/** `text` without the spaces and tabs at either end (in linear time). */
function trimSpaces(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text[start] === " " || text[start] === "\t")) start++;
  while (end > start && (text[end - 1] === " " || text[end - 1] === "\t")) {
    end--;
  }
  return text.slice(start, end);
}

/**
 * Why RFC 9112 and 9110 say a server MUST refuse this request with 400, or
 * undefined. Host says which site the client wants: HTTP/1.1 requires one,
 * valid. Content-Length and Transfer-Encoding say where a body ends: when
 * they are unclear, two servers in a row may disagree about it (a smuggled
 * request), so anything unclear is refused.
 */
function mustRefuse(
  line: RequestLine,
  headers: [string, string][],
): string | undefined {
  const all = (name: string) =>
    headers.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);
  const host = all("host");
  if (host.length === 0 && line.version !== "1.0") {
    return "HTTP/1.1 request without a Host header";
  }
  if (host.length > 1) return "more than one Host header";
  if (host.length === 1 && !validHost(host[0])) return "invalid Host header";
  const lengths = all("content-length").flatMap((v) => v.split(","))
    .map((v) => v.trim());
  if (lengths.some((v) => !/^\d+$/.test(v))) return "invalid Content-Length";
  // Compared as digits: 2^53 and 2^53 + 1 are one Number, yet two lengths.
  if (new Set(lengths.map((v) => v.replace(/^0+(?=\d)/, ""))).size > 1) {
    return "conflicting Content-Length headers";
  }
  const codings = all("transfer-encoding").join(",");
  if (codings && lengths.length > 0) {
    return "both Transfer-Encoding and Content-Length";
  }
  if (codings && !/(^|,)[ \t]*chunked[ \t]*$/i.test(codings)) {
    return "Transfer-Encoding does not end in chunked";
  }
  return undefined;
}

// Host (RFC 3986): an IP literal in brackets, or a reg-name (letters, digits,
// some marks, %XX), then an optional :port.
const HOST =
  /^(?:\[([0-9A-Fa-f:.]+)\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::\d*)?$/;

/** A valid Host value; what is in brackets must be a real IPv6 address. */
function validHost(value: string): boolean {
  const m = HOST.exec(value);
  // `[::1:::]` has the right characters but is no address: the URL parser
  // knows the IPv6 grammar (eight groups, one `::` at most), so ask it.
  return m !== null &&
    (m[1] === undefined || URL.canParse(`http://[${m[1]}]/`));
}

// --- for respond: what the page needs ---------------------------------------

/** A response ready to write, and how the log line names it. */
interface Reply {
  status: number;
  outcome: string;
  bytes: Uint8Array;
}

/** What the page shows. */
interface PageInfo {
  client: string;
  server: string;
  /** How the connection came: over TCP, or a Unix socket (a path). */
  transport: "TCP" | "Unix socket";
  request: HttpRequest;
}

/**
 * Whether the client asked for plain text: its Accept names text/plain and
 * not text/html. A type with q=0 is one the client does NOT accept: it is
 * left out first.
 */
function prefersPlainText(headers: [string, string][]): boolean {
  const accept = headers.find(([k]) => k.toLowerCase() === "accept")?.[1] ??
    "";
  const wanted = accept.split(",")
    .filter((range) => !/;[ \t]*q=0(\.0{0,3})?[ \t]*(;|$)/i.test(range))
    .join(",");
  return /text\/plain/i.test(wanted) && !/text\/html/i.test(wanted);
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
