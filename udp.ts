/**
 * udp.ts: a UDP echo server and a sender in one file: datagrams, no connection.
 *
 * First listings: basics/udp_echo.ts (44 lines) and basics/udp_send.ts
 * (41 lines) are this lesson alone: bind, receive each datagram whole, send
 * it back; send one and wait, with a timeout. This file adds binary stdin,
 * --chunk, --trace and --hex, the echo-loop guard, a clean shutdown, Unix
 * datagram sockets (--unix) and one to many (multicast groups, broadcast).
 *
 * What it shows:
 * - UDP has no connection: no listen queue, no accept, no handshake. The
 *   server binds a port and receives datagrams; each arrives whole, with the
 *   address and port of whoever sent it, and the answer is one datagram sent
 *   back to that address.
 * - A datagram keeps its boundaries: one send is one receive, never split,
 *   never glued to the next. (TCP is a byte stream that keeps no boundaries.)
 * - No reply is the only "no" a sender like ours gets: to a datagram for a
 *   port where nothing listens, the host answers with an ICMP "port
 *   unreachable", but an unconnected socket (as here) never hears it; only a
 *   connected one gets "connection refused". So a sender gives up after a
 *   timeout.
 * - An echo must never answer another echo (the port 7 loop, CVE-1999-0103):
 *   the server refuses every datagram that could start one.
 * - Sockets are IPC: `--unix PATH` is the same echo on a datagram socket
 *   named by a file (AF_UNIX, SOCK_DGRAM): no port, no network, the file's
 *   permissions decide who may send. A reply needs the sender's name, so a
 *   sender binds a path of its own (in a private temporary folder).
 * - One to many: a datagram sent to a multicast group (`serve --join
 *   GROUP`) or to a subnet's broadcast address reaches every receiver there,
 *   copied by the network; `send` prints every reply, with who sent it.
 *
 * Run it (UDP is still unstable in Deno 2, hence --unstable-net). In one
 * terminal the server, in another the sender:
 *
 *   deno run --allow-net=127.0.0.1 --unstable-net udp.ts --port 9000
 *   deno run --allow-net=127.0.0.1 --unstable-net udp.ts send --port 9000 hello
 *
 * Over a Unix datagram socket (Deno wants read, write and net grants on the
 * path; a reply goes to the sender's own path, made at random in the temp
 * folder, and Deno's `unix:` net grant names exact paths only, so both
 * sides need --allow-net without a list):
 *
 *   deno run --allow-read=/tmp --allow-write=/tmp --allow-net --unstable-net udp.ts --unix /tmp/echo.sock
 *   deno run --allow-read=/tmp --allow-write=/tmp --allow-net --unstable-net udp.ts send --unix /tmp/echo.sock hello
 *
 * Try next:
 * - Start the server with `--trace` and send `send --port 9000 --chunk 1
 *   hello`: five datagrams go out, and the server logs five, one byte each.
 * - `send --port 9001 hello`, where nothing listens: silence, then the timeout.
 * - `printf 'a\0b\377' | udp.ts send --port 9000 | xxd`: stdin goes out as
 *   ONE datagram, byte for byte.
 * - `server.ts --port 9000` beside it: TCP and UDP share the port number.
 * - Another client: `nc -u 127.0.0.1 9000`, or Python's
 *   `socket.socket(socket.AF_INET, socket.SOCK_DGRAM)`; over the path,
 *   `socat - UNIX-SENDTO:/tmp/echo.sock,bind=/tmp/me.sock`.
 * - `ss -xa | grep echo.sock` (or /proc/net/unix): the socket, type
 *   u_dgr; kill -9 the server and start it again: the stale file it left
 *   is found (nobody bound to it) and replaced.
 * - `deno task lab --one-to-many`: a group and a broadcast address on a
 *   switch of four hosts (network namespaces, root).
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ─── 1. Bind ────────────────────────────────────────────────────────────────

/** Largest UDP payload over IPv4: 65,535 minus 20 (IP header) minus 8 (UDP header). */
export const MAX_UDP_PAYLOAD_IPV4 = 65_507;
/** Largest UDP payload over IPv6 (its 40-byte header is not counted in the 65,535). */
export const MAX_UDP_PAYLOAD_IPV6 = 65_527;

/**
 * Receive buffer size: a datagram larger than the buffer it is received into
 * is cut to fit, silently, and the rest is lost. Deno's `receive()` without a
 * buffer allocates 65,507 bytes, too small for IPv6's 65,527; 64 KiB holds
 * the largest datagram of either. (A Unix datagram may be larger, up to the
 * socket's send buffer: this playground sends at most 65,527 bytes there
 * too, and a larger one from another program is cut to 64 KiB.)
 */
export const RECEIVE_BUFFER_SIZE = 65_536;

/**
 * Open a UDP socket bound to `hostname:port` (port 0: the OS picks a free
 * one). Binding is all a UDP server does before it can receive: there is no
 * listen() and no accept(), because there are no connections to accept.
 * `multicastLoopback` sets IP_MULTICAST_LOOP on it (Deno clears it): see
 * {@link joinGroups} for what it changes on a receiver.
 * Throws an Error whose message is the plain reason (address in use,
 * missing --allow-net grant, missing --unstable-net, ...).
 */
export function listenUdp(
  { hostname, port, multicastLoopback = false }: {
    hostname: string;
    port: number;
    multicastLoopback?: boolean;
  },
): Deno.DatagramConn {
  requireUdp();
  try {
    return Deno.listenDatagram({
      transport: "udp",
      hostname,
      port,
      loopback: multicastLoopback,
    });
  } catch (err) {
    const where = `udp ${formatAddr({ hostname, port })}`;
    throw new Error(explainListenError(err, where, hostname), { cause: err });
  }
}

/**
 * The same, named by a file: a Unix datagram socket (AF_UNIX, SOCK_DGRAM;
 * Deno calls the transport "unixpacket") bound to `path`. bind() creates
 * the file, a socket file (`ls -l` shows `s`); whoever may write to it may
 * send to us. A server that was killed left its file behind, and a bind
 * there fails "in use": bindUnix checks that nobody is bound to it (a
 * connect is refused) and removes it; a file that is not a socket, or a
 * socket someone is bound to, stays and is an Error.
 */
export async function listenUnixgram(path: string): Promise<Deno.DatagramConn> {
  requireUdp();
  return await bindUnix(
    path,
    () => Deno.listenDatagram({ transport: "unixpacket", path }),
    warn,
  );
}

/**
 * Join multicast `groups` on `socket` (bound to the wildcard of their IP
 * version: a socket bound to one address receives only datagrams sent to
 * that address). Joining tells the kernel, and the network (an IGMP or MLD
 * report), "send me datagrams for this group": from then on a datagram to
 * GROUP:PORT reaches this socket, and every other member's. Interface
 * "0.0.0.0" (IPv4) or 0 (IPv6) lets the kernel pick it by its route for
 * the group. Closing the socket leaves the groups.
 *
 * Whether a member gets the group's datagrams sent from its own host is
 * the IP_MULTICAST_LOOP option, and which socket's option counts depends
 * on the OS: on Linux, macOS and the BSDs the sender's (a send path
 * option: udp.ts send --multicast-loopback); on Windows the receiver's (a
 * receive path option). Deno clears it on every socket it opens, so serve
 * --multicast-loopback sets it on the member's socket too: that is what
 * decides on Windows, and changes nothing a member receives on Linux (it
 * would loop back what this socket sends to a group, and an echo only
 * replies to a sender's own address).
 */
export async function joinGroups(
  socket: Deno.DatagramConn,
  groups: string[],
): Promise<void> {
  for (const group of groups) {
    try {
      if (group.includes(":")) await socket.joinMulticastV6(group, 0);
      else await socket.joinMulticastV4(group, "0.0.0.0");
    } catch (err) {
      throw new Error(explainJoinError(err, group, socket.addr), {
        cause: err,
      });
    }
  }
}

// ─── 2. Receive, 3. Reply ───────────────────────────────────────────────────

/**
 * Echo every datagram back to its sender until `signal` aborts, then close
 * the socket (and remove a Unix socket's file). One datagram in, at most
 * one datagram out, the same bytes: never more out than in, so the server
 * cannot amplify an attack. Datagrams that could start an echo loop get no
 * answer (see {@link EchoLoopGuard}).
 */
export async function serveUdp(
  socket: Deno.DatagramConn,
  options: ServeUdpOptions = {},
): Promise<UdpSummary> {
  // Counters, log lines, warnings and the echo-loop guard (below the divider).
  const server = new UdpServer(socket, options);
  const { signal } = options;
  // ONE buffer for every datagram: receive() fills it and returns a view of
  // the bytes that arrived, which we send back before the next receive()
  // can overwrite them. (Measured: 3.5x the round trips of a receive()
  // that allocates a fresh 64 KiB buffer per datagram.)
  const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  // Stopping: a pending receive() ends only when its socket closes.
  const stop = () => server.close();
  signal?.addEventListener("abort", stop, { once: true });
  try {
    while (!signal?.aborted) {
      // 2. Receive: one call, one datagram, always whole (if it fits the
      //    buffer), and the sender's address comes with it (address:port,
      //    or over a Unix socket the path the sender bound). No connection
      //    remembers who the sender was: this `from` is all we know, and
      //    all we need to reply.
      let data: Uint8Array, from: Deno.Addr;
      try {
        [data, from] = await socket.receive(buffer);
      } catch (err) {
        if (server.closed) break;
        // Windows reports an ICMP "port unreachable" for an earlier reply
        // as an error on the next receive: that sender is gone; go on.
        if (isIcmpError(err)) continue;
        const reason = `${server.proto} ${server.local}: receive failed`;
        throw new Error(`${reason}: ${errorText(err)}`, { cause: err });
      }
      // Count it and log it; and never feed a loop: no answer to a datagram
      // whose source may be another echo (or this one), or has no name.
      if (!server.received(data, from)) continue;

      // 3. Reply: send the same bytes back to the address they came from.
      //    One datagram in, one out, never more.
      try {
        const sent = await socket.send(data, from);
        server.sent(sent, data, from);
      } catch (err) {
        if (server.closed) break;
        // One sender we cannot answer (no permission, unreachable, gone)
        // must not stop the server for everyone else.
        server.replyFailed(from, err);
      }
    }
  } finally {
    signal?.removeEventListener("abort", stop);
    server.close(); // a Unix socket's file is removed here: Deno leaves it
  }
  return await server.finish(); // replies the guard held back may be going out
}

