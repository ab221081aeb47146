/**
 * client.ts: a TCP client in the spirit of `nc` (netcat).
 *
 * What it shows:
 * - `Deno.connect` is the client's whole handshake: the OS sends SYN, the
 *   server's OS answers SYN-ACK, ours ACKs, and we hold one end of a new
 *   socket pair. Our end gets a free "ephemeral" port picked by the OS.
 * - TCP is a byte stream both ways at once. We send, then half-close
 *   (`closeWrite`, a FIN): "I am done sending, but still listening". The
 *   server sees the end of our data and can still answer.
 * - Data goes to stdout, diagnostics to stderr, as `nc` does, so
 *   `client.ts ... > reply.bin` captures only the bytes.
 *
 * Run it against server.ts (see its header), loopback only:
 *
 *   deno run --allow-net=127.0.0.1 client.ts --port 8080 hello world
 *   head -c 1000000 /dev/urandom | deno run --allow-net=127.0.0.1 client.ts --port 8080 | wc -c
 *   deno run --allow-net=127.0.0.1 client.ts --port 8080 --http
 *
 * With no MESSAGE it is netcat: type lines, see them echoed; Ctrl-D ends
 * your side. Try it against any TCP service: `--http` speaks just enough
 * HTTP to fetch a page, the way a browser starts.
 *
 * This file stands alone (no imports): copy it anywhere and run it.
 */

/** Everything the client can be told on the command line. */
export interface ClientOptions {
  /** Server address: IPv4, IPv6 (`::1`) or a name (`localhost`). */
  hostname: string;
  port: number;
  /** Milliseconds to wait for the connection to be established. */
  timeout: number;
  /** Send an HTTP GET request instead of MESSAGE or stdin. */
  http: boolean;
  /** The path to request with `--http`. */
  path: string;
  /** The words to send, joined by single spaces; `undefined` reads stdin. */
  message?: string;
}

/** The defaults, as `--help` shows them. */
export const DEFAULTS: ClientOptions = {
  hostname: "127.0.0.1",
  port: 8080,
  timeout: 5000,
  http: false,
  path: "/",
};

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE =
  `usage: deno run --allow-net=127.0.0.1 client.ts [options] [MESSAGE...]

A TCP client like nc. With MESSAGE, sends the words joined by single spaces
(no newline added), half-closes, and prints everything the server sends back
until it closes. Without MESSAGE, copies stdin to the server and the server
to stdout, byte for byte, like nc -N: at the end of stdin it half-closes, and
it exits once both directions are done (or the server has gone).

options:
  --hostname H   server address or name (default ${DEFAULTS.hostname})
  --port N       server port, 0..65535 (default ${DEFAULTS.port})
  --timeout MS   give up connecting after MS milliseconds (default ${DEFAULTS.timeout})
  --http         send "GET PATH HTTP/1.1" as a browser would and print the
                 raw response, status line and headers included
  --path P       the path for --http (default ${DEFAULTS.path})
  --help         show this help

Received bytes go to stdout; "sent N bytes" and errors go to stderr.`;

/** A bad command line: the caller prints the reason and the usage, exit 2. */
export class UsageError extends Error {}

/**
 * Parse the command line. Throws {@link UsageError} for an unknown flag or a
 * bad value; returns `"help"` for `--help`. Words that are not flags form
 * the MESSAGE; after `--` everything is MESSAGE.
 */
