/**
 * udp.ts: a UDP echo server and a one-datagram client, in one file.
 *
 * What it shows:
 * - UDP has no connection. A server does not accept anyone; it receives
 *   datagrams, and each one arrives with the sender's address and port. To
 *   answer, it sends a datagram back to that address. That is all.
 * - A datagram keeps its boundaries: one send is one receive, whole, never
 *   split and never glued to the next (TCP gives you a byte stream instead).
 * - A datagram can be empty (0 bytes) or as large as 65,507 bytes (IPv4) or
 *   65,527 bytes (IPv6). Whatever does not fit the receive buffer is cut off
 *   without a word, so the buffer here is 65,536 bytes.
 * - TCP and UDP can use the same port number at the same time: run
 *   server.ts and udp.ts both with `--port 9000`.
 *
 * Run it (UDP is still unstable in Deno 2, hence --unstable-net):
 *
 *   deno run --allow-net=127.0.0.1 --unstable-net udp.ts --port 9000
 *   deno run --allow-net=127.0.0.1 --unstable-net udp.ts send --port 9000 hello
 *
 * Try next: send to a port where nothing listens and watch the silence
 * (`udp.ts send --port 9001 hello`); send an empty datagram
 * (`udp.ts send --port 9000 ''`); start `server.ts --port 9000` next to the
 * UDP server and talk to both; or use another client:
 * `nc -u 127.0.0.1 9000`, or Python's `socket.socket(AF_INET, SOCK_DGRAM)`.
 */

/** Largest UDP payload over IPv4: 65,535 minus 20 (IP header) minus 8 (UDP header). */
export const MAX_UDP_PAYLOAD_IPV4 = 65_507;

/**
 * Receive buffer size. Deno's `receive()` without a buffer allocates 65,507
 * bytes, and a datagram larger than the buffer is silently truncated; over
 * IPv6 a datagram can carry 65,527 bytes, so 64 KiB leaves room for both.
 */
export const RECEIVE_BUFFER_SIZE = 65_536;

/** What the command line asked for. */
export interface UdpOptions {
  /** `serve` (echo server, the default), `send` (one datagram) or `help`. */
  command: "serve" | "send" | "help";
  /** Address to bind (serve) or to send to (send), without brackets. */
  hostname: string;
  /** Port to bind or to send to. */
  port: number;
  /** send: how long to wait for the reply, in milliseconds. */
  timeoutMs: number;
  /** serve: print no line per datagram. */
  quiet: boolean;
  /** send: the message words, joined by single spaces. */
  message: string;
}

/** A command-line mistake: the script prints it with the usage, exit 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The usage text printed by `--help` and after a usage error. */
export const USAGE =
  `usage: deno run --allow-net=127.0.0.1 --unstable-net udp.ts [serve] [options]
       deno run --allow-net=127.0.0.1 --unstable-net udp.ts send [options] MESSAGE...

serve (the default): a UDP echo server. Every datagram goes back to its
sender unchanged, one datagram out for each datagram in.
send: sends MESSAGE (the words joined by single spaces, no newline added;
'' sends an empty datagram) as ONE datagram and prints the reply.

options:
  --hostname H   serve: address to bind (default 127.0.0.1: only this machine
                 can reach it). 0.0.0.0 (or ::) opens the echo to every
                 network this machine is on, and a UDP echo open to the world
                 can be abused to bounce traffic at others. Deno then needs
                 --allow-net=0.0.0.0 as well.
                 send: address or name to send to (default 127.0.0.1)
  --port N       port, 0..65535; 0 picks a free one (serve) (default 8080)
  --timeout MS   send: wait MS milliseconds for the reply (default 2000)
  --quiet        serve: no log line per datagram
  --help         show this help

The first line of serve's output is "udp listening on HOST:PORT".
UDP is unstable in Deno 2: without --unstable-net there is no UDP at all.`;