// ─── 4. The sender ──────────────────────────────────────────────────────────

/** What {@link sendDatagrams} got back: one reply. */
export interface UdpReply<A extends Deno.Addr = Deno.NetAddr> {
  /** The reply's payload (a copy: safe to keep). */
  reply: Uint8Array<ArrayBuffer>;
  /** Our end: the address and port the OS picked for the sending socket. */
  local: A;
  /** Their end: where the reply came from. */
  remote: A;
}

/** Options for {@link sendDatagrams} and {@link sendUnixDatagrams}. */
export interface SendOptions {
  /**
   * How long to wait for a reply, in ms (after the last send or reply); to
   * a group or a broadcast address, how long to collect replies.
   */
  timeoutMs?: number;
  /** Pause between two datagrams, in ms (`--delay`). */
  delayMs?: number;
  /** `--trace`: sees each datagram sent and each reply received. */
  trace?: Trace;
  /** Called with each reply as it arrives (a view: copy it to keep it). */
  onReply?: (reply: Uint8Array, from: Deno.Addr) => void | Promise<void>;
  /**
   * To many (default: when the destination is a group or a broadcast
   * address): take replies from any address, and every one of them that
   * comes within `timeoutMs`, not one per datagram.
   */
  toMany?: boolean;
  /** To a group: the TTL of the datagrams (IPv4 only; the kernel's is 1). */
  ttl?: number;
  /** To a group: deliver our datagrams to this host's own members too. */
  multicastLoopback?: boolean;
}

/**
 * Send each of `datagrams` as ONE datagram to `hostname:port`, then wait
 * for as many replies from that address and port, at most `timeoutMs` for
 * each. Returns the replies in the order they came. To a multicast group or
 * a broadcast address (or with `toMany`), one datagram reaches many
 * receivers: every reply that comes within `timeoutMs`, from anyone, is
 * taken.
 *
 * Throws an Error whose message is the plain reason; no reply at all is
 * `no reply from udp HOST:PORT within MS ms`.
 */
export async function sendDatagrams(
  hostname: string,
  port: number,
  datagrams: Uint8Array[],
  options: SendOptions = {},
): Promise<UdpReply[]> {
  const to: Deno.NetAddr = { transport: "udp", hostname, port };
  const toMany = options.toMany ?? (isGroup(hostname) || isBroadcast(hostname));
  // Bind a socket of our own on port 0: the OS picks a free (ephemeral)
  // port, and that port is where the replies will come back to.
  const socket = listenUdpForSending(hostname, port, options);
  try {
    // To a group: the TTL (how many routers it may cross; 1: this link
    // only) is a socket option, and Deno sets it only through a group's
    // membership, so the sending socket joins the group first.
    if (isGroup(hostname) && options.ttl !== undefined) {
      const membership = await socket.joinMulticastV4(hostname, "0.0.0.0");
      await membership.setTTL(options.ttl);
    }
  } catch (err) {
    socket.close();
    throw new Error(explainJoinError(err, hostname, socket.addr), {
      cause: err,
    });
  }
  // The largest datagram depends on the IP version the socket speaks: say
  // so before sending, rather than pass on the OS's "Message too long".
  const ipv6 = (socket.addr as Deno.NetAddr).hostname.includes(":");
  const tooBig = datagrams.find((d) =>
    d.length > (ipv6 ? MAX_UDP_PAYLOAD_IPV6 : MAX_UDP_PAYLOAD_IPV4)
  );
  if (tooBig !== undefined) {
    socket.close();
    throw new Error(
      `cannot send to udp ${formatAddr(to)}: ${doesNotFit(tooBig.length)}`,
    );
  }
  // Anyone can send to our port: take only what comes from the server's
  // port (from any address, when one datagram went to many).
  const accept = toMany
    ? (from: Deno.Addr) => from.transport === "udp" && from.port === port
    : replyFilter(hostname, port);
  return await exchange(socket, to, datagrams, { ...options, toMany }, {
    accept,
    explain: (err) => explainSendError(err, hostname, port),
  }) as UdpReply[];
}

/**
 * The sender over a Unix datagram socket at `path`. A reply goes to the
 * sender's name, and a socket that never bound a path has none (the server
 * sees "(unnamed)" and cannot answer): so bind one first, in a private
 * folder of our own (mode 0700: only this user can reach it), and remove
 * the folder at the end.
 */
export async function sendUnixDatagrams(
  path: string,
  datagrams: Uint8Array[],
  options: SendOptions = {},
): Promise<UdpReply<Deno.UnixAddr>[]> {
  requireUdp();
  const to: Deno.UnixAddr = { transport: "unixpacket", path };
  const tooBig = datagrams.find((d) => d.length > MAX_UDP_PAYLOAD_IPV6);
  if (tooBig !== undefined) {
    throw new Error(
      `cannot send to unixgram ${path}: ${doesNotFit(tooBig.length)}`,
    );
  }
  const explain = (err: unknown) => explainUnixSendError(err, path);
  let dir: string;
  try {
    dir = await Deno.makeTempDir({ prefix: "udp-send-" });
  } catch (err) {
    throw new Error(explain(err), { cause: err });
  }
  // Ctrl-C (or SIGTERM) while we wait would end the process and leave the
  // folder and its socket file in /tmp: remove them, then exit as killed.
  const removeSignals = onStopSignals((signal) => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* gone already */ }
    Deno.exit(signal === "SIGINT" ? 130 : 143);
  });
  try {
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({
        transport: "unixpacket",
        path: `${dir}/reply.sock`,
      });
    } catch (err) {
      throw new Error(explain(err), { cause: err });
    }
    // Only this user can send to a socket in our 0700 folder: what comes
    // is the server's reply. Deno 2.9 cannot send on a Unix datagram
    // socket while a receive() waits on it ("Socket already in use"), so
    // each reply is awaited before the next datagram goes out.
    return await exchange(socket, to, datagrams, options, {
      accept: () => true,
      explain,
      lockstep: true,
    }) as UdpReply<Deno.UnixAddr>[];
  } finally {
    removeSignals();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Send `datagrams` on `socket` to `to` and collect the replies `accept`
 * takes: one per datagram (the clock restarts with each), or, `toMany`,
 * all that come within the timeout after the last send. `lockstep`: wait
 * for each reply before the next send (see sendUnixDatagrams). Closes
 * `socket`.
 */
async function exchange(
  socket: Deno.DatagramConn,
  to: Deno.Addr,
  datagrams: Uint8Array[],
  options: SendOptions,
  how: {
    accept: (from: Deno.Addr) => boolean;
    explain: (err: unknown) => string;
    lockstep?: boolean;
  },
): Promise<UdpReply<Deno.Addr>[]> {
  const { timeoutMs = DEFAULTS.timeoutMs, delayMs = 0, trace } = options;
  const toMany = options.toMany ?? false;
  // UDP has no handshake and no "connection refused" on this socket: if
  // nobody answers, nothing at all happens. Only a clock ends the wait, and
  // a pending receive() ends only when its socket is closed.
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const startClock = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      socket.close();
    }, timeoutMs);
  };
  const replies: UdpReply<Deno.Addr>[] = [];
  const buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  let handlerError: unknown;
  /** Wait for the next datagram `accept` takes, and hand it on. */
  const receiveOne = async () => {
    let data: Uint8Array, from: Deno.Addr;
    do {
      [data, from] = await socket.receive(buffer);
    } while (!how.accept(from)); // anyone may send to our socket
    replies.push({ reply: data.slice(), local: socket.addr, remote: from });
    // One reply per datagram: each reply restarts the clock. To many: the
    // clock that started after the last send ends the wait.
    if (timer !== undefined && !toMany) startClock();
    const who = toMany ? ` from ${formatAddr(from)}` : "";
    trace?.(`received ${data.length} bytes${who}`, data);
    try {
      await options.onReply?.(data, from);
    } catch (err) {
      handlerError = err; // not the network's fault: pass it on as it is
      throw err;
    }
  };
  /** One send(): one datagram (after --delay, but for the first). */
  const sendOne = async (i: number) => {
    if (i > 0 && delayMs > 0) await sleep(delayMs);
    await socket.send(datagrams[i], to);
    trace?.(`sent ${datagrams[i].length} bytes`, datagrams[i]);
  };
  let receiving: Promise<void> | undefined;
  try {
    if (how.lockstep) {
      for (let i = 0; i < datagrams.length; i++) {
        await sendOne(i);
        startClock();
        await receiveOne();
      }
      return replies;
    }
    // Receive while still sending: replies to the first datagrams can come
    // back while we pause between the others.
    receiving = (async () => {
      while (toMany || replies.length < datagrams.length) await receiveOne();
    })();
    receiving.catch(() => {}); // its error is awaited below
    // Each datagram goes out right after the one before (or after --delay),
    // without waiting for its reply: UDP has no flow control to wait for.
    for (let i = 0; i < datagrams.length; i++) await sendOne(i);
    startClock();
    await receiving;
    return replies;
  } catch (err) {
    if (err === handlerError) throw err;
    if (timedOut && toMany && replies.length > 0) return replies;
    if (timedOut || (isIcmpError(err) && to.transport === "udp")) {
      // Other systems (and a *connected* socket, as `nc -u` uses) may hear
      // an ICMP "port unreachable" as an error; either way: no reply.
      const got = datagrams.length > 1 && !toMany
        ? ` (${replies.length} of ${datagrams.length} datagrams answered)`
        : "";
      const proto = to.transport === "udp" ? "udp" : "unixgram";
      throw new Error(
        `no reply from ${proto} ${formatAddr(to)} within ${timeoutMs} ms${got}`,
        { cause: err },
      );
    }
    throw new Error(how.explain(err), { cause: err });
  } finally {
    clearTimeout(timer);
    if (!timedOut) socket.close();
    await receiving?.catch(() => {});
  }
}

