/**
 * client.ts: a TCP client in the spirit of `nc` (netcat).
 *
 * First listing: basics/tcp_client.ts (39 lines) is this lesson alone:
 * connect, write `1234` (write() reports 4), half-close, read to the end.
 * This file adds netcat mode, --http, --chunk and --delay, --trace and
 * --hex, --timeout, and errors that say what to try.
 *
 * What it shows, in the order the code below does it:
 * - connect: `Deno.connect` is the whole handshake (SYN, SYN-ACK, ACK); our
 *   end gets a free "ephemeral" port from the OS: one socket pair.
 * - send: a write may take only part of the bytes, so we loop.
 * - read to the end: a read returns whatever has arrived (TCP is a stream,
 *   not messages) and `null` once the server has sent its own FIN.
 * - half-close: `closeWrite` sends a FIN, "I am done sending, still
 *   listening"; the server sees the end of our data and can still answer.
 * - netcat mode: both directions at once, stdin to the socket and back.
 * - `--http`: a web client is the same, plus a request and knowing where
 *   the response ends.
 * Data goes to stdout, diagnostics to stderr, as with `nc`.
 *
 * Run it, with `deno run --allow-net=127.0.0.1 server.ts --port 8080` in a
 * first terminal, in a second one:
 *
 *   deno run --allow-net=127.0.0.1 client.ts --port 8080 hello
 *
 * What to try next:
 * - netcat mode: leave out `hello`, type lines, Ctrl-D ends your side.
 * - see the writes: `--chunk 1 --delay 100 --trace hello` sends five 1-byte
 *   writes; start the server with `--trace` to see how it reads them.
 * - binary: `head -c 1000000 /dev/urandom | deno run
 *   --allow-net=127.0.0.1 client.ts --port 8080 | wc -c` prints 1000000.
 * - a web page: `--http --trace --hex` against `http.ts --port 8000`.
 * - failures: a port where nothing listens (refused), `--timeout 500`
 *   against a server that never answers; `deno task lab` shows the rest.
 * - TCP's timing: `--rounds 20 --chunk 6 $'hello world\n'` sends a line 20
 *   times in two writes each and times every answer; against `server.ts
 *   --lines` (it answers whole lines only), Nagle's algorithm and a delayed
 *   ACK make each take ~40 ms, and `--nodelay` takes that away.
 *   `--keepalive` has the kernel probe an idle connection.
 * - `--unix /tmp/echo.sock`: the same client on a Unix socket (a path;
 *   grants: --allow-read, --allow-write and --allow-net=unix: on it).
 *
 * This file stands alone (one built-in import): copy it anywhere and run it.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ─── 1. Connect ─────────────────────────────────────────────────────────────

// A TCP connection starts with a handshake of three packets, all done by
// the two kernels: SYN, SYN-ACK, ACK.

/** How long a connect may take when `--timeout` is not given. */
export const CONNECT_TIMEOUT_MS = 5000; // Linux resends an unanswered SYN
// for about 2 minutes before it gives up; a person wants to know sooner.

/**
 * Connect to a TCP server, giving up after `timeoutMs`. Throws an Error
 * whose message says plainly what went wrong: refused, no route, no answer
 * in time, a name that does not resolve, no permission.
 */