/**
 * Parse the command line. Throws {@link UsageError} with a one-line reason
 * for anything it does not understand; nothing is bound here.
 */
export function parseUdpArgs(args: string[]): UdpOptions {
  const options: UdpOptions = {
    command: "serve",
    hostname: "127.0.0.1",
    port: 8080,
    timeoutMs: 2000,
    quiet: false,
    message: "",
  };
  const flagArgs = args.includes("--")
    ? args.slice(0, args.indexOf("--"))
    : args;
  if (flagArgs.includes("--help") || flagArgs.includes("-h")) {
    return { ...options, command: "help" };
  }
  const positional: string[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positional.push(arg);
      continue;
    }
    // `--port 9000` and `--port=9000` both work.
    const eq = arg.indexOf("=");
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const takeValue = (): string => {
      if (eq >= 0) return arg.slice(eq + 1);
      if (i + 1 >= args.length) throw new UsageError(`${flag} needs a value`);
      return args[++i];
    };
    seen.add(flag);
    switch (flag) {
      case "--hostname": {
        const host = takeValue().replace(/^\[(.*)\]$/, "$1");
        if (host === "" || /[\s/\[\]]/.test(host)) {
          throw new UsageError(`--hostname must be an address or a name`);
        }
        options.hostname = host;
        break;
      }
      case "--port": {
        const value = takeValue();
        const port = Number(value);
        if (!/^\d{1,10}$/.test(value) || port > 65535) {
          throw new UsageError(
            `--port must be a whole number from 0 to 65535, not ${
              JSON.stringify(value)
            }`,
          );
        }
        options.port = port;
        break;
      }
      case "--timeout": {
        const value = takeValue();
        const ms = Number(value);
        if (!/^\d+$/.test(value) || ms < 1 || ms > 2_147_483_647) {
          throw new UsageError(
            `--timeout must be a whole number of milliseconds, 1 or more, not ${
              JSON.stringify(value)
            }`,
          );
        }
        options.timeoutMs = ms;
        break;
      }
      case "--quiet":
        if (eq >= 0) throw new UsageError(`--quiet takes no value`);
        options.quiet = true;
        break;
      default:
        throw new UsageError(`unknown flag ${JSON.stringify(flag)}`);
    }
  }

  const [first, ...rest] = positional;
  if (first === "serve" || first === undefined) {
    if (rest.length > 0) {
      throw new UsageError(
        `serve takes no MESSAGE, got ${JSON.stringify(rest[0])}`,
      );
    }
    if (seen.has("--timeout")) {
      throw new UsageError(`--timeout is for send only`);
    }
    return options;
  }
  if (first === "send") {
    if (rest.length === 0) {
      throw new UsageError(`send needs a MESSAGE ('' sends an empty datagram)`);
    }
    if (seen.has("--quiet")) throw new UsageError(`--quiet is for serve only`);
    return { ...options, command: "send", message: rest.join(" ") };
  }
  throw new UsageError(
    `unknown subcommand ${JSON.stringify(first)} (use serve or send)`,
  );
}

/** `HOST:PORT`, with IPv6 hosts in brackets: `[::1]:9000`. */
export function formatAddr(addr: Deno.Addr): string {
  if ("hostname" in addr) return formatHostPort(addr.hostname, addr.port);
  if ("path" in addr) return addr.path;
  return `vsock:${addr.cid}:${addr.port}`;
}

/** `HOST:PORT` from a host and a port, IPv6 in brackets. */
export function formatHostPort(hostname: string, port: number): string {
  return hostname.includes(":")
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
}

/** The host as `--allow-net` wants it: IPv6 in brackets. */
function allowNetHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/**
 * Turn what Deno throws when opening or using a UDP socket into one plain
 * sentence that names the protocol, the address and what to try.
 */