/**
 * Send `payload` as ONE datagram to `hostname:port` and wait up to
 * `timeoutMs` for the one datagram that comes back.
 */
export async function sendDatagram(
  hostname: string,
  port: number,
  payload: Uint8Array,
  timeoutMs: number,
): Promise<UdpReply> {
  const [reply] = await sendDatagrams(hostname, port, [payload], { timeoutMs });
  return reply;
}

// The entry runs once the whole file is loaded: `main` needs the plumbing
// below, which is not defined yet at this line.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/**
 * The command-line program: parse the flags, then serve (bind, print the
 * listening line, echo until SIGINT/SIGTERM, print a summary) or send.
 * Returns the exit status; throws {@link UsageError} or an Error with a
 * plain reason.
 */
export async function main(args: string[]): Promise<number> {
  const options = parseUdpArgs(args);
  if (options.command === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  requireUdp();
  return options.command === "send"
    ? await mainSend(options)
    : await mainServe(options);
}

// ----- the command line -----

/** What the command line asked for. */
export interface UdpOptions {
  /** `serve` (echo server, the default), `send` or `help`. */
  command: "serve" | "send" | "help";
  /** Address to bind (serve) or to send to (send), without brackets. */
  hostname: string;
  /** Port to bind or to send to. */
  port: number;
  /** A Unix datagram socket's path instead of hostname and port; null: UDP. */
  unix: string | null;
  /** serve: multicast groups to join (239.255.0.0/16, ff15::/16). */
  join: string[];
  /** send: the TTL of datagrams to an IPv4 group; null: the kernel's (1). */
  ttl: number | null;
  /**
   * IP_MULTICAST_LOOP on our socket: send: to a group, deliver to this
   * host's own members too; serve (with --join): take the group's
   * datagrams sent from this host, where the receiver's option decides
   * (Windows; on Linux and macOS the sender's does).
   */
  multicastLoopback: boolean;
  /** send: how long to wait for each reply, in milliseconds. */
  timeoutMs: number;
  /** serve: print no line per datagram (unless `trace`). */
  quiet: boolean;
  /** A line per datagram sent and received, with its size (wins over `quiet`). */
  trace: boolean;
  /** Under each traced line, the bytes in the xxd layout (implies trace). */
  hex: boolean;
  /** send: the MESSAGE words joined by single spaces; null: read stdin. */
  message: string | null;
  /** send: split the payload into datagrams of at most this many bytes (0: one datagram). */
  chunk: number;
  /** send: pause between two datagrams, in milliseconds. */
  delayMs: number;
}

/** The defaults, as `--help` shows them. */
export const DEFAULTS: Omit<UdpOptions, "command" | "message"> = {
  hostname: "127.0.0.1",
  port: 8080,
  unix: null,
  join: [],
  ttl: null,
  multicastLoopback: false,
  timeoutMs: 2000,
  quiet: false,
  trace: false,
  hex: false,
  chunk: 0,
  delayMs: 0,
};

/**
 * The longest wait a flag in milliseconds may ask for: a JavaScript timer
 * holds at most 2^31-1 ms (about 24.8 days); a longer one fires at once.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The most `send` reads from stdin when it is cut with --chunk. */
export const MAX_STDIN_BYTES = 16 << 20;

/**
 * The multicast groups this playground may use: IPv4's organization-local
 * scope (RFC 2365) and IPv6's site-local transient groups (RFC 4291), the
 * private ranges of multicast, never routed to the internet.
 */
export const GROUP_RANGES = "239.255.0.0/16 or ff15::/16";

/** The usage text printed by `--help` and after a usage error. */
export const USAGE =
  `usage: deno run --allow-net=127.0.0.1 --unstable-net udp.ts [serve] [options]
       deno run --allow-net=127.0.0.1 --unstable-net udp.ts send [options] [MESSAGE...]
       deno run --allow-read=/tmp --allow-write=/tmp --allow-net --unstable-net udp.ts [serve|send] --unix PATH ...

serve (the default): a UDP echo server. Every datagram goes back to its
sender unchanged, one datagram out for each datagram in. Datagrams that
could start an echo loop get no answer: from source port 0, from ports
below 1024 (echo, chargen...), from the server's own address and port, and
from a peer that behaves as another echo: it sends back exactly what it was
just sent, within milliseconds, again and again, and when those replies are
held back until it falls quiet, sends them back the moment they go out.

send: sends MESSAGE (text: the words joined by single spaces, UTF-8, no
newline added; '' sends an empty datagram) as ONE datagram and prints the
reply on stdout. Without MESSAGE it sends stdin, byte for byte, as ONE
datagram: the way to send binary data. To a multicast group or a broadcast
address, one datagram reaches many: every reply that comes within the
timeout is printed, one line each: "from HOST:PORT: PAYLOAD".

options:
  --hostname H   serve: address to bind (default ${DEFAULTS.hostname}: only this
                 machine can reach it). 0.0.0.0 (or ::) opens the echo to every
                 network this machine is on, and a UDP echo open to the world
                 can be abused to bounce traffic at others. Deno's grant must
                 then name 0.0.0.0 and every sender to be answered (a reply
                 goes to the sender's address): --allow-net=0.0.0.0,192.0.2.7,
                 or --allow-net for anyone.
                 send: address or name to send to (default ${DEFAULTS.hostname});
                 a group, or a broadcast address (255.255.255.255, an
                 address ending in .255, or with --allow-sys=networkInterfaces
                 any subnet's broadcast address here)
  --port N       port, 0..65535; 0 picks a free one (serve); send needs
                 1..65535 (default ${DEFAULTS.port})
  --unix PATH    a Unix datagram socket (a file, no port, no network)
                 instead of --hostname and --port. serve binds PATH (a stale
                 socket file that nobody is bound to is replaced; any other
                 file is left alone) and removes it when it stops; the first
                 line is "unixgram listening on PATH". send binds a path of
                 its own in a private temporary folder, for the reply.
                 Grants: Deno checks read, write and net (unix:ABSOLUTE-PATH)
                 for each path: --allow-read=PATH --allow-write=PATH
                 --allow-net=unix:PATH binds it; a reply goes to the
                 sender's random path in the temp folder, which an exact
                 unix: grant cannot name, so both sides need
                 --allow-read=/tmp --allow-write=/tmp --allow-net
  --join GROUP   serve: join the multicast group GROUP (repeatable), from
                 ${GROUP_RANGES}; needs --hostname 0.0.0.0 (or ::
                 for an IPv6 group): a socket bound to one address gets
                 only what is sent to that address
  --ttl N        send: to an IPv4 group, how many routers the datagram may
                 cross, 0..255 (the kernel's default is 1: this link only;
                 0: not even that, with --multicast-loopback this host
                 only). Deno 2.9 cannot set IPv6's hop limit
  --multicast-loopback
                 send: to a group, also deliver to members on this host.
                 serve (with --join): take the group's datagrams sent from
                 this host. IP_MULTICAST_LOOP, which Deno turns off on every
                 socket (the kernel's default is on); Linux and macOS look
                 at the sender's, so on them only send's counts; Windows
                 looks at the receiver's. Set it on both to be sure
  --timeout MS   send: wait MS milliseconds for each reply, 1..${MAX_TIMER_MS}
                 (default ${DEFAULTS.timeoutMs}); to many, collect replies that long
  --chunk N      send: cut the payload into datagrams of at most N bytes,
                 sent one after another; each reply is printed
  --delay MS     send: with --chunk, pause MS milliseconds between datagrams,
                 0..${MAX_TIMER_MS}
  --quiet        serve: no log line per datagram (--trace wins over --quiet)
  --trace        a line per datagram: serve on stdout, its "udp datagram ..."
                 line for each one received (even with --quiet) and "udp sent
                 5 bytes to ..." for each reply; send on stderr ("sent 5
                 bytes", "received 5 bytes")
  --hex          with each traced datagram, its bytes as xxd shows them
                 (implies --trace)
  --help         show this help

The first line of serve's output is "udp listening on HOST:PORT" (with
--unix: "unixgram listening on PATH").
UDP is unstable in Deno 2: without --unstable-net there is no UDP at all.`;

/** The flags, for `parseFlags` (node:util's parseArgs). */
const FLAGS = {
  hostname: { type: "string" },
  port: { type: "string" },
  unix: { type: "string" },
  join: { type: "string", multiple: true },
  ttl: { type: "string" },
  "multicast-loopback": { type: "boolean" },
  timeout: { type: "string" },
  chunk: { type: "string" },
  delay: { type: "string" },
  quiet: { type: "boolean" },
  trace: { type: "boolean" },
  hex: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsOptionsConfig;

/** Flags that belong to one subcommand only. */
const ONLY_FOR: Record<string, "serve" | "send"> = {
  join: "serve",
  ttl: "send",
  timeout: "send",
  chunk: "send",
  delay: "send",
  quiet: "serve",
};

/**
 * Parse the command line, applying the defaults (and "--hex implies
 * --trace") here, once. Throws {@link UsageError} with a one-line reason
 * for anything it does not understand; nothing is bound here.
 */
export function parseUdpArgs(args: string[]): UdpOptions {
  const options: UdpOptions = {
    command: "serve",
    ...DEFAULTS,
    join: [],
    message: null,
  };
  // --help wins over everything before a `--`, even a bad flag.
  const dashes = args.indexOf("--");
  const flagArgs = dashes >= 0 ? args.slice(0, dashes) : args;
  if (flagArgs.includes("--help") || flagArgs.includes("-h")) {
    return { ...options, command: "help" };
  }
  const { values, positionals } = parseFlags(args, FLAGS, true);
  const [first, ...rest] = positionals;
  if (first === "send") options.command = "send";
  else if (first !== undefined && first !== "serve") {
    throw new UsageError(
      `unknown subcommand ${JSON.stringify(first)} (use serve or send)`,
    );
  }
  const command = options.command;
  for (const [flag, only] of Object.entries(ONLY_FOR)) {
    if (flag in values && only !== command) {
      throw new UsageError(`--${flag} is for ${only} only`);
    }
  }
  if (values.unix !== undefined) {
    options.unix = parseUnixPath(values, command);
  }
  if (values.hostname !== undefined) {
    options.hostname = parseHostname(values.hostname);
  }
  if (values.port !== undefined) {
    // A sender needs a real destination: nobody can receive on port 0.
    const min = command === "send" ? 1 : 0;
    options.port = parseInteger("--port", values.port, min, 65535);
  }
  for (const group of values.join ?? []) {
    options.join.push(parseGroup("--join", group));
  }
  if (options.join.length > 0) checkJoinBind(options.hostname, options.join);
  if (command === "send" && isMulticast(options.hostname)) {
    parseGroup("--hostname", options.hostname); // in our ranges, or a usage error
  }
  if (values.ttl !== undefined) {
    options.ttl = parseInteger("--ttl", values.ttl, 0, 255);
    checkGroupOnly("--ttl", options.hostname);
    if (options.hostname.includes(":")) {
      throw new UsageError(
        `--ttl is for IPv4 groups: Deno 2.9 cannot set the hop limit of ` +
          `IPv6 multicast (MulticastV6Membership has no setTTL); the ` +
          `kernel's default, 1, keeps it on this link`,
      );
    }
  }
  if (values["multicast-loopback"]) {
    if (command === "send") {
      checkGroupOnly("--multicast-loopback", options.hostname);
    } else if (options.join.length === 0) {
      throw new UsageError(
        `--multicast-loopback on serve goes with --join GROUP (it is about ` +
          `a group's datagrams sent from this host)`,
      );
    }
    options.multicastLoopback = true;
  }
  if (values.timeout !== undefined) {
    options.timeoutMs = parseInteger(
      "--timeout",
      values.timeout,
      1,
      MAX_TIMER_MS,
    );
  }
  if (values.chunk !== undefined) {
    options.chunk = parseInteger(
      "--chunk",
      values.chunk,
      1,
      MAX_UDP_PAYLOAD_IPV6,
    );
  }
  if (values.delay !== undefined) {
    if (values.chunk === undefined) {
      throw new UsageError(
        `--delay is for --chunk (a pause between datagrams)`,
      );
    }
    options.delayMs = parseInteger("--delay", values.delay, 0, MAX_TIMER_MS);
  }
  options.quiet = values.quiet ?? options.quiet;
  options.hex = values.hex ?? options.hex;
  options.trace = (values.trace ?? options.trace) || options.hex;
  if (command === "serve" && rest.length > 0) {
    throw new UsageError(
      `serve takes no MESSAGE, got ${JSON.stringify(rest[0])}`,
    );
  }
  if (command === "send" && rest.length > 0) options.message = rest.join(" ");
  return options;
}

/**
 * `--unix PATH`: a path names the socket, so the flags that name an IP
 * socket (and the IP-only ones) cannot come with it.
 */
function parseUnixPath(
  values: Record<string, unknown>,
  command: UdpOptions["command"],
): string {
  const path = values.unix as string;
  for (
    const flag of ["hostname", "port", "join", "ttl", "multicast-loopback"]
  ) {
    if (values[flag] !== undefined) {
      throw new UsageError(
        flag === "hostname" || flag === "port"
          ? `--unix PATH replaces --hostname and --port (a Unix socket is ` +
            `named by a path, not an address and port): give one or the other`
          : `--${flag} is for UDP (IP multicast), not --unix`,
      );
    }
  }
  if (path === "") throw new UsageError(`--unix needs a path`);
  if (command === "send" && path.endsWith("/")) {
    throw new UsageError(`--unix takes the socket's path, not a folder`);
  }
  return path;
}

/** Whether `host` is an IP multicast address: 224.0.0.0/4 or ff00::/8. */
export function isMulticast(host: string): boolean {
  if (isIpv4Literal(host)) {
    const first = Number(host.split(".")[0]);
    return first >= 224 && first <= 239;
  }
  return /^ff[0-9a-f]{2}:/i.test(host) && isIpv6Literal(host);
}

/** Whether `host` is a group this playground may use (see GROUP_RANGES). */
export function isGroup(host: string): boolean {
  return isIpv4Literal(host) && host.startsWith("239.255.") ||
    /^ff15:/i.test(host) && isIpv6Literal(host);
}

/**
 * Four numbers 0..255, without leading zeros (which some parsers, URL's
 * among them, read as octal: 010 is 8).
 */
function isIpv4Literal(host: string): boolean {
  const parts = host.split(".");
  return parts.length === 4 &&
    parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

/** A group address for `flag`, checked to be in our ranges. */
function parseGroup(flag: string, text: string): string {
  const host = text.replace(/^\[(.*)\]$/, "$1");
  if (!isGroup(host)) {
    const what = isMulticast(host)
      ? "a multicast group outside the ranges used here"
      : isIpv4Literal(host) || isIpv6Literal(host)
      ? "not a multicast group address"
      : "not an IP address";
    throw new UsageError(
      `${flag} ${JSON.stringify(text)}: ${what}; use a group from ` +
        `${GROUP_RANGES} (e.g. 239.255.0.1 or ff15::1), multicast's ` +
        `private ranges`,
    );
  }
  return canonicalHost(host);
}

/**
 * A group is received on a socket bound to the wildcard of its IP version
 * (or to the group itself, which could not send a reply): say so at once.
 */
function checkJoinBind(hostname: string, groups: string[]): void {
  const v6 = groups.filter((g) => g.includes(":"));
  if (v6.length > 0 && v6.length < groups.length) {
    throw new UsageError(
      `--join: one socket takes IPv4 or IPv6 groups, not both; run two servers`,
    );
  }
  const [wildcard, other, family] = v6.length > 0
    ? ["::", "0.0.0.0", "IPv6"]
    : ["0.0.0.0", "::", "IPv4"];
  const bound = isIpv4Literal(hostname) || isIpv6Literal(hostname)
    ? canonicalHost(hostname)
    : hostname;
  if (bound === other) {
    throw new UsageError(
      `--join ${groups[0]} is an ${family} group: it needs --hostname ` +
        `${wildcard} (the ${family} wildcard), not ${other}`,
    );
  }
  if (bound !== wildcard) {
    throw new UsageError(
      `--join ${groups[0]} needs --hostname ${wildcard} (the ${family} ` +
        `wildcard): a socket bound to ${hostname} receives only datagrams ` +
        `sent to ${hostname}, never the group's`,
    );
  }
}

/** `flag` changes only datagrams to a multicast group. */
function checkGroupOnly(flag: string, hostname: string): void {
  if (!isGroup(hostname)) {
    throw new UsageError(
      `${flag} is for sending to a multicast group (--hostname from ` +
        `${GROUP_RANGES}); Deno has no such option for other datagrams`,
    );
  }
}

/** An IPv6 literal, as URL parsing accepts it. */
function isIpv6Literal(host: string): boolean {
  try {
    return new URL(`http://[${host}]`).hostname !== "";
  } catch {
    return false;
  }
}

/** UDP needs `--unstable-net` in Deno 2: say so, instead of a TypeError. */
function requireUdp(): void {
  if (typeof Deno.listenDatagram !== "function") {
    throw new Error(
      "UDP needs the --unstable-net flag in Deno 2 (Deno.listenDatagram is " +
        "missing); run: deno run --allow-net=127.0.0.1 --unstable-net udp.ts",
    );
  }
}

// ----- serve -----

/** `udp.ts serve`: bind, say so, echo until SIGINT/SIGTERM, sum up. */
async function mainServe(options: UdpOptions): Promise<number> {
  const socket = options.unix !== null
    ? await listenUnixgram(options.unix)
    : listenUdp(options);
  // Catch Ctrl-C and SIGTERM before saying we listen: whoever reads that
  // line may stop us at once. Stopping closes the socket at once, so a
  // second signal has nothing left to hurry.
  const controller = new AbortController();
  const removeSignals = onStopSignals(() => controller.abort());
  try {
    // Members before the listening line: whoever reads it may send to the
    // group at once.
    try {
      await joinGroups(socket, options.join);
    } catch (err) {
      closeSocket(socket);
      throw err;
    }
    const proto = socket.addr.transport === "udp" ? "udp" : "unixgram";
    log(`${proto} listening on ${formatAddr(socket.addr)}`);
    for (const group of options.join) {
      log(
        `udp joined group ${group}: datagrams to ${
          formatAddr({
            hostname: group,
            port: (socket.addr as Deno.NetAddr).port,
          })
        } come here`,
      );
    }
    if (options.multicastLoopback) log(loopbackLine(Deno.build.os));
    const summary = await serveUdp(socket, {
      ...options,
      signal: controller.signal,
    });
    log(summaryLine(summary, proto));
  } finally {
    removeSignals();
  }
  return 0;
}

/**
 * What serve --multicast-loopback does on `os` (see {@link joinGroups}),
 * for the log: on Windows the member's option takes this host's datagrams
 * to the group; elsewhere the sender's option decides.
 */
export function loopbackLine(os: typeof Deno.build.os): string {
  const name = os === "linux" ? "Linux" : os === "darwin" ? "macOS" : os;
  return os === "windows"
    ? `udp multicast loopback on: the group's datagrams sent from this ` +
      `host come here too`
    : `udp multicast loopback on, which on ${name} changes nothing here: ` +
      `the sender's option decides whether its datagrams to the group ` +
      `reach this host's members (udp.ts send --multicast-loopback)`;
}

/** Close a socket that may be closed already (and remove its file). */
function closeSocket(socket: Deno.DatagramConn): void {
  const path = "path" in socket.addr ? socket.addr.path : null;
  try {
    socket.close();
  } catch { /* closed already */ }
  if (path) removeOwnSocketFile(path, null);
}

/**
 * Options for {@link serveUdp}. The command line's are applied by
 * {@link parseUdpArgs}; in-process, what is left out is off.
 */
export interface ServeUdpOptions
  extends Partial<Pick<UdpOptions, "quiet" | "trace" | "hex">> {
  /** Abort to stop: the socket is closed and the loop ends. */
  signal?: AbortSignal;
  /** Where log lines go (default: best-effort stdout). */
  log?: (line: string) => void;
  /** Where warnings go, such as a reply that failed (default: stderr). */
  warn?: (line: string) => void;
}

/** What {@link serveUdp} resolves with when it stops. */
export interface UdpSummary {
  /** Datagrams received. */
  datagrams: number;
  bytesIn: number;
  bytesOut: number;
  /** Replies Deno's permissions forbade (the grant lacks the sender). */
  forbidden: number;
  /** Replies that failed for another reason (unreachable, no buffer). */
  failed: number;
}

/** The summary line, as serve prints it when it stops. */
export function summaryLine(
  s: UdpSummary,
  proto: "udp" | "unixgram" = "udp",
): string {
  return `${proto} server stopped: ${s.datagrams} datagrams, ` +
    `${s.bytesIn} bytes in, ${s.bytesOut} bytes out` +
    (s.forbidden > 0
      ? `, ${s.forbidden} replies forbidden by Deno's permissions`
      : "") +
    (s.failed > 0 ? `, ${s.failed} replies failed` : "");
}

/**
 * The book-keeping of one {@link serveUdp}: counters, log lines, the
 * warnings about replies that failed (one per peer), the echo-loop guard,
 * and the replies it holds back and sends late.
 */
class UdpServer {
  readonly summary: UdpSummary = {
    datagrams: 0,
    bytesIn: 0,
    bytesOut: 0,
    forbidden: 0,
    failed: 0,
  };
  /** Our address, for log lines. */
  readonly local: string;
  /** "udp", or "unixgram" for a Unix datagram socket, for log lines. */
  readonly proto: "udp" | "unixgram";
  closed = false;
  #socket: Deno.DatagramConn;
  #print: (line: string) => void;
  #warn: (line: string) => void;
  #perDatagram: boolean;
  #trace: boolean;
  #hex: boolean;
  #guard: EchoLoopGuard;
  #late = new Set<Promise<void>>();
  // Peers told about a failed reply, the most recent MAX_REMEMBERED: under
  // traffic, one warning per datagram would grow stderr without bound.
  #failedPeers = new Set<string>();
  #failedPeersFull = false; // said so once: the rest only count
  // A Unix socket's file, and which file it is (its inode), to remove at
  // the end: Deno leaves a datagram socket's file behind when it closes.
  #file?: { path: string; ino: number | null };

  constructor(socket: Deno.DatagramConn, options: ServeUdpOptions) {
    this.#socket = socket;
    this.local = formatAddr(socket.addr);
    this.proto = socket.addr.transport === "udp" ? "udp" : "unixgram";
    if ("path" in socket.addr && socket.addr.path) {
      this.#file = { path: socket.addr.path, ino: inodeOf(socket.addr.path) };
    }
    this.#print = options.log ?? log;
    this.#warn = options.warn ?? warn;
    this.#trace = options.trace ?? false;
    this.#hex = options.hex ?? false;
    this.#perDatagram = !(options.quiet ?? false) || this.#trace;
    this.#guard = new EchoLoopGuard(
      socket.addr,
      this.#warn,
      (bytes, peer, count) => this.#answerLate(bytes, peer, count),
    );
  }

  /** Count and log a datagram received; whether to answer it now. */
  received(data: Uint8Array, peer: Deno.Addr): boolean {
    this.summary.datagrams++;
    this.summary.bytesIn += data.length;
    const refusal = this.#guard.refuse(data, peer);
    // One line per datagram, naming both ends and the size (with --hex,
    // the bytes under it). --trace wins over --quiet.
    if (this.#perDatagram) {
      const ends = `local ${this.local} remote ${formatAddr(peer)}`;
      const what = `${this.proto} datagram ${ends} ${data.length} bytes` +
        (refusal === null ? "" : `, not answered: ${refusal}`);
      traceBytes(this.#print, what, data, this.#hex);
    }
    return refusal === null;
  }

  /**
   * Count (and with --trace, log) a reply that went out: `count` bytes of
   * `bytes`. (No view of them is made unless traced: an object per
   * datagram is work for the garbage collector, measurable at 64 B.)
   */
  sent(count: number, bytes: Uint8Array, peer: Deno.Addr): void {
    this.summary.bytesOut += count;
    if (this.#trace) {
      const what = `${this.proto} sent ${count} bytes to ${formatAddr(peer)}`;
      traceBytes(this.#print, what, bytes.subarray(0, count), this.#hex);
    }
  }

  /** Count a reply that failed; warn once per peer (the summary has them all). */
  replyFailed(peer: Deno.Addr, err: unknown): void {
    if (err instanceof Deno.errors.NotCapable) this.summary.forbidden++;
    else this.summary.failed++;
    const key = formatAddr(peer);
    if (this.#failedPeers.has(key) || this.#failedPeersFull) return;
    if (this.#failedPeers.size === MAX_REMEMBERED) {
      // Full: one last line, then the summary alone counts (stderr bounded).
      this.#failedPeersFull = true;
      this.#warn(
        `warning: replies to ${MAX_REMEMBERED} peers failed; failures to any other peer are counted in the summary only`,
      );
      return;
    }
    this.#failedPeers.add(key);
    this.#warn(
      `warning: ${this.proto} reply to ${key} failed: ${
        explainReplyError(err, peer, this.#socket.addr)
      } (further failures to it are counted in the summary)`,
    );
  }

  /** Send `count` replies the guard held back from `peer`, now that it is quiet. */
  #answerLate(bytes: Uint8Array, peer: Deno.Addr, count: number): void {
    if (this.closed) return;
    if (this.#perDatagram) {
      this.#print(
        `${this.proto} ${
          formatAddr(peer)
        } was quiet for ${LOOP_PROBE_MS} ms: ` +
          `sending the ${count} ${count === 1 ? "reply" : "replies"} held back`,
      );
    }
    const sending = (async () => {
      for (let i = 0; i < count && !this.closed; i++) {
        try {
          const sent = await this.#socket.send(bytes, peer);
          this.sent(sent, bytes, peer);
        } catch (err) {
          if (!this.closed) this.replyFailed(peer, err);
        }
      }
    })();
    this.#late.add(sending);
    sending.finally(() => this.#late.delete(sending));
  }

  /**
   * Close the socket (a pending receive() ends), stop the guard's clock,
   * and remove our socket file, if it is still ours.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#guard.close();
    this.#socket.close();
    if (this.#file) removeOwnSocketFile(this.#file.path, this.#file.ino);
  }

  /** Close, wait for late replies being sent to end, and sum up. */
  async finish(): Promise<UdpSummary> {
    this.close();
    await Promise.all(this.#late);
    return this.summary;
  }
}

/** The inode of the file at `path` (null if it cannot be read). */
function inodeOf(path: string): number | null {
  try {
    return Deno.lstatSync(path).ino;
  } catch {
    return null;
  }
}

/**
 * Remove the socket file we bound at `path`, if it is still that file (the
 * same inode): a file someone put there since is not ours to remove.
 * Best effort: what cannot be removed stays, and the next start replaces
 * it as stale.
 */
function removeOwnSocketFile(path: string, ino: number | null): void {
  try {
    const info = Deno.lstatSync(path);
    if (!info.isSocket || (ino !== null && info.ino !== ino)) return;
    Deno.removeSync(path);
  } catch { /* gone already, or not ours to remove */ }
}

/** An ICMP "unreachable" surfacing as an error on an unconnected socket. */
function isIcmpError(err: unknown): boolean {
  return err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.ConnectionRefused;
}

/** Why a reply to `to` from `local` could not be sent, for the warning line. */
function explainReplyError(
  err: unknown,
  to: Deno.Addr,
  local: Deno.Addr,
): string {
  if ("path" in to) {
    // Over a Unix socket a reply is a send to the sender's path: Deno
    // checks the grants for it, and the OS the file's permissions.
    if (err instanceof Deno.errors.NotCapable) {
      const dir = to.path?.replace(/\/[^/]*$/, "") || ".";
      return `Deno has no permission to send to unixgram ${to.path} (a ` +
        `reply goes to the sender's path, which the grants must cover ` +
        `too); run with --allow-write=${dir} --allow-net=unix:${to.path}, ` +
        `or, for senders at random paths (udp.ts send binds one in the ` +
        `temporary folder), --allow-write=/tmp --allow-net`;
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      return `permission denied: the sender's socket file does not let ` +
        `this user write to it`;
    }
    if (
      err instanceof Deno.errors.ConnectionRefused ||
      err instanceof Deno.errors.NotFound
    ) {
      return `the sender's socket is gone (it closed before the reply)`;
    }
    return errorText(err);
  }
  if (err instanceof Deno.errors.NotCapable && "hostname" in to) {
    const hosts = [to.hostname];
    if ("hostname" in local) hosts.unshift(local.hostname);
    const grant = [...new Set(hosts)].map(allowNetHost).join(",");
    return `Deno has no permission to send to udp ${formatAddr(to)} (a ` +
      `reply goes to the sender's address, which the grant must name too); ` +
      `run with --allow-net=${grant}, or --allow-net to answer anyone`;
  }
  return errorText(err);
}

// ----- limits: the echo-loop guard -----

/** A loop is this many exact returns in a row, the first within... */
export const LOOP_RETURNS = 32;
/** ...this many ms of our reply (and the last one too, see the class)... */
export const LOOP_WINDOW_MS = 10;
/** ...the others within this many ms (later: the count starts again). */
export const LOOP_FORGET_MS = 1000;
/** A suspect's replies are held back until it is quiet this long (ms). */
export const LOOP_PROBE_MS = 100;
/** A peer caught looping gets no answer for this long. */
export const LOOP_MUTE_MS = 10_000;
/** Replies remembered (a fixed table: the memory never grows). */
const REPLY_SLOTS = 1024;
/** Suspects held back at once, each with one datagram (at most 64 KiB). */
const MAX_HELD = 64;
/** Peers muted at once, sources warned about, peers on trial, at most. */
const MAX_REMEMBERED = 1024;
/** The reason a held-back datagram gives in its log line. */
const HELD =
  `held back until the peer is quiet for ${LOOP_PROBE_MS} ms (an echo loop?)`;

/** Replies held back from one suspect: its bytes, sent `count` times. */
export interface Held {
  bytes: Uint8Array;
  peer: Deno.Addr;
  count: number;
  /** When the last of them arrived (ms, the clock `refuse` is given). */
  last: number;
  /** Its fingerprint, and its row in the reply table. */
  hash: number;
  row: number;
}

/**
 * Decides which datagrams an echo must not answer, because the answer could
 * feed an endless loop (the echo/chargen storm of CVE-1999-0103, CERT
 * CA-1996-01). Anyone can forge a UDP source address: a datagram "from"
 * another echo server makes the two answer each other forever. So:
 *
 * - source port 0: no socket can receive there; it is forged or broken;
 * - source port below 1024: where echo (7), daytime (13), chargen (19) and
 *   time (37) live; inetd and xinetd drop these too;
 * - this server's own address and port: the answer would come straight
 *   back to us, forever;
 * - another echo: a peer that sends back exactly what we just sent it,
 *   again and again. But a probe that repeats `ping`, or `send --chunk 64`
 *   of a file of zeros (64 equal datagrams, each sent right after the one
 *   before, without waiting for its reply), sends the same bytes again
 *   too. Two tests tell them apart:
 *   1. Speed. An echo sends our reply back within microseconds on loopback
 *      (~40 µs a round between two of these servers), well under a
 *      millisecond on a LAN. A run of returns starts only with one within
 *      {@link LOOP_WINDOW_MS} (10 ms) of our reply: a person, or a probe
 *      at 10 (or even 50) per second, is never that fast, and never
 *      counted. Once started, a return within {@link LOOP_FORGET_MS}
 *      counts (a busy machine may slow a loop down).
 *   2. Cause. At return {@link LOOP_RETURNS} - 1, the replies of those
 *      bytes to that peer are held back until it has been quiet for
 *      {@link LOOP_PROBE_MS}, then all sent. An echo only answers: it falls
 *      quiet with us, and returns the late replies within LOOP_WINDOW_MS:
 *      that is return LOOP_RETURNS, and the peer is muted for
 *      {@link LOOP_MUTE_MS}. A sender that does not wait for us keeps
 *      sending while we hold back, or has stopped: it gets every reply,
 *      late (the burst of zeros: when it is quiet; a stream at its own
 *      pace: at its next datagram), and is not muted. (A slow return never
 *      starts the test: it is answered, and the next fast one starts it.)
 *   A single loop so costs 2 x LOOP_RETURNS + 1 datagrams in all (the
 *   late reply and its return are the last two), and LOOP_PROBE_MS. More
 *   suspects at once than {@link MAX_HELD} are taken for loops untested.
 *
 * Each case is one warning line, never one per datagram. The cost per
 * datagram: one hash of the payload and one table slot; the memory is fixed.
 */
export class EchoLoopGuard {
  #host: string;
  #port: number;
  #wildcard: boolean;
  #warn: (line: string) => void;
  #answerLate?: (bytes: Uint8Array, to: Deno.Addr, count: number) => void;
  #seed = crypto.getRandomValues(new Uint32Array(1))[0];
  // The reply table, a row of 4 numbers per slot (one cache line): the
  // fingerprint of a reply and its peer, the peer's port, when we sent it,
  // and how many exact returns in a row led to it. Slot: fingerprint & mask.
  #table = new Int32Array(REPLY_SLOTS * 4);
  #start = Date.now();
  #muted = new Map<string, number>();
  #warned = new Set<string>();
  // Suspects whose replies are held back, and those whose held replies
  // just went out (until when an instant return proves an echo).
  #held = new Map<string, Held>();
  #trials = new Map<string, number>();
  #timer?: ReturnType<typeof setTimeout>;

  /**
   * `answerLate` sends the replies held back from a suspect once it is
   * quiet (the guard keeps the clock for it); without it, call
   * {@link release} yourself.
   */
  constructor(
    local: Deno.Addr,
    warnLine: (line: string) => void = warn,
    answerLate?: (bytes: Uint8Array, to: Deno.Addr, count: number) => void,
  ) {
    [this.#host, this.#port] = local.transport === "udp"
      ? [local.hostname, local.port]
      : ["", -1];
    this.#wildcard = this.#host === "0.0.0.0" || this.#host === "::";
    this.#warn = warnLine;
    this.#answerLate = answerLate;
  }

  /**
   * Whether to answer `data` from `from` now: null to answer (the guard then
   * remembers the reply), or why not, in a few words for the log line.
   */
  refuse(
    data: Uint8Array,
    from: Deno.Addr,
    now = Date.now(),
  ): string | null {
    const [hostname, port] = peerParts(from);
    if (from.transport !== "udp") {
      // A Unix datagram socket: no ports, and no forged sources: the kernel
      // names the sender by the path its socket is bound to, and only that
      // socket can send from it. So nobody can make us answer another
      // echo, and there is no loop to look for. But a sender that bound no
      // path has no name: there is nowhere to send a reply.
      if (hostname !== "") return null;
      return this.#once(
        "unnamed",
        from,
        "the sender's socket has no name (it bound no path), so a reply " +
          "has nowhere to go; a sender must bind a path of its own first " +
          "(udp.ts send does)",
      );
    }
    const refused = this.#refuseSource(from, hostname, port);
    if (refused !== null) return refused;
    if (this.#muted.size > 0) {
      const peer = `${hostname} ${port}`;
      const until = this.#muted.get(peer);
      if (until !== undefined) {
        if (now < until) return "echo loop, muted";
        this.#muted.delete(peer);
      }
    }
    // Is this exactly what we sent this peer a moment ago, coming back?
    const hash = fingerprint(data, this.#seed ^ peerHash(hostname, port));
    // The key of the maps below, made only when one of them holds
    // something: a new string per datagram, hashed for each lookup, cost
    // more than the rest of this function.
    const key = this.#trials.size > 0 || this.#held.size > 0
      ? `${hash} ${hostname} ${port}`
      : "";
    // The replies we held back went out just now: straight back is an echo.
    if (this.#trials.size > 0) {
      const until = this.#trials.get(key);
      if (until !== undefined) {
        this.#trials.delete(key);
        if (now <= until) return this.#loop(from, now, LOOP_RETURNS);
      }
    }
    // A suspect sends them again while we hold back: it does not wait for
    // us. Back to back (a burst, or several loops of the same bytes) it is
    // held back too, until it is quiet; at its own pace (a stream, 50 a
    // second, say), it is no echo: its replies go out now, and this one too.
    const held = this.#held.size > 0 ? this.#held.get(key) : undefined;
    if (held !== undefined) {
      if (now - held.last <= LOOP_WINDOW_MS) {
        held.count++;
        held.last = now;
        return HELD;
      }
      this.#held.delete(key);
      this.#answerLate?.(held.bytes, held.peer, held.count);
      if (this.#table[held.row] === hash) this.#table[held.row + 3] = 0;
    }
    const row = (hash & (REPLY_SLOTS - 1)) * 4;
    const table = this.#table;
    // Milliseconds since the guard started, as an int32 (it wraps after 24
    // days; the subtraction below is right across the wrap).
    const ms = (now - this.#start) | 0;
    let returns = 0;
    let fast = false;
    if (table[row] === hash && table[row + 1] === port) {
      const since = (ms - table[row + 2]) | 0;
      const run = table[row + 3];
      fast = since <= LOOP_WINDOW_MS;
      if (fast || (run > 0 && since <= LOOP_FORGET_MS)) returns = run + 1;
    }
    // Only a fast return starts the test: a slow one may be the other
    // side's late replies, which it waits for us to answer.
    if (fast && returns >= LOOP_RETURNS - 1) {
      if (this.#held.size >= MAX_HELD) {
        return this.#loop(from, now, returns + 1);
      }
      table[row + 3] = returns;
      const bytes = data.slice();
      const held = { bytes, peer: from, count: 1, last: now, hash, row };
      this.#held.set(key || `${hash} ${hostname} ${port}`, held);
      this.#arm(now);
      return HELD;
    }
    // We are going to answer: remember the reply (it is `data` itself).
    table[row] = hash;
    table[row + 1] = port;
    table[row + 2] = ms;
    table[row + 3] = returns;
    return null;
  }

  /** The UDP sources never answered: port 0, below 1024, our own. */
  #refuseSource(
    from: Deno.NetAddr,
    hostname: string,
    port: number,
  ): string | null {
    if (port === 0) {
      return this.#once(
        "port 0",
        from,
        "source port 0 (no socket can receive there: a forged or broken sender)",
      );
    }
    if (port < 1024) {
      return this.#once(
        "port below 1024",
        from,
        "source port below 1024, where echo, chargen, daytime and time " +
          "live: answering could start an endless loop (CVE-1999-0103); " +
          "inetd and xinetd drop these too",
      );
    }
    if (
      port === this.#port && (hostname === this.#host || this.#wildcard)
    ) {
      return this.#once(
        "own address",
        from,
        "that is this server's own address and port (a forged source): " +
          "the answer would come straight back, forever",
      );
    }
    return null;
  }

  /**
   * The replies held back from suspects that have been quiet for
   * {@link LOOP_PROBE_MS} by `now`: they are to be sent now (the guard's
   * own clock passes them to `answerLate`). The same bytes back within
   * {@link LOOP_WINDOW_MS} then prove an echo.
   */
  release(now = Date.now()): Held[] {
    const due: Held[] = [];
    for (const [key, held] of this.#held) {
      if (now - held.last < LOOP_PROBE_MS) continue;
      this.#held.delete(key);
      const [hostname, port] = peerParts(held.peer);
      if ((this.#muted.get(`${hostname} ${port}`) ?? 0) > now) continue;
      if (this.#trials.size >= MAX_REMEMBERED) {
        this.#trials.delete(this.#trials.keys().next().value!);
      }
      this.#trials.set(key, now + LOOP_WINDOW_MS);
      // A return is measured from the late replies.
      const table = this.#table;
      if (table[held.row] === held.hash && table[held.row + 1] === port) {
        table[held.row + 2] = (now - this.#start) | 0;
      }
      due.push(held);
    }
    return due;
  }

  /** Stop the clock and drop the replies held back. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#held.clear();
  }

  /** Keep a clock running while replies are held back (with `answerLate`). */
  #arm(now: number): void {
    if (this.#answerLate === undefined || this.#timer !== undefined) return;
    let next = Infinity;
    for (const held of this.#held.values()) {
      next = Math.min(next, held.last + LOOP_PROBE_MS);
    }
    if (next === Infinity) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const now = Date.now();
      for (const held of this.release(now)) {
        this.#answerLate?.(held.bytes, held.peer, held.count);
      }
      this.#arm(now);
    }, Math.max(1, next - now));
  }

  /** An echo loop: mute the peer, with one warning. */
  #loop(from: Deno.Addr, now: number, returns: number): string {
    if (this.#muted.size >= MAX_REMEMBERED) {
      // Full: forget the oldest mute (a Map keeps insertion order).
      this.#muted.delete(this.#muted.keys().next().value!);
    }
    const [hostname, port] = peerParts(from);
    this.#muted.set(`${hostname} ${port}`, now + LOOP_MUTE_MS);
    this.#warn(
      `warning: ${protoOf(from)} ${
        formatAddr(from)
      } sent back exactly what it was ` +
        `sent, ${returns} times in a row: an echo loop (another echo ` +
        `server?); not answering it for ${LOOP_MUTE_MS / 1000} s`,
    );
    return "echo loop, muted";
  }

  /** Refuse for `rule`, with one warning per rule and source. */
  #once(rule: string, from: Deno.Addr, why: string): string {
    const key = `${rule} ${formatAddr(from)}`;
    if (!this.#warned.has(key) && this.#warned.size <= MAX_REMEMBERED) {
      this.#warned.add(key);
      this.#warn(
        this.#warned.size > MAX_REMEMBERED
          ? `warning: udp: more than ${MAX_REMEMBERED} sources not answered; ` +
            `no more warnings about them`
          : `warning: ${protoOf(from)}: not answering ${
            formatAddr(from)
          }: ${why}`,
      );
    }
    return rule === "own address"
      ? "from this server's own address"
      : rule === "unnamed"
      ? "the sender has no name"
      : `source ${rule}`;
  }
}