export async function connectTcp(
  hostname: string,
  port: number,
  timeoutMs = CONNECT_TIMEOUT_MS,
): Promise<Deno.TcpConn> {
  const started = performance.now();
  try {
    // Our OS sends SYN; the server's OS answers SYN-ACK (the server program
    // is not even asked: the kernel completes the handshake and queues the
    // connection until it calls accept); ours sends ACK. Done: connected.
    return await Deno.connect({
      hostname,
      port,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const elapsed = Math.round(performance.now() - started);
    throw new Error(
      explainConnectError(err, hostname, port, timeoutMs, elapsed),
      { cause: err },
    );
  }
}

/**
 * Or connect to a Unix socket at `path` (`--unix`): the same stream, named
 * by a file. No handshake on a wire: the kernel links the two sockets at
 * once, if the file's mode lets us write to it.
 */
export async function connectUnix(path: string): Promise<Deno.UnixConn> {
  try {
    return await Deno.connect({ transport: "unix", path });
  } catch (err) {
    throw new Error(explainUnixConnectError(err, path), { cause: err });
  }
}

// ─── 2. Send ────────────────────────────────────────────────────────────────

// A write hands bytes to the kernel; it sends them when it can.

/**
 * Send all of `data`. `write()` returns how many bytes the kernel took into
 * its send buffer, which may be fewer than asked: `writeAll` loops. With
 * `transfer.chunk` the bytes go in writes of at most that many bytes, with
 * `transfer.delayMs` between them, so you can watch TCP ignore the
 * boundaries. `first: false` pauses before the first piece too (a later
 * stdin block).
 */
export async function send(
  socket: Socket,
  data: Uint8Array,
  transfer: TransferOptions = {},
  first = true,
): Promise<void> {
  const step = transfer.chunk ?? Math.max(data.length, 1);
  for (let at = 0; at < data.length; at += step) {
    if ((at > 0 || !first) && transfer.delayMs) await sleep(transfer.delayMs);
    await writeAll(socket, data.subarray(at, at + step), (took) => {
      transfer.trace?.(`wrote ${took.length} bytes`, took); // one real write()
    });
  }
  transfer.onSent?.(data.length);
}

// ─── 3. Read to the end, 4. Half-close ──────────────────────────────────────

// TCP is a stream of bytes each way, not a series of messages; each side
// ends its own stream with a FIN.

/** Bytes asked for per read; a read returns at most this, often less. */
const READ_SIZE = 64 * 1024;

/**
 * Copy every byte `socket` receives to `out` until the server closes its
 * sending side (read returns `null`), or, with `end`, until that says the
 * message is complete. Returns the number of bytes copied.
 */
export async function copyToEnd(
  socket: Pick<Socket, "read">,
  out: Writer,
  transfer: TransferOptions = {},
  end?: MessageEnd,
): Promise<number> {
  const buf = new Uint8Array(READ_SIZE);
  let total = 0;
  while (!end?.done) {
    // A read returns what has arrived so far (at least one byte): one write
    // of the server's may come out as several reads here, and several as
    // one. TCP keeps the order of the bytes, not where writes began.
    const n = await socket.read(buf);
    // null, never 0, is the end: the server's FIN, it has finished sending.
    if (n === null) break;
    transfer.trace?.(`read ${n} bytes`, buf.subarray(0, n));
    const take = end ? end.feed(buf.subarray(0, n)) : n;
    await writeAll(out, buf.subarray(0, take));
    total += take;
  }
  return total;
}

/**
 * One conversation: send `payload`, half-close, and copy the reply to `out`
 * until the server closes. Sending and reading run at the same time: with
 * a large payload and an echo server, writing everything before reading
 * would fill the buffers both ways, and both sides would wait forever.
 */
export async function converse(
  socket: Socket,
  payload: Uint8Array,
  out: Writer,
  transfer: TransferOptions = {},
): Promise<number> {
  const [, received] = await Promise.all([
    // Half-close once all is sent: our FIN says "done sending, still
    // listening". The server's read returns null (the end of our data),
    // and it can still answer: its own stream is open until ITS FIN.
    send(socket, payload, transfer).then(() => socket.closeWrite()),
    copyToEnd(socket, out, transfer),
  ]);
  return received;
}

/** What one request/response exchange over TCP produced. */
export interface Exchange {
  /** Every byte the server sent before closing. */
  reply: Uint8Array;
  /** Our end of the socket pair (the OS picked its port). */
  local: Deno.NetAddr;
  /** The server's end. */
  remote: Deno.NetAddr;
}

/**
 * Connect, send `payload`, half-close, and collect the reply until the
 * server closes: the whole life of a simple TCP conversation, in-process.
 * `options` is `--timeout` in ms (bounds the connect and every wait, as on
 * the command line) or an {@link ExchangeOptions}; without a timeout the
 * connect gives up after {@link CONNECT_TIMEOUT_MS} and the waits last as
 * long as the server keeps the connection open.
 */
export async function exchange(
  hostname: string,
  port: number,
  payload: Uint8Array,
  options: number | ExchangeOptions = {},
): Promise<Exchange> {
  const transfer = typeof options === "number"
    ? { timeoutMs: options }
    : options;
  using conn = await connectTcp(hostname, port, transfer.timeoutMs);
  const collector = new Collector();
  const socket = timedSocket(conn, transfer.timeoutMs);
  await converse(socket, payload, collector, transfer);
  return {
    reply: collector.bytes(),
    local: conn.localAddr,
    remote: conn.remoteAddr,
  };
}

// ─── 5. Netcat mode ─────────────────────────────────────────────────────────

// Two copies at once, one per direction.

/**
 * stdin to the socket and the socket to stdout, at the same time: TCP is
 * two independent streams, one each way. At the end of `input` we
 * half-close and keep reading until the server closes. If the server
 * finishes first (its FIN), we keep sending until `input` ends, like
 * `nc -N`; if it has gone completely, the next write fails, and so do we,
 * quietly: it chose to go. If `input` cannot be read, we stop at once.
 */
export async function netcat(
  socket: Socket,
  input: Pick<Socket, "read">,
  out: Writer,
  transfer: TransferOptions = {},
): Promise<void> {
  const upload = (async () => {
    const buf = new Uint8Array(READ_SIZE);
    for (let first = true;; first = false) {
      const n = await input.read(buf).catch(stdinFailed);
      if (n === null) break;
      await send(socket, buf.subarray(0, n), transfer, first);
    }
    await socket.closeWrite(); // end of input: our FIN
  })().catch((err: unknown) => {
    if (!isPeerGone(err)) throw err; // a server that left: its choice
  });
  // Read until the server's FIN, unless the upload fails first: then our
  // FIN never comes, and an echo server, which waits for it before it
  // sends its own, would keep us waiting for ever.
  await Promise.race([copyToEnd(socket, out, transfer), upload.then(never)]);
  await upload; // a server that finished first still gets all of stdin
}

// ─── 6. A web client (--http) ───────────────────────────────────────────────

// A web client is a TCP client that sends a request and knows where the
// response ends.

/**
 * The request a browser sends for `path` to `host` (`HOST:PORT`, as the
 * `Host` header wants it), trimmed to what matters: the request line,
 * `Host` (which site on this address), who is asking, what
 * it accepts, and `Connection: close` (one request, then the server closes).
 */
export function httpGetRequest(host: string, path = "/"): string {
  return [
    `GET ${path} HTTP/1.1`,
    `Host: ${host}`,
    `User-Agent: deno-socket-playground-client/1.0`,
    `Accept: text/html,text/plain;q=0.9,*/*;q=0.8`,
    `Connection: close`,
    "",
    "",
  ].join("\r\n");
}

/**
 * Send `request` and copy the response to `out`, stopping at its end. No
 * half-close: a browser keeps its side open until the response is in. And
 * we do not wait for the server to close: a server may keep the connection
 * open for the next request, so the response itself says where it ends:
 * `Content-Length`, or the last chunk (`0\r\n\r\n`) of a chunked body, or,
 * with neither, the server's FIN. A response cut short, one that breaks
 * its framing, or a head without end, is an Error once what arrived is
 * printed. Returns the response's size.
 */
export async function httpGet(
  socket: Socket,
  request: Uint8Array,
  out: Writer,
  transfer: TransferOptions = {},
): Promise<number> {
  await send(socket, request, transfer);
  const end = new ResponseEnd();
  const size = await copyToEnd(socket, out, transfer, end);
  const server = socket.where ?? "the server";
  // A broken or endless framing has no end to find: say so, once printed.
  if (end.problem) throw new Error(`${server} sent ${end.problem}`);
  const missing = end.unfinished();
  if (missing) throw new Error(`${server} closed the connection ${missing}`);
  return size;
}

// ─── 7. Round trips, timed (--rounds) ───────────────────────────────────────

// A request written in two small writes, to a server that answers only
// once it has the whole request (a line, an HTTP head): Nagle's algorithm
// holds our second write until the first is acknowledged, and the server's
// kernel delays that ACK (40 ms on Linux), hoping to send it with the
// answer, which waits for the second write. Each side waits for the other.

/**
 * `--rounds K`: send `message` K times on one connection, each time waiting
 * until as many bytes have come back (an echo's or a line server's answer)
 * before sending it again, copying them to `out`; then half-close and read
 * to the end. Returns how long each exchange took, in ms.
 */
export async function rounds(
  socket: Socket,
  message: Uint8Array,
  count: number,
  out: Writer,
  transfer: TransferOptions = {},
): Promise<number[]> {
  const times: number[] = [];
  const buf = new Uint8Array(READ_SIZE);
  for (let round = 0; round < count; round++) {
    const started = performance.now();
    await send(socket, message, transfer);
    for (let got = 0; got < message.length;) {
      const want = Math.min(buf.length, message.length - got);
      const n = await socket.read(buf.subarray(0, want));
      if (n === null) {
        throw new Error(
          `${socket.where} closed the connection in round ${
            round + 1
          } of ${count}, after ${got} of the ${message.length} bytes awaited`,
        );
      }
      transfer.trace?.(`read ${n} bytes`, buf.subarray(0, n));
      await writeAll(out, buf.subarray(0, n));
      got += n;
    }
    times.push(performance.now() - started);
  }
  await socket.closeWrite(); // done: our FIN; the rest until the server's
  await copyToEnd(socket, out, transfer);
  return times;
}

/** `20 rounds of 12 bytes: median 0.081 ms (fastest ..., slowest ...)`. */
export function roundsLine(times: number[], bytes: number): string {
  const sorted = [...times].sort((a, b) => a - b);
  const ms = (t: number) => t.toFixed(t < 10 ? 3 : 1);
  const median = sorted.length % 2
    ? sorted[sorted.length >> 1]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return `${times.length} rounds of ${bytes} bytes on one connection: median ${
    ms(median)
  } ms per round trip (fastest ${ms(sorted[0])}, slowest ${
    ms(sorted[sorted.length - 1])
  })`;
}

// Run as a program: `main` once the whole file has loaded (the plumbing
// below must be defined first), errors as one `error:` line.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/**
 * The command-line program: returns the exit status (0 once the server has
 * closed, or the `--http` response is complete); throws {@link UsageError}
 * (exit 2) or an Error with a plain reason (exit 1).
 */
export async function main(args: string[]): Promise<number> {
  const options = parseClientArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  const transfer: TransferOptions = {
    chunk: options.chunk,
    delayMs: options.delay,
    trace: options.trace ? tracer(warn, "", options.hex) : undefined,
  };
  using conn = options.unix
    ? await connectUnix(options.unix)
    : await connectTcp(options.hostname, options.port, options.timeout);
  // TCP's options (a Unix socket has none): Nagle off; keepalive probes.
  if ("setNoDelay" in conn && options.nodelay) conn.setNoDelay(true);
  if ("setKeepAlive" in conn && options.keepalive) conn.setKeepAlive(true);
  const socket = timedSocket(conn, options.timeout);
  if (options.rounds !== undefined) {
    const message = new TextEncoder().encode(options.message);
    const times = await rounds(
      socket,
      message,
      options.rounds,
      stdout,
      transfer,
    );
    warn(roundsLine(times, message.length));
    return 0;
  }
  if (!options.http && options.message === undefined) {
    await netcat(socket, Deno.stdin, stdout, transfer);
    return 0;
  }
  // One request or MESSAGE: say how big it was once it is sent.
  transfer.onSent = (n) => warn(`sent ${n} bytes`);
  if (options.http) {
    // A Unix socket has no host name: say localhost, as curl does.
    const host = options.unix
      ? "localhost"
      : formatAddr({ hostname: options.hostname, port: options.port });
    const request = httpGetRequest(host, options.path);
    await httpGet(socket, new TextEncoder().encode(request), stdout, transfer);
  } else {
    const message = new TextEncoder().encode(options.message);
    await converse(socket, message, stdout, transfer);
  }
  return 0;
}

/** Everything the client can be told on the command line. */
export interface ClientOptions {
  /** Server address: IPv4, IPv6 (`::1`) or a name (`localhost`). */
  hostname: string;
  port: number;
  /** ms for the connect and each wait; unset: connect default, no limit after. */
  timeout?: number;
  /** Send an HTTP GET request instead of MESSAGE or stdin. */
  http: boolean;
  /** The path to request with `--http`. */
  path: string;
  /** A line on stderr per read and write (set by `--hex` too). */
  trace: boolean;
  /** The bytes of each, in the xxd layout. */
  hex: boolean;
  /** At most this many bytes per write. */
  chunk?: number;
  /** ms between those writes. */
  delay: number;
  /** The words to send, joined by single spaces; `undefined` reads stdin. */
  message?: string;
  /** A Unix socket's path to connect to instead of hostname and port. */
  unix?: string;
  /** TCP_NODELAY: Nagle's algorithm off. */
  nodelay: boolean;
  /** SO_KEEPALIVE: the kernel probes the connection when idle. */
  keepalive: boolean;
  /** Send MESSAGE this many times, one after the other's answer, timed. */
  rounds?: number;
}

/** The defaults, as `--help` shows them. */
export const DEFAULTS = {
  hostname: "127.0.0.1",
  port: 8080,
  http: false,
  path: "/",
  trace: false,
  hex: false,
  delay: 0,
  nodelay: false,
  keepalive: false,
} as const satisfies ClientOptions;

// The largest values the flags take. A JavaScript timer holds at most
// 2^31-1 ms (~24.8 days) and fires at once beyond it, so every timer-backed
// flag stays well below that.
const MAX_TIMEOUT_MS = 3_600_000; // an hour
const MAX_CHUNK = 16 * 1024 * 1024;
const MAX_DELAY_MS = 60_000;
const MAX_ROUNDS = 100_000;

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE =
  `usage: deno run --allow-net=127.0.0.1 client.ts [options] [MESSAGE...]
       deno run --allow-read=PATH --allow-write=PATH --allow-net=unix:PATH client.ts --unix PATH [options] [MESSAGE...]

A TCP client like nc. With MESSAGE, sends the words joined by single spaces
(UTF-8, no newline added), reports "sent N bytes", half-closes, and prints
everything the server sends back until it closes. Without MESSAGE, copies
stdin to the server and the server to stdout, byte for byte, like nc -N: at
the end of stdin it half-closes, and it exits once both directions are done.
After "--" every word is MESSAGE, even one that starts with "-".

options:
  --hostname H   server address or name (default ${DEFAULTS.hostname})
  --port N       server port, 1..65535 (default ${DEFAULTS.port})
  --timeout MS   give up when connecting, or any wait for data, takes MS ms
                 (like nc -w; 1..${MAX_TIMEOUT_MS}); default: connecting gives up
                 after ${CONNECT_TIMEOUT_MS} ms, then wait as long as the server keeps
                 the connection open
  --http         send "GET PATH HTTP/1.1" as a browser would, print the raw
                 response (status line and headers included), stop at its end
  --path P       the path for --http (default ${DEFAULTS.path})
  --trace        one line on stderr per write() and read(): "wrote 5 bytes"
  --hex          also each one's bytes in the xxd layout (implies --trace)
  --chunk N      send in writes of at most N bytes (1..${MAX_CHUNK})
  --delay MS     with --chunk, pause MS ms between writes (0..${MAX_DELAY_MS})
  --rounds K     send MESSAGE K times on one connection, each once the
                 previous one's answer (as many bytes) is back, and print
                 the median round trip on stderr (1..${MAX_ROUNDS})
  --nodelay      set TCP_NODELAY: Nagle's algorithm off, so a small write is
                 sent at once instead of waiting for the ACK of the last one
  --keepalive    set SO_KEEPALIVE: the kernel probes the connection once it
                 is idle for net.ipv4.tcp_keepalive_time (7200 s on Linux;
                 Deno cannot set it), and fails it if the server is gone
  --unix PATH    connect to the Unix socket at PATH instead (no --hostname,
                 --port or TCP flag; --allow-net=unix: takes an absolute PATH)
  --help         show this help

Received bytes go to stdout; "sent N bytes", traces and errors to stderr.`;

const FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  timeout: { type: "string" },
  http: { type: "boolean" },
  path: { type: "string" },
  trace: { type: "boolean" },
  hex: { type: "boolean" },
  chunk: { type: "string" },
  delay: { type: "string" },
  rounds: { type: "string" },
  nodelay: { type: "boolean" },
  keepalive: { type: "boolean" },
  unix: { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsOptionsConfig;

// What a Unix socket has no use for: it has no address or port, and Deno
// sets no Nagle or keepalive on it.
const TCP_ONLY = ["hostname", "port", "nodelay", "keepalive"];

/**
 * Parse the command line, defaults applied. Throws {@link UsageError} for
 * an unknown flag or a bad value; returns `"help"` for `--help`. Words that
 * are not flags form the MESSAGE; after `--` everything is MESSAGE.
 */
export function parseClientArgs(args: string[]): ClientOptions | "help" {
  const { values, positionals } = parseFlags(args, FLAGS, true);
  if (values.help) return "help";
  const options: ClientOptions = { ...DEFAULTS };
  if (values.unix !== undefined) {
    const tcp = TCP_ONLY.find((flag) => flag in values);
    if (tcp) {
      throw new UsageError(
        `--${tcp} is a TCP flag: it does not go with --unix`,
      );
    }
    options.unix = values.unix;
  }
  if (values.nodelay) options.nodelay = true;
  if (values.keepalive) options.keepalive = true;
  if (values.hostname !== undefined) {
    options.hostname = parseHostname(values.hostname);
  }
  if (values.port !== undefined) {
    options.port = parseInteger("--port", values.port, 0, 65535);
  }
  if (options.port === 0) {
    throw new UsageError(
      "--port 0 lets a server pick a free port; a client must name the server's port (1..65535)",
    );
  }
  if (values.timeout !== undefined) {
    options.timeout = parseInteger(
      "--timeout",
      values.timeout,
      1,
      MAX_TIMEOUT_MS,
    );
  }
  if (values.http) options.http = true;
  if (values.path !== undefined) {
    if (!options.http) throw new UsageError("--path goes with --http");
    // The request line is METHOD SP PATH SP VERSION: a space would end the
    // path, a control character breaks the line, and the rest must be
    // percent-encoded UTF-8 (RFC 3986); we send the path as given.
    if (!/^\/[\x21-\x7e]*$/.test(values.path)) {
      throw new UsageError(
        `--path must start with / and hold only printable ASCII, no spaces or control characters; percent-encode the rest (try --path ${
          percentEncodePath(values.path)
        }), not ${JSON.stringify(values.path)}`,
      );
    }
    options.path = values.path;
  }
  if (values.hex) options.hex = true;
  // --hex shows the bytes under each trace line: it implies --trace.
  if (values.trace || options.hex) options.trace = true;
  if (values.chunk !== undefined) {
    options.chunk = parseInteger("--chunk", values.chunk, 1, MAX_CHUNK);
  }
  if (values.delay !== undefined) {
    if (options.chunk === undefined) {
      throw new UsageError(
        "--delay goes with --chunk (it pauses between the chunks)",
      );
    }
    options.delay = parseInteger("--delay", values.delay, 0, MAX_DELAY_MS);
  }
  if (positionals.length > 0) {
    if (options.http) {
      throw new UsageError("--http sends its own request: give no MESSAGE");
    }
    options.message = positionals.join(" ");
  }
  if (values.rounds !== undefined) {
    options.rounds = parseInteger("--rounds", values.rounds, 1, MAX_ROUNDS);
    if (!options.message) {
      throw new UsageError(
        "--rounds sends MESSAGE again and again: give a MESSAGE (not --http, not stdin)",
      );
    }
  }
  return options;
}

/**
 * `path` as a request line can carry it: a leading `/` if it lacks one,
 * and every byte outside printable ASCII (space and controls included) as
 * `%XX` of its UTF-8: `/ü` is `/%C3%BC`. For the `--path` error message.
 */
function percentEncodePath(path: string): string {
  let out = path.startsWith("/") ? "" : "/";
  for (const byte of new TextEncoder().encode(path)) {
    out += byte >= 0x21 && byte <= 0x7e
      ? String.fromCharCode(byte)
      : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * How the bytes of a transfer go: cut into writes (`--chunk`, `--delay`),
 * watched (`--trace`, for reads too), and counted once sent.
 */
export interface TransferOptions {
  /** `--chunk`: at most this many bytes per write. */
  chunk?: number;
  /** `--delay`: ms to pause between those writes. */
  delayMs?: number;
  /** `--trace` (and `--hex`): told of each write() and read(). */
  trace?: Trace;
  /** Told how many bytes a {@link send} sent, once it has. */
  onSent?: (bytes: number) => void;
}

/**
 * Why a connect failed, truthfully: each cause looks different on the
 * wire, and so in the error Deno gets from the OS.
 */
function explainConnectError(
  err: unknown,
  hostname: string,
  port: number,
  timeoutMs: number,
  elapsedMs: number,
): string {
  const where = `tcp ${formatAddr({ hostname, port })}`;
  const code = (err as { code?: unknown }).code;
  const message = errorText(err);
  // A host answered our SYN with a reset (RST) at once: it is there, but no
  // socket accepts on that address and port. A server bound to another of
  // its addresses (only 127.0.0.1, say) does not accept on this one, so we
  // cannot tell which: say both.
  if (err instanceof Deno.errors.ConnectionRefused) {
    return `connection refused by ${where} (after ${elapsedMs} ms): the host (or a firewall on the way) answered with a refusal: no server listens on port ${port}, or the server is bound to another address that excludes this one (a server accepts only on the address it is bound to); start the server, or check --hostname and --port`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `Deno has no permission to connect to ${where}; run again with --allow-net=${
      allowNetHost(hostname)
    }`;
  }
  // Our SYN got no answer at all: dropped by a firewall, by a server whose
  // listen queue is full, or sent where no host is. We stop waiting.
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return `no answer from ${where} within ${timeoutMs} ms: the connection request (SYN) got no reply: a firewall may drop it, the server's listen queue may be full, or no host has that address; check --hostname, or wait longer with --timeout MS`;
  }
  if (err instanceof Deno.errors.TimedOut) {
    return `no answer from ${where}: the OS gave up after ${elapsedMs} ms of unanswered connection requests (SYN); a firewall may drop them, or no host has that address`;
  }
  // Told that there is no way there: no host answered on the local network
  // (ARP got no reply) or a router said so (ICMP host unreachable).
  if (code === "EHOSTUNREACH" || /os error 113\b/.test(message)) {
    return `no route to ${where} (after ${elapsedMs} ms): no host answers at that address (the local network found no one there, or a router said it cannot reach it); check --hostname`;
  }
  if (
    err instanceof Deno.errors.NetworkUnreachable ||
    code === "ENETUNREACH"
  ) {
    return `no route to ${where} (after ${elapsedMs} ms): this machine has no route to that network; check --hostname`;
  }
  if (err instanceof Deno.errors.ConnectionReset) {
    return `${where} reset the connection while it was being set up`;
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return `the OS refused to connect to ${where}: a firewall rule or route forbids it (${message})`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot connect to ${where}: no local address or port is free for it (${message})`;
  }
  if (/lookup address|Name or service not known|No address/i.test(message)) {
    return `cannot connect to ${where}: the name ${
      JSON.stringify(hostname)
    } does not resolve to an address; check the spelling`;
  }
  return `cannot connect to ${where}: ${message}`;
}

/**
 * Why a connect to a Unix socket at `path` failed: nobody listens (a stale
 * socket file, or not a socket at all), no such file, the file's mode; the
 * rest (Deno's grants, a path too long) as the server says it.
 */
function explainUnixConnectError(err: unknown, path: string): string {
  const where = `unix ${path}`;
  if (err instanceof Deno.errors.ConnectionRefused) {
    let what = "a stale socket file: the server that made it is gone";
    try {
      if (!Deno.lstatSync(path).isSocket) what = "it is not a socket";
    } catch { /* gone meanwhile */ }
    return `connection refused by ${where}: nobody listens on it (${what}); start the server, or check --unix`;
  }
  if (err instanceof Deno.errors.NotFound) {
    return `cannot connect to ${where}: no such file: no server listens there; start it, or check --unix`;
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return `permission denied connecting to ${where}: this user may not write to the socket file (its mode, or a folder on the way); ask its owner, or run as a user it lets in`;
  }
  return `cannot connect to ${where}: ${unixReason(err, path)}`;
}

/** Anything with the socket calls the lesson uses; a `Deno.TcpConn` is one. */
export interface Socket extends Writer {
  read(p: Uint8Array): Promise<number | null>;
  closeWrite(): Promise<void>;
  /** `tcp HOST:PORT` (or `unix PATH`) of the peer, for messages. */
  where?: string;
}

/**
 * `conn` with `--timeout` on every wait, like `nc -w`: a read or write that
 * sees nothing move either way for `timeoutMs` fails with an error naming
 * the address and the wait (the caller then closes the connection, which
 * ends the pending call). Socket errors become plain reasons. Without a
 * timeout, a wait lasts as long as the server keeps the connection open.
 */
export function timedSocket(conn: Deno.Conn, timeoutMs?: number): Socket {
  const where = `${conn.remoteAddr.transport} ${formatAddr(conn.remoteAddr)}`;
  let lastMoved = performance.now(); // any wait starting or ending
  let received = 0;
  async function wait<T>(op: Promise<T>, kind: "read" | "write"): Promise<T> {
    lastMoved = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      if (timeoutMs === undefined) return;
      const check = () => {
        const idle = performance.now() - lastMoved;
        if (idle < timeoutMs) {
          timer = setTimeout(check, timeoutMs - idle);
          return;
        }
        reject(
          new WaitTimeout(
            kind === "read"
              ? `no data from ${where} for ${timeoutMs} ms (--timeout): ${
                received === 0
                  ? "the server accepted the connection but has sent nothing"
                  : `the server sent ${received} bytes, then nothing more`
              }`
              : `${where} has taken none of our bytes for ${timeoutMs} ms (--timeout): the server is not reading`,
          ),
        );
      };
      timer = setTimeout(check, timeoutMs);
    });
    try {
      return await Promise.race([op, expired]);
    } catch (err) {
      if (err instanceof WaitTimeout) throw err;
      throw new SocketError(explainTransferError(err, where), { cause: err });
    } finally {
      clearTimeout(timer);
      lastMoved = performance.now();
    }
  }
  return {
    where,
    async read(p) {
      const n = await wait(conn.read(p), "read");
      received += n ?? 0;
      return n;
    },
    write: (p) => wait(conn.write(p), "write"),
    async closeWrite() {
      try {
        await conn.closeWrite();
      } catch (err) {
        throw new SocketError(explainTransferError(err, where), {
          cause: err,
        });
      }
    },
  };
}

/** `--timeout` ran out while waiting for the peer. */
class WaitTimeout extends Error {}

/** A socket error, already explained; `cause` is what Deno threw. */
class SocketError extends Error {}

/** A failure after connecting, in words: `where` is `tcp HOST:PORT`. */
function explainTransferError(err: unknown, where: string): string {
  if (err instanceof Deno.errors.ConnectionReset) {
    // An RST instead of a FIN: the server closed its socket with bytes of
    // ours still unread in it (or was aborted); what it sent before may
    // have arrived, its end of the stream never will.
    return `${where} reset the connection (RST: the server closed it with our bytes unread, or aborted it)`;
  }
  if (
    err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.NotConnected
  ) {
    return `${where} closed the connection before taking all our bytes`;
  }
  return `connection to ${where} failed: ${errorText(err)}`;
}

/** Our stdout as a {@link Writer}: a failure blames stdout, not the server. */
const stdout: Writer = {
  async write(p: Uint8Array): Promise<number> {
    await writeStdout(p);
    return p.length;
  },
};

/** A failed read of stdin (netcat mode), as an Error that names it. */
function stdinFailed(err: unknown): never {
  const hint = err instanceof Deno.errors.IsADirectory
    ? ": stdin is a folder; redirect a file (< FILE) or pipe data in"
    : "";
  throw new Error(`cannot read stdin: ${errorText(err)}${hint}`, {
    cause: err,
  });
}

/** Whether `err` says the server closed or reset (a write after it left). */
function isPeerGone(err: unknown): boolean {
  const cause = err instanceof SocketError ? err.cause : err;
  return cause instanceof Deno.errors.BrokenPipe ||
    cause instanceof Deno.errors.ConnectionReset ||
    cause instanceof Deno.errors.NotConnected;
}

/** A promise that never settles: a finished upload leaves the race. */
function never(): Promise<never> {
  return new Promise<never>(() => {});
}

/** Says, byte by byte as they arrive, when a message is complete. */
export interface MessageEnd {
  /** How many of `bytes` belong to the message (all, until its end). */
  feed(bytes: Uint8Array): number;
  /** Whether the message is complete (or cannot be read further). */
  readonly done: boolean;
}

// A server that sends header lines without end must not fill our memory,
// so the client reads at most this much of a response head (the status line
// and header lines, with any 1xx interim heads before it), and as much of
// the trailer lines after a chunked body. Real heads are a few hundred bytes
// to a few KiB; Node stops at 16 KiB, curl at 300 KB.
export const MAX_RESPONSE_HEAD = 64 * 1024;

// The longest chunk-size line, chunk extensions included (`1a;name=value`):
// a few bytes in practice. Go's net/http stops at 4 KiB too.
export const MAX_CHUNK_LINE = 4 * 1024;

/** Head lines are ASCII; any other byte only has to survive decoding. */
const LATIN1 = new TextDecoder("latin1");

/**
 * Where an HTTP/1.1 response ends (RFC 9112 §6.3): after the head for 1xx
 * (then the real response follows), 204 and 304; after `Content-Length`
 * bytes; after the last chunk and trailers of a chunked body; otherwise
 * when the server closes. A head it cannot frame is read to the close. A
 * chunked body that breaks its own framing, or a head or trailers beyond
 * {@link MAX_RESPONSE_HEAD}, is a {@link problem}: stop.
 */
export class ResponseEnd implements MessageEnd {
  #state:
    | "head"
    | "length"
    | "size"
    | "data"
    | "data-end"
    | "trailers"
    | "close"
    | "problem"
    | "done" = "head";
  /** The line being read (head, chunk size, trailer), up to its LF. */
  #line = new Uint8Array(MAX_RESPONSE_HEAD);
  #lineLength = 0;
  #head: string[] = [];
  /** Bytes of head so far (1xx heads included), or of trailers. */
  #sectionBytes = 0;
  #left = 0;
  #length = 0;
  #seen = 0;
  #problem: string | undefined;

  /** Complete, or cannot be read further: either way, read no further. */
  get done(): boolean {
    return this.#state === "done" || this.#state === "problem";
  }

  /** What the server sent instead of a response we can frame, if it did. */
  get problem(): string | undefined {
    return this.#problem;
  }

  feed(bytes: Uint8Array): number {
    let i = 0;
    while (i < bytes.length && this.#state !== "done") {
      if (this.#state === "close" || this.#state === "problem") {
        i = bytes.length; // the rest of this read, as it arrived
      } else if (this.#state === "length" || this.#state === "data") {
        const take = Math.min(this.#left, bytes.length - i);
        i += take;
        this.#left -= take;
        if (this.#left === 0) {
          this.#state = this.#state === "length" ? "done" : "data-end";
        }
      } else i = this.#readLine(bytes, i);
    }
    this.#seen += i;
    return i;
  }

  /** At the server's FIN: what is missing, or `undefined` if nothing is. */
  unfinished(): string | undefined {
    switch (this.#state) {
      case "head":
        return this.#seen === 0
          ? "without sending a response"
          : "in the middle of the response head";
      case "length":
        return `${this.#left} bytes before the end of the body (Content-Length: ${this.#length})`;
      case "size":
      case "data":
      case "data-end":
      case "trailers":
        return "before the last chunk of the chunked body";
    }
    return undefined;
  }

  /**
   * Take the bytes of a line from `bytes[i]` on, up to its LF if this read
   * holds it, within the bound of the line's kind. Returns where the next
   * byte to look at is.
   */
  #readLine(bytes: Uint8Array, i: number): number {
    const lf = bytes.indexOf(0x0a, i);
    const stop = lf < 0 ? bytes.length : lf;
    const grown = this.#lineLength + (stop - i);
    const section = this.#sectionBytes + (stop - i) + (lf < 0 ? 0 : 1);
    if (this.#state === "head" && section > MAX_RESPONSE_HEAD) {
      this.#fail(
        `a response head over ${MAX_RESPONSE_HEAD} bytes, the most this client reads (status line and header lines, and no empty line to end them): a broken server, or not a web server`,
      );
    } else if (this.#state === "trailers" && section > MAX_RESPONSE_HEAD) {
      this.#failChunked(
        `its trailer lines go over ${MAX_RESPONSE_HEAD} bytes with no empty line to end them`,
      );
    } else if (this.#state === "size" && grown > MAX_CHUNK_LINE) {
      this.#failChunked(`a chunk size line is over ${MAX_CHUNK_LINE} bytes`);
    } else if (this.#state === "data-end" && grown > 1) {
      this.#failChunked("the data of a chunk is not followed by CRLF");
    }
    if (this.#state === "problem") return i;
    this.#line.set(bytes.subarray(i, stop), this.#lineLength);
    this.#lineLength = grown;
    this.#sectionBytes = section;
    if (lf < 0) return stop;
    const line = LATIN1.decode(this.#line.subarray(0, this.#lineLength));
    this.#lineLength = 0;
    this.#onLine(line.replace(/\r$/, ""));
    return lf + 1;
  }

  #onLine(line: string): void {
    switch (this.#state) {
      case "head":
        if (line !== "") this.#head.push(line);
        else if (this.#head.length > 0) this.#endOfHead();
        return;
      case "size": {
        const m = /^([0-9A-Fa-f]{1,12})[ \t]*(;.*)?$/.exec(line);
        if (!m) {
          const shown = line.length > 40 ? `${line.slice(0, 40)}...` : line;
          this.#failChunked(
            `${JSON.stringify(shown)} is not a chunk size (hex digits)`,
          );
        } else if ((this.#left = parseInt(m[1], 16)) === 0) {
          this.#state = "trailers";
          this.#sectionBytes = 0;
        } else this.#state = "data";
        return;
      }
      case "data-end":
        if (line === "") this.#state = "size";
        else this.#failChunked("the data of a chunk is not followed by CRLF");
        return;
      case "trailers":
        if (line === "") this.#state = "done";
    }
  }

  #failChunked(why: string): void {
    this.#fail(
      `a malformed chunked body: ${why}; where the response ends cannot be told`,
    );
  }

  #fail(problem: string): void {
    this.#state = "problem";
    this.#problem = problem;
  }

  #endOfHead(): void {
    const [statusLine, ...fields] = this.#head;
    this.#head = [];
    const status = Number(/^HTTP\/1\.\d (\d{3})\b/.exec(statusLine)?.[1]);
    const values = (name: string) =>
      fields.filter((f) => f.slice(0, f.indexOf(":")).toLowerCase() === name)
        .map((f) => f.slice(f.indexOf(":") + 1).trim());
    const encodings = values("transfer-encoding").join(",");
    const lengths = [...new Set(values("content-length"))];
    // A 1xx is interim: the real head follows, within the same bound.
    if (status >= 100 && status < 200 && status !== 101) return;
    if (!status || status === 101) this.#state = "close";
    else if (status === 204 || status === 304) this.#state = "done";
    else if (encodings !== "") {
      this.#state = /(^|,)\s*chunked\s*$/i.test(encodings) ? "size" : "close";
    } else if (lengths.length === 1 && /^\d{1,15}$/.test(lengths[0])) {
      this.#length = this.#left = Number(lengths[0]);
      this.#state = this.#left === 0 ? "done" : "length";
    } else this.#state = "close";
  }
}

/** What {@link exchange} may be told: `--timeout`, and a transfer's shape. */
export interface ExchangeOptions extends TransferOptions {
  /** ms that the connect, or any wait for the peer, may last. */
  timeoutMs?: number;
}

/** Collects written bytes in memory (a `Writer`), for {@link exchange}. */
class Collector {
  chunks: Uint8Array[] = [];
  write(p: Uint8Array): Promise<number> {
    this.chunks.push(p.slice());
    return Promise.resolve(p.length);
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }
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

const logState = {
  lines: [] as string[],
  queued: 0,
  dropped: 0,
  warned: false,
  failed: false,
  writing: undefined as Promise<void> | undefined,
};

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