function explainUdpError(
  err: unknown,
  hostname: string,
  port: number,
  grants: string[],
): string {
  const where = `udp ${formatHostPort(hostname, port)}`;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof Deno.errors.AddrInUse) {
    return `${where} is already in use by another program; ` +
      `stop it or pick another --port (0 picks a free one)`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `Deno did not allow ${where}; run with --allow-net=${
      [...new Set(grants.map(allowNetHost))].join(",")
    } (or --allow-net)`;
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return `the OS refused ${where} (${message}); ` +
      `ports below 1024 need privileges: try --port 9000`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot use ${where}: that address is not on this machine; ` +
      `try --hostname 127.0.0.1, ::1 or 0.0.0.0`;
  }
  if (/lookup|resolve|name or service|nodename/i.test(message)) {
    const name = JSON.stringify(hostname);
    return `cannot resolve the udp host ${name} (${message}); ` +
      `check the name or use an address such as 127.0.0.1`;
  }
  return `${where} failed: ${message}`;
}

/** Whether `Deno.listenDatagram` exists (only with --unstable-net in Deno 2). */
function hasListenDatagram(): boolean {
  return typeof Deno.listenDatagram === "function";
}

const NEED_UNSTABLE_NET =
  "UDP needs the --unstable-net flag in Deno 2 (Deno.listenDatagram is missing); " +
  "run: deno run --allow-net=127.0.0.1 --unstable-net udp.ts";

/**
 * Open a UDP socket bound to `hostname:port` (port 0: the OS picks one).
 * Throws an Error whose message is the plain reason (address in use,
 * missing --allow-net grant, missing --unstable-net, ...).
 */
export function listenUdp(
  { hostname, port }: { hostname: string; port: number },
): Deno.DatagramConn {
  if (!hasListenDatagram()) throw new Error(NEED_UNSTABLE_NET);
  try {
    return Deno.listenDatagram({ transport: "udp", hostname, port });
  } catch (err) {
    throw new Error(explainUdpError(err, hostname, port, [hostname]), {
      cause: err,
    });
  }
}

/** Options for {@link serveUdp}. */
export interface ServeUdpOptions {
  /** Abort to stop: the socket is closed and the loop ends. */
  signal?: AbortSignal;
  /** Where log lines go (default `console.log`). */
  log?: (line: string) => void;
  /** No line per datagram (the summary is the caller's to print). */
  quiet?: boolean;
  /** Where warnings go, such as a reply that failed (default stderr). */
  warn?: (line: string) => void;
}

/** What a UDP server did, for the summary line. */
export interface UdpServeStats {
  datagrams: number;
  bytesIn: number;
  bytesOut: number;
}

/**
 * Echo every datagram back to its sender until `signal` aborts, then close
 * the socket. One datagram in, one datagram out, the same bytes: never
 * more out than in, so the server cannot be used to amplify traffic.
 */
export async function serveUdp(
  socket: Deno.DatagramConn,
  options: ServeUdpOptions = {},
): Promise<UdpServeStats> {
  const {
    signal,
    log = console.log,
    warn = console.error,
    quiet = false,
  } = options;
  const stats: UdpServeStats = { datagrams: 0, bytesIn: 0, bytesOut: 0 };
  const local = formatAddr(socket.addr);
  // One buffer for every datagram: receive() fills it and returns a view of
  // the bytes that arrived. We send that view back before receiving the next
  // datagram, so nothing is overwritten while still in use. (3.5x the round
  // trips of receive() without a buffer, which allocates 64 KiB per datagram.)
  const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  let receiving = false;
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      socket.close();
    }
  };
  // Stopping: a pending receive() only ends when the socket closes. A reply
  // being sent is allowed to finish; the loop checks the signal after it.
  const onAbort = () => {
    if (receiving) close();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    while (!signal?.aborted) {
      let data: Uint8Array;
      let from: Deno.Addr;
      receiving = true;
      try {
        [data, from] = await socket.receive(buffer);
      } catch (err) {
        if (closed || signal?.aborted) break;
        // Windows reports an ICMP "port unreachable" for an earlier reply
        // as an error on the next receive; the server just carries on.
        if (
          err instanceof Deno.errors.ConnectionReset ||
          err instanceof Deno.errors.ConnectionRefused
        ) continue;
        const reason = err instanceof Error ? err.message : String(err);
        throw new Error(`udp ${local}: receive failed: ${reason}`, {
          cause: err,
        });
      } finally {
        receiving = false;
      }
      stats.datagrams++;
      stats.bytesIn += data.length;
      if (!quiet) {
        const remote = formatAddr(from);
        log(
          `udp datagram local ${local} remote ${remote} ${data.length} bytes`,
        );
      }
      try {
        // The reply goes to whatever address the datagram says it came from.
        stats.bytesOut += await socket.send(data, from);
      } catch (err) {
        if (closed) break;
        // One sender we cannot answer (no permission, unreachable) must not
        // stop the server for everyone else.
        const to = formatAddr(from);
        const reason = err instanceof Deno.errors.NotCapable
          ? `Deno has no permission to send to udp ${to} (a reply goes to ` +
            `the sender's address, not to the name you bound); run with ` +
            `--allow-net=${allowNetHost((from as Deno.NetAddr).hostname)}`
          : err instanceof Error
          ? err.message
          : String(err);
        warn(`warning: udp reply to ${to} failed: ${reason}`);
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    close();
  }
  return stats;
}