/**
 * A peer as the guard's tables key it: address and port, or over a Unix
 * socket its path and {@link UNIX_PEER_PORT}.
 */
function peerParts(from: Deno.Addr): [string, number] {
  if (from.transport === "udp") return [from.hostname, from.port];
  return ["path" in from ? from.path ?? "" : "", UNIX_PEER_PORT];
}

/** Stands for the port of a Unix socket's peer: none, and no real port. */
const UNIX_PEER_PORT = 65_536;

/** "udp", or "unixgram" for a Unix datagram address, for log lines. */
function protoOf(addr: Deno.Addr): "udp" | "unixgram" {
  return addr.transport === "udp" ? "udp" : "unixgram";
}

/** A 32-bit hash of a peer's address and port, to seed {@link fingerprint}. */
function peerHash(hostname: string, port: number): number {
  let h = Math.imul(port, 0x9e3779b1);
  for (let i = 0; i < hostname.length; i++) {
    h = Math.imul(h ^ hostname.charCodeAt(i), 0x5bd1e995);
  }
  return h;
}

/**
 * A 32-bit fingerprint of `data`: its length, its first 32 bytes, its last
 * 4 and 8 words of 4 bytes spread over the rest. Enough to tell a datagram
 * that comes back unchanged from the next one of a conversation (which
 * differs in its length, its header or somewhere in its body), at a fixed
 * cost of at most 17 reads, whatever the size. `seed` differs per process,
 * so two servers never share table slots for the same bytes.
 */