export function parseClientArgs(args: string[]): ClientOptions | "help" {
  const options: ClientOptions = { ...DEFAULTS };
  const words: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      words.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      words.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = flag === arg ? undefined : arg.slice(eq + 1);
    const value = (): string => {
      const v = inline ?? args[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
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
      case "--timeout":
        options.timeout = parseInteger(flag, value(), 1, 3_600_000);
        break;
      case "--http":
        if (inline !== undefined) throw new UsageError(`--http takes no value`);
        options.http = true;
        break;
      case "--path":
        options.path = value();
        if (!/^\/[\x21-\x7e]*$/.test(options.path)) {
          throw new UsageError(
            `--path must start with / and hold no spaces, not ${
              JSON.stringify(options.path)
            }`,
          );
        }
        break;
      default:
        throw new UsageError(`unknown flag ${JSON.stringify(flag)}`);
    }
  }
  if (options.port === 0) {
    throw new UsageError(
      "--port 0 lets a server pick a free port; a client must name the server's port (1..65535)",
    );
  }
  if (options.path !== DEFAULTS.path && !options.http) {
    throw new UsageError("--path goes with --http");
  }
  if (words.length > 0) {
    if (options.http) {
      throw new UsageError("--http sends its own request: give no MESSAGE");
    }
    options.message = words.join(" ");
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

/** `HOST:PORT`, with IPv6 hosts in brackets: `[::1]:8080`. */
export function formatAddr(addr: { hostname: string; port: number }): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}

/**
 * Connect to a TCP server, giving up after `timeoutMs`. Without a timeout a
 * connect to a silent address waits for the OS to give up on its SYNs, which
 * takes minutes. Throws an Error whose message is a plain reason.
 */
export async function connectTcp(
  hostname: string,
  port: number,
  timeoutMs = DEFAULTS.timeout,
): Promise<Deno.TcpConn> {
  const where = `tcp ${formatAddr({ hostname, port })}`;
  try {
    return await Deno.connect({
      hostname,
      port,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new Error(explainConnectError(err, where, hostname, timeoutMs), {
      cause: err,
    });
  }
}

function explainConnectError(
  err: unknown,
  where: string,
  hostname: string,
  timeoutMs: number,
): string {
  if (err instanceof Deno.errors.ConnectionRefused) {
    return `connection refused by ${where}: nothing is listening there; start the server first (deno task server) or check --hostname and --port`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `Deno has no permission to connect to ${where}; run again with --allow-net=${
      hostname.includes(":") ? `[${hostname}]` : hostname
    }`;
  }
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return `no answer from ${where} within ${timeoutMs} ms; is the address right, and is a firewall dropping the connection?`;
  }
  if (err instanceof Deno.errors.TimedOut) {
    return `connecting to ${where} timed out; is the address right?`;
  }
  if (err instanceof Deno.errors.ConnectionReset) {
    return `${where} reset the connection`;
  }
  if (
    err instanceof Deno.errors.AddrNotAvailable ||
    err instanceof Deno.errors.NetworkUnreachable
  ) {
    return `cannot reach ${where} from this machine`;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/lookup address|Name or service not known|No address/i.test(message)) {
    return `cannot connect to ${where}: the name ${
      JSON.stringify(hostname)
    } does not resolve to an address; check the spelling`;
  }
  return `cannot connect to ${where}: ${message}`;
}

/** Anything with a `write` that may take only part of the bytes: a socket, stdout. */
export interface Writer {
  write(p: Uint8Array): Promise<number>;
}

/** Write all of `data`: `write()` may accept only part of it per call. */
export async function writeAll(
  writer: Writer,
  data: Uint8Array,
): Promise<void> {
  let written = 0;
  while (written < data.length) {
    written += await writer.write(data.subarray(written));
  }
}

/**
 * Copy every byte `conn` receives to `out` until the server closes its
 * sending side (read returns `null`). Returns the number of bytes copied.
 * Each read returns what has arrived so far, so one server write may come
 * out as several reads here, and several writes as one read.
 */
export async function copyToEnd(
  conn: Deno.Conn,
  out: Writer,
): Promise<number> {
  const buf = new Uint8Array(64 * 1024);
  let total = 0;
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return total;
    await writeAll(out, buf.subarray(0, n));
    total += n;
  }
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
 * server closes: the whole life of a simple TCP conversation.
 *
 * Sending and receiving run at the same time. With a large payload and an
 * echo server this matters: if we wrote everything before reading, the
 * echo would fill the buffers both ways and both sides would wait forever.
 */
export async function exchange(
  hostname: string,
  port: number,
  payload: Uint8Array,
  timeoutMs = DEFAULTS.timeout,
): Promise<Exchange> {
  using conn = await connectTcp(hostname, port, timeoutMs);
  const collector = new Collector();
  await Promise.all([
    writeAll(conn, payload).then(() => conn.closeWrite()),
    copyToEnd(conn, collector),
  ]);
  return {
    reply: collector.bytes(),
    local: conn.localAddr,
    remote: conn.remoteAddr,
  };
}

/**
 * The request a browser sends for `path`, trimmed to what matters: the
 * request line, `Host` (which site on this address), who is asking, what
 * it accepts, and `Connection: close` (one request, then the server closes).
 */
export function httpGetRequest(
  hostname: string,
  port: number,
  path = "/",
): string {
  return [
    `GET ${path} HTTP/1.1`,
    `Host: ${formatAddr({ hostname, port })}`,
    `User-Agent: deno-socket-playground-client/1.0`,
    `Accept: text/html,text/plain;q=0.9,*/*;q=0.8`,
    `Connection: close`,
    "",
    "",
  ].join("\r\n");
}

/**
 * The command-line program. Returns the exit status: 0 when the server
 * closed normally, 1 for a runtime error, 2 for a bad command line.
 */
export async function main(args: string[]): Promise<number> {
  let options: ClientOptions | "help";
  try {
    options = parseClientArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`error: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (options === "help") {
    console.log(USAGE);
    return 0;
  }
  const where = `tcp ${formatAddr(options)}`;
  let conn: Deno.TcpConn;
  try {
    conn = await connectTcp(options.hostname, options.port, options.timeout);
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
  try {
    if (options.http || options.message !== undefined) {
      // One message: send it, say so, half-close, print the reply.
      const bytes = new TextEncoder().encode(
        options.http
          ? httpGetRequest(options.hostname, options.port, options.path)
          : options.message,
      );
      await writeAll(conn, bytes);
      console.error(`sent ${bytes.length} bytes`);
      // A browser keeps its side open until the response ends; a plain
      // message is followed by our FIN so an echo server knows we are done.
      if (!options.http) await conn.closeWrite();
      await copyToEnd(conn, stdout);
    } else {
      // Netcat mode: two copies at once, stdin -> socket and socket ->
      // stdout. At the end of stdin we half-close and keep reading.
      const upload = copyStdinThenHalfClose(conn).then(() => null, (e) => e);
      await copyToEnd(conn, stdout);
      // The server has finished sending (its FIN arrived). It may still be
      // reading, as an echo server does after OUR half-close, so like
      // `nc -N` we keep sending stdin until it ends. If the server has
      // closed completely, the next write fails: it is gone, and so are we.
      const err = await upload;
      if (err !== null && !isPeerGone(err)) throw err;
    }
  } catch (err) {
    if (err instanceof StdoutClosed) return 0; // `client.ts | head`: fine
    console.error(`error: ${explainTransferError(err, where)}`);
    return 1;
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  return 0;
}

/** Copy stdin to the socket; at end of input, half-close (send FIN). */
async function copyStdinThenHalfClose(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    await writeAll(conn, buf.subarray(0, n));
  }
  await conn.closeWrite();
}

/** Whether a write failed because the server has closed or reset. */
function isPeerGone(err: unknown): boolean {
  return err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.ConnectionReset;
}

/** Thrown when whoever reads our stdout has gone away (`| head`). */
class StdoutClosed extends Error {}

/** Deno.stdout, with "the reader went away" told apart from socket errors. */
const stdout: Writer = {
  async write(p: Uint8Array): Promise<number> {
    try {
      return await Deno.stdout.write(p);
    } catch (err) {
      if (err instanceof Deno.errors.BrokenPipe) throw new StdoutClosed();
      throw err;
    }
  },
};

function explainTransferError(err: unknown, where: string): string {
  if (err instanceof Deno.errors.ConnectionReset) {
    return `${where} reset the connection (the server closed abruptly)`;
  }
  return `connection to ${where} failed: ${
    err instanceof Error ? err.message : err
  }`;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