/** What {@link sendDatagram} got back. */
export interface UdpReply {
  /** The reply's payload (a copy: safe to keep). */
  reply: Uint8Array<ArrayBuffer>;
  /** Our end: the address and port the OS picked for the sending socket. */
  local: Deno.NetAddr;
  /** Their end: where the reply came from. */
  remote: Deno.NetAddr;
}

/** Whether `hostname` is an IPv4 or IPv6 literal (not a name). */
function isIpLiteral(hostname: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(hostname) || hostname.includes(":");
}

/**
 * The local address for the sending socket. Loopback destinations get a
 * loopback socket (so `--allow-net=127.0.0.1` is enough); anything else gets
 * the wildcard of the right family and the OS picks the outgoing interface.
 */
function localAddressFor(hostname: string): string {
  if (hostname.includes(":")) return hostname === "::1" ? "::1" : "::";
  if (/^127\./.test(hostname)) return "127.0.0.1";
  if (hostname.toLowerCase() === "localhost") return "localhost";
  return "0.0.0.0";
}

/** The canonical spelling of an IP literal (`0:0::1` is `::1`). */
function canonicalHost(hostname: string): string {
  return new URL(`http://${allowNetHost(hostname)}`).hostname.replace(
    /^\[|\]$/g,
    "",
  );
}

/**
 * Send `payload` as ONE datagram to `hostname:port` and wait up to
 * `timeoutMs` for one datagram back from that address and port.
 *
 * Throws an Error whose message is the plain reason; no reply at all is
 * `no reply from udp HOST:PORT within MS ms`.
 */