export function fingerprint(data: Uint8Array, seed = 0): number {
  const n = data.length;
  let h = Math.imul(seed ^ n, 0x5bd1e995);
  if (n < 32) {
    for (let i = 0; i < n; i++) h = Math.imul(h ^ data[i], 0x5bd1e995);
    return h ^ (h >>> 15);
  }
  const view = new DataView(data.buffer, data.byteOffset, n);
  for (let i = 0; i < 32; i += 4) {
    h = Math.imul(h ^ view.getInt32(i, true), 0x5bd1e995);
  }
  const step = Math.max(4, ((n - 32) >>> 3) & ~3);
  for (let i = 32; i + 4 <= n; i += step) {
    h = Math.imul(h ^ view.getInt32(i, true), 0x5bd1e995);
  }
  h = Math.imul(h ^ view.getInt32(n - 4, true), 0x5bd1e995);
  return h ^ (h >>> 15);
}

// ----- send -----

/** `udp.ts send`: MESSAGE or stdin, as one datagram or --chunk pieces. */
async function mainSend(options: UdpOptions): Promise<number> {
  const payload = options.message !== null
    ? new TextEncoder().encode(options.message)
    : await readStdin(
      options.chunk > 0 ? MAX_STDIN_BYTES : MAX_UDP_PAYLOAD_IPV6,
    );
  const datagrams = splitPayload(payload, options.chunk);
  const sendOptions: SendOptions = {
    timeoutMs: options.timeoutMs,
    delayMs: options.delayMs,
    trace: options.trace ? tracer(warn, "", options.hex) : undefined,
    // The reply is data: raw bytes to stdout, like nc.
    onReply: (reply) => writeStdout(reply),
  };
  if (options.unix !== null) {
    await sendUnixDatagrams(options.unix, datagrams, sendOptions);
    return 0;
  }
  const { hostname, port } = options;
  if (!isGroup(hostname) && !isBroadcast(hostname)) {
    await sendDatagrams(hostname, port, datagrams, sendOptions);
    return 0;
  }
  // One datagram, many receivers: each reply on a line of its own, with
  // the address it came from (the payload's bytes as they are).
  const replies = await sendDatagrams(hostname, port, datagrams, {
    ...sendOptions,
    toMany: true,
    ttl: options.ttl ?? undefined,
    multicastLoopback: options.multicastLoopback,
    onReply: (reply, from) => {
      const head = new TextEncoder().encode(`from ${formatAddr(from)}: `);
      const nl = reply.at(-1) === 0x0a ? 0 : 1;
      const line = new Uint8Array(head.length + reply.length + nl);
      line.set(head);
      line.set(reply, head.length);
      if (nl) line[line.length - 1] = 0x0a;
      return writeStdout(line);
    },
  });
  const senders = new Set(replies.map((r) => formatAddr(r.remote))).size;
  warn(
    `${replies.length} ${replies.length === 1 ? "reply" : "replies"} from ` +
      `${senders} ${senders === 1 ? "host" : "hosts"} within ` +
      `${options.timeoutMs} ms (to ${
        isGroup(hostname) ? "the group" : "the broadcast address"
      } udp ${formatAddr({ hostname, port })})`,
  );
  return 0;
}

/**
 * All of stdin, byte for byte (not text: a NUL or a byte that is not UTF-8
 * stays as it is), up to `limit` bytes; more is an Error.
 */
async function readStdin(limit: number): Promise<Uint8Array> {
  if (Deno.stdin.isTerminal()) {
    warn("(no MESSAGE: type the datagram, then Ctrl-D to send it)");
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await Deno.stdin.read(buffer);
    if (n === null) break;
    total += n;
    if (total > limit) {
      throw new Error(
        limit < MAX_STDIN_BYTES
          ? `stdin has more than ${limit} bytes, more than one UDP datagram ` +
            `can carry; send less, or cut it into datagrams with --chunk N`
          : `stdin has more than ${limit} bytes; send at most that much`,
      );
    }
    chunks.push(buffer.slice(0, n));
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Cut `payload` into datagrams of at most `chunk` bytes (0: one datagram).
 * An empty payload is one empty datagram. A datagram bigger than any UDP
 * datagram can be is an Error that says what to do.
 */
export function splitPayload(payload: Uint8Array, chunk: number): Uint8Array[] {
  if (chunk <= 0) {
    if (payload.length > MAX_UDP_PAYLOAD_IPV6) {
      throw new Error(doesNotFit(payload.length));
    }
    return [payload];
  }
  const datagrams: Uint8Array[] = [];
  for (let at = 0; at < payload.length; at += chunk) {
    datagrams.push(payload.subarray(at, at + chunk));
  }
  return datagrams.length > 0 ? datagrams : [payload];
}

/** The sentence for a datagram of `size` bytes that no UDP datagram holds. */
function doesNotFit(size: number): string {
  return `${size} bytes do not fit in one UDP datagram (at most ` +
    `${MAX_UDP_PAYLOAD_IPV4} bytes over IPv4, ${MAX_UDP_PAYLOAD_IPV6} ` +
    `over IPv6); send less, or cut it into datagrams with --chunk N`;
}

/** Bind the sending socket, with errors that name both grants send needs. */
function listenUdpForSending(
  hostname: string,
  port: number,
  options: { multicastLoopback?: boolean },
): Deno.DatagramConn {
  requireUdp();
  const bindHost = localAddressFor(hostname);
  try {
    return Deno.listenDatagram({
      transport: "udp",
      hostname: bindHost,
      port: 0,
      // IP_MULTICAST_LOOP: whether our datagrams to a group reach this
      // host's own members. Deno turns it off unless asked.
      loopback: options.multicastLoopback ?? false,
    });
  } catch (err) {
    throw new Error(explainSendError(err, hostname, port), { cause: err });
  }
}

/**
 * The local address for a sending socket. Loopback destinations get a
 * loopback socket (so `--allow-net=127.0.0.1` is enough); anything else gets
 * the wildcard of the right family and the OS picks the outgoing interface.
 */
function localAddressFor(hostname: string): string {
  if (hostname.includes(":")) return hostname === "::1" ? "::1" : "::";
  if (/^127\./.test(hostname)) return "127.0.0.1";
  if (hostname.toLowerCase() === "localhost") return "localhost";
  return "0.0.0.0";
}

/** One sentence for a failure of `send`, naming the destination. */
function explainSendError(
  err: unknown,
  hostname: string,
  port: number,
): string {
  const where = `udp ${formatAddr({ hostname, port })}`;
  const message = errorText(err);
  if (err instanceof Deno.errors.NotCapable) {
    // Sending needs two grants when the socket binds a wildcard: the local
    // address it binds, and the destination.
    const bindHost = localAddressFor(hostname);
    const also = bindHost === hostname
      ? ""
      : ` (the sending socket binds ${bindHost} too)`;
    return `Deno has no permission to send to ${where}${also}; run again ` +
      `with --allow-net=${grantsFor(hostname)}`;
  }
  if (/lookup address|Name or service not known|No address/i.test(message)) {
    return `cannot send to ${where}: the name ${
      JSON.stringify(hostname)
    } does not resolve to an address; check the spelling`;
  }
  if (/Message too long|os error (90|40)\b/.test(message)) {
    return `cannot send to ${where}: the datagram is too big for the ` +
      `network (${message}); send less, or cut it into datagrams with --chunk N`;
  }
  if (
    err instanceof Deno.errors.AddrNotAvailable ||
    /Network is unreachable|os error 101\b/.test(message)
  ) {
    return `cannot send to ${where}: no route from this machine (${message})` +
      (isGroup(hostname)
        ? `; a group is sent out of the interface of the route to it (a ` +
          `route to 224.0.0.0/4 or ff00::/8, or the default route)`
        : "");
  }
  return `sending to ${where} failed: ${message}`;
}

/** One sentence for a failure of `send --unix PATH`. */
function explainUnixSendError(err: unknown, path: string): string {
  const where = `unixgram ${path}`;
  if (err instanceof Deno.errors.NotCapable) {
    const abs = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
    const dir = abs.replace(/\/[^/]*$/, "") || "/";
    return `Deno has no permission to send to ${where}: a sender needs ` +
      `write and net grants on that path, and read, write and net on the ` +
      `path it binds for the reply, at random in the temporary folder ` +
      `(/tmp, or $TMPDIR), which Deno's exact unix: grant cannot name; ` +
      `run again with --allow-read=/tmp --allow-write=${
        /^\/tmp(\/|$)/.test(dir) ? "/tmp" : `${dir},/tmp`
      } --allow-net`;
  }
  if (err instanceof Deno.errors.NotFound) {
    return `cannot send to ${where}: no such file (is the server running? ` +
      `start it with: udp.ts serve --unix ${path})`;
  }
  if (err instanceof Deno.errors.ConnectionRefused) {
    const info = (() => {
      try {
        return Deno.lstatSync(path);
      } catch {
        return null;
      }
    })();
    if (info && !info.isSocket) {
      return `cannot send to ${where}: ${
        info.isDirectory ? "that is a directory" : "that is a regular file"
      }, not a socket`;
    }
    return `cannot send to ${where}: nobody is bound to it (a stale socket ` +
      `file, left by a server that stopped without removing it); start ` +
      `the server again: it replaces the file`;
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return `cannot send to ${where}: permission denied: the socket file's ` +
      `mode (or a folder above it) does not let this user write to it; ` +
      `\`ls -l ${path}\` shows who may (the owner decides who can send)`;
  }
  if (/Protocol wrong type|os error 91\b/.test(errorText(err))) {
    return `cannot send to ${where}: that is a stream socket (server.ts or ` +
      `http.ts --unix?), not a datagram one; use client.ts --unix ${path}`;
  }
  return `cannot send to ${where}: ${unixReason(err, path)}`;
}

/**
 * Why `group` could not be joined (serve --join, or send --ttl, which joins
 * to set the TTL) on a socket bound to `local`.
 */
function explainJoinError(
  err: unknown,
  group: string,
  local: Deno.Addr,
): string {
  const message = errorText(err);
  const where = `cannot join the group ${group} on udp ${formatAddr(local)}`;
  if (/No such device|os error 19\b/.test(message)) {
    const net = group.includes(":") ? "ff00::/8" : "224.0.0.0/4";
    return `${where}: no interface for it (${message}): the kernel picks ` +
      `the interface by its route to the group, and this host has no ` +
      `route to ${net} (nor a default route); add one, e.g. ip route add ` +
      `${net} dev IFACE`;
  }
  if (/No buffer space|os error 105\b/.test(message)) {
    return `${where}: too many groups on one socket (${message}); Linux ` +
      `allows net.ipv4.igmp_max_memberships, 20 by default`;
  }
  if (err instanceof Deno.errors.NotCapable) {
    return `Deno has no permission to join ${group}; run again with ` +
      `--allow-net=${allowNetHost(group)}`;
  }
  return `${where}: ${message}`;
}

/**
 * Whether `host` is a broadcast address: 255.255.255.255 (this link), or
 * a subnet's, the one with every host bit set. Which bits are host bits
 * depends on the subnet's prefix: with --allow-sys=networkInterfaces the
 * machine's own interfaces say; without it, an address ending in .255
 * (the broadcast address of any /24, or shorter, network) counts.
 */
export function isBroadcast(host: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (!m || isMulticast(host)) return false;
  if (host === "255.255.255.255" || m[4] === "255") return true;
  const allowed = Deno.permissions.querySync?.({
    name: "sys",
    kind: "networkInterfaces",
  }).state === "granted";
  if (!allowed) return false;
  const asNumber = (a: string) =>
    a.split(".").reduce((n, b) => n * 256 + Number(b), 0);
  const target = asNumber(host);
  return Deno.networkInterfaces().some((i) => {
    if (i.family !== "IPv4") return false;
    const mask = asNumber(i.netmask);
    const broadcast = (asNumber(i.address) | ~mask) >>> 0;
    return mask !== 0xffffffff && broadcast === target;
  });
}

/** The `--allow-net` list that `send` to `hostname` needs. */
function grantsFor(hostname: string): string {
  const hosts = new Set([localAddressFor(hostname), hostname]);
  return [...hosts].map(allowNetHost).join(",");
}

/**
 * Which datagrams count as the reply: from the port we sent to, and from
 * the address we sent to. A wildcard destination (0.0.0.0, ::) reaches this
 * machine, which answers from a real address (127.0.0.1): accept any. A name
 * may resolve to several addresses: accept any, as `nc -u` does.
 */
function replyFilter(
  hostname: string,
  port: number,
): (from: Deno.Addr) => boolean {
  const literal = /^\d{1,3}(\.\d{1,3}){3}$/.test(hostname) ||
    hostname.includes(":");
  const expected = literal ? canonicalHost(hostname) : null;
  const anyHost = expected === null || expected === "0.0.0.0" ||
    expected === "::";
  return (from) =>
    from.transport === "udp" && from.port === port &&
    (anyHost || canonicalHost(from.hostname) === expected);
}

/** The canonical spelling of an IP literal (`0:0::1` is `::1`). */
function canonicalHost(hostname: string): string {
  return new URL(`http://${allowNetHost(hostname)}`).hostname.replace(
    /^\[|\]$/g,
    "",
  );
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