export async function sendDatagram(
  hostname: string,
  port: number,
  payload: Uint8Array,
  timeoutMs: number,
): Promise<UdpReply> {
  const where = formatHostPort(hostname, port);
  const noReply = `no reply from udp ${where} within ${timeoutMs} ms`;
  const bindHost = localAddressFor(hostname);
  const socket = listenUdpForSending(bindHost, hostname, port);
  const destination: Deno.NetAddr = { transport: "udp", hostname, port };
  // UDP has no handshake, so there is nothing to wait for but the reply.
  // A receive() cannot be cancelled on its own: closing the socket ends it.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    socket.close();
  }, timeoutMs);
  try {
    await socket.send(payload, destination);
    const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
    const expectedHost = isIpLiteral(hostname) ? canonicalHost(hostname) : null;
    while (true) {
      const [data, from] = await socket.receive(buffer);
      if (from.transport !== "udp") continue;
      // Anyone can send a datagram to our port. Like a connected socket
      // (`nc -u`), take only the one that comes from where we sent ours.
      if (from.port !== port) continue;
      if (
        expectedHost !== null && canonicalHost(from.hostname) !== expectedHost
      ) {
        continue;
      }
      return {
        reply: data.slice(),
        local: socket.addr as Deno.NetAddr,
        remote: from,
      };
    }
  } catch (err) {
    // Nobody listening? UDP has no connection and no handshake, so there is
    // nothing to refuse: the datagram leaves, and silence is the answer.
    // The other host's OS may send back an ICMP "port unreachable" (Linux
    // does, even on loopback), but only a *connected* UDP socket hears it,
    // as a "connection refused" error (`nc -u` and Python after connect()
    // do). Deno's UDP sockets are never connected, so on Linux we just time
    // out; other systems (Windows: "connection reset") can surface the ICMP
    // message on an unconnected socket. Either way: no reply.
    if (
      timedOut || err instanceof Deno.errors.ConnectionRefused ||
      err instanceof Deno.errors.ConnectionReset
    ) {
      throw new Error(noReply, { cause: err });
    }
    const grants = [bindHost, hostname];
    throw new Error(explainUdpError(err, hostname, port, grants), {
      cause: err,
    });
  } finally {
    clearTimeout(timer);
    if (!timedOut) socket.close();
  }
}

/** Bind the sending socket, with errors that name both grants send needs. */
function listenUdpForSending(
  bindHost: string,
  hostname: string,
  port: number,
): Deno.DatagramConn {
  if (!hasListenDatagram()) throw new Error(NEED_UNSTABLE_NET);
  try {
    return Deno.listenDatagram({
      transport: "udp",
      hostname: bindHost,
      port: 0,
    });
  } catch (err) {
    const grants = [bindHost, hostname];
    const reason = err instanceof Deno.errors.NotCapable
      ? `Deno did not allow udp to ${formatHostPort(hostname, port)} ` +
        `(sending needs a local socket on ${bindHost}); ` +
        `run with --allow-net=${
          [...new Set(grants.map(allowNetHost))].join(",")
        } (or --allow-net)`
      : explainUdpError(err, bindHost, 0, grants);
    throw new Error(reason, { cause: err });
  }
}

/**
 * Call `onStop` on SIGINT (Ctrl+C) or SIGTERM. Returns a function that
 * removes the listeners again.
 */
export function onStopSignals(onStop: () => void): () => void {
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onStop);
  return () => {
    for (const s of signals) Deno.removeSignalListener(s, onStop);
  };
}

/** The command-line program: returns the exit status. */
export async function main(args: string[]): Promise<number> {
  let options: UdpOptions;
  try {
    options = parseUdpArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`error: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (options.command === "help") {
    console.log(USAGE);
    return 0;
  }
  try {
    if (options.command === "send") {
      const payload = new TextEncoder().encode(options.message);
      const { reply } = await sendDatagram(
        options.hostname,
        options.port,
        payload,
        options.timeoutMs,
      );
      // The reply is data: raw bytes to stdout, like nc.
      try {
        for (let written = 0; written < reply.length;) {
          written += await Deno.stdout.write(reply.subarray(written));
        }
      } catch (err) {
        // Whoever reads our stdout went away (`| head`): not an error.
        if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
      }
      return 0;
    }
    const socket = listenUdp(options);
    // Catch Ctrl+C and SIGTERM before saying we listen: whoever reads that
    // line may stop us at once.
    const controller = new AbortController();
    const removeSignals = onStopSignals(() => controller.abort());
    console.log(`udp listening on ${formatAddr(socket.addr)}`);
    try {
      const stats = await serveUdp(socket, {
        signal: controller.signal,
        quiet: options.quiet,
      });
      console.log(
        `udp server stopped: ${stats.datagrams} datagrams, ` +
          `${stats.bytesIn} bytes in, ${stats.bytesOut} bytes out`,
      );
    } finally {
      removeSignals();
    }
    return 0;
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
