/**
 * demo.ts: the whole lesson in one command. A TCP echo server and a UDP echo
 * server listen on ONE port number at the same time; a TCP client and a UDP
 * sender each talk to that port; every step is printed.
 *
 * What it shows:
 * - The OS tells sockets apart by protocol as well as address and port, so
 *   TCP port 41234 and UDP port 41234 are two different sockets.
 * - TCP: a connection (a socket pair that both ends know), bytes as a
 *   stream, and an end (the half-close, then the server's close).
 * - UDP: no connection at all; one datagram out, one datagram back.
 * - Stream vs datagram: "hello" sent as five 1-byte pieces arrives over
 *   TCP as however many reads the timing made (often one), and over UDP as
 *   exactly five datagrams. The servers run with `--trace` to show it.
 *
 * Run it:
 *
 *   deno task demo
 *
 * or, outside this folder's deno.json (which turns on --unstable-net):
 *
 *   deno run --allow-net=127.0.0.1 --unstable-net demo.ts
 *
 * Try next: run the same by hand in separate terminals, as the README shows:
 * `server.ts --port 9000` and `udp.ts --port 9000`, then `client.ts` and
 * `udp.ts send` against port 9000.
 *
 * Unlike the three scripts, this file imports them: it reuses their servers
 * and clients rather than copying them.
 */
import { exchange, type Trace } from "./client.ts";
import { errorText, listenTcp, serveTcp } from "./server.ts";
import {
  formatAddr,
  listenUdp,
  sendDatagram,
  sendDatagrams,
  serveUdp,
} from "./udp.ts";

/** A TCP listener and a UDP socket bound to the same host and port. */
export interface SharedPort {
  tcp: Deno.TcpListener;
  udp: Deno.DatagramConn;
  port: number;
}

/**
 * Bind TCP on a free port (port 0: the OS picks), then UDP on the same
 * number. Another program may already hold that UDP port (the OS only
 * promised the TCP one was free), so on a clash we let go and try again.
 */
export function listenSharedPort(
  hostname = "127.0.0.1",
  attempts = 20,
): SharedPort {
  for (let attempt = 1;; attempt++) {
    const tcp = listenTcp({ hostname, port: 0 });
    const port = tcp.addr.port;
    try {
      const udp = listenUdp({ hostname, port });
      return { tcp, udp, port };
    } catch (err) {
      tcp.close();
      const inUse = err instanceof Error &&
        err.cause instanceof Deno.errors.AddrInUse;
      if (!inUse || attempt >= attempts) throw err;
    }
  }
}

/** What {@link runDemo} found: the numbers the lesson is about. */
export interface DemoResult {
  port: number;
  tcp: { local: string; remote: string; bytesOut: number; bytesIn: number };
  udp: { local: string; remote: string; bytesOut: number; bytesIn: number };
  /** Part 4: five 1-byte pieces, as TCP writes and as UDP datagrams. */
  stream: {
    tcpWrites: number;
    /** The sizes of the server's reads of those five bytes. */
    tcpReads: number[];
    udpSent: number;
    /** The sizes of the datagrams the UDP server received. */
    udpReceived: number[];
  };
}

/** Show bytes as text when they are printable, for the demo's output. */
function show(bytes: Uint8Array): string {
  return JSON.stringify(new TextDecoder().decode(bytes));
}

/**
 * Run the demo: both servers on one port, one TCP exchange, one UDP
 * datagram, then stop both. `print` gets every output line.
 */
export async function runDemo(
  print: (line: string) => void = console.log,
  hostname = "127.0.0.1",
): Promise<DemoResult> {
  const { tcp, udp, port } = listenSharedPort(hostname);
  const stop = new AbortController();
  // Every line says who is speaking: one of the servers or one of the
  // clients. The demo also listens to the servers' lines to wait for a
  // connection's close and to count reads and datagrams.
  const closed = new Map<number, () => void>();
  const closeSeen = (id: number) =>
    new Promise<void>((resolve) => closed.set(id, resolve));
  const tcpReads = new Map<number, number[]>();
  const tcpLog = (line: string) => {
    print(`tcp server | ${line}`);
    const read = /^tcp #(\d+) read (\d+) bytes$/.exec(line);
    if (read) {
      const id = Number(read[1]);
      tcpReads.set(id, [...tcpReads.get(id) ?? [], Number(read[2])]);
    }
    const close = /^tcp close .* \(#(\d+)\)/.exec(line);
    if (close) closed.get(Number(close[1]))?.();
  };
  const udpSizes: number[] = [];
  const udpLog = (line: string) => {
    print(`udp server | ${line}`);
    const datagram = /^udp datagram .* (\d+) bytes$/.exec(line);
    if (datagram) udpSizes.push(Number(datagram[1]));
  };

  print(`A TCP server and a UDP server, both on ${formatAddr(tcp.addr)}:`);
  print(`tcp server | tcp listening on ${formatAddr(tcp.addr)}`);
  print(`udp server | udp listening on ${formatAddr(udp.addr)}`);
  const tcpServer = serveTcp(tcp, {
    signal: stop.signal,
    log: tcpLog,
    trace: true, // `--trace`: a line per read and per write
  });
  const udpServer = serveUdp(udp, { signal: stop.signal, log: udpLog });

  try {
    const encoder = new TextEncoder();
    print("");
    print(
      "1. TCP: connect (a handshake makes the connection), send, half-close,",
    );
    print("   then read until the server closes.");
    const tcpMessage = encoder.encode("hello over TCP");
    const firstClosed = closeSeen(1);
    const t = await exchange(hostname, port, tcpMessage);
    // The server logs the close once it has closed; wait for that line so
    // the output reads in order.
    await firstClosed;
    const tcpResult = {
      local: formatAddr(t.local),
      remote: formatAddr(t.remote),
      bytesOut: tcpMessage.length,
      bytesIn: t.reply.length,
    };
    print(
      `tcp client | socket pair: local ${tcpResult.local}, remote ${tcpResult.remote}`,
    );
    print(
      `tcp client | client -> server ${tcpResult.bytesOut} bytes ${
        show(tcpMessage)
      }`,
    );
    print(
      `tcp client | server -> client ${tcpResult.bytesIn} bytes ${
        show(t.reply)
      }`,
    );

    print("");
    print("2. UDP: no connection, no handshake: one datagram out, one back.");
    const udpMessage = encoder.encode("hello over UDP");
    const u = await sendDatagram(hostname, port, udpMessage, 5000);
    const udpResult = {
      local: formatAddr(u.local),
      remote: formatAddr(u.remote),
      bytesOut: udpMessage.length,
      bytesIn: u.reply.length,
    };
    print(
      `udp sender | addresses: local ${udpResult.local}, remote ${udpResult.remote}`,
    );
    print(
      `udp sender | client -> server 1 datagram, ${udpResult.bytesOut} bytes ${
        show(udpMessage)
      }`,
    );
    print(
      `udp sender | server -> client 1 datagram, ${udpResult.bytesIn} bytes ${
        show(u.reply)
      }`,
    );

    print("");
    print(`3. Port ${port} served TCP and UDP at the same time. The OS files`);
    print(
      "   every socket under its protocol as well as its address and port,",
    );
    print(`   so tcp ${formatAddr(tcp.addr)} and udp ${formatAddr(udp.addr)}`);
    print("   are two sockets; each server saw only its own protocol.");

    print("");
    print(
      '4. Stream vs datagram: "hello" sent as five 1-byte pieces, both ways.',
    );
    const hello = encoder.encode("hello");
    const pieces = Array.from(hello, (byte) => Uint8Array.of(byte));
    let writes = 0;
    const trace: Trace = (what) => {
      if (what.startsWith("wrote")) writes++;
    };
    const secondClosed = closeSeen(2);
    await exchange(hostname, port, hello, { chunk: 1, trace });
    await secondClosed;
    const reads = tcpReads.get(2) ?? [];
    print(
      `tcp client | ${writes} writes of 1 byte; the server read them in ${reads.length} ${
        reads.length === 1 ? "read" : "reads"
      } (${reads.join(" + ")} bytes)`,
    );
    const before = udpSizes.length;
    await sendDatagrams(hostname, port, pieces, { timeoutMs: 5000 });
    const received = udpSizes.slice(before);
    print(
      `udp sender | ${pieces.length} datagrams of 1 byte; the server received ${received.length} datagrams (${
        received.join(" + ")
      } bytes)`,
    );
    print("   TCP is a byte stream: it keeps the bytes and their order, not");
    print("   where one write ended: a read returns whatever has arrived.");
    print("   UDP keeps each datagram whole and apart: five in, five out.");
    print("");
    return {
      port,
      tcp: tcpResult,
      udp: udpResult,
      stream: {
        tcpWrites: writes,
        tcpReads: reads,
        udpSent: pieces.length,
        udpReceived: received,
      },
    };
  } finally {
    stop.abort();
    const [ts, us] = await Promise.all([tcpServer, udpServer]);
    print(
      `tcp server | tcp server stopped: ${ts.connections} connections, ` +
        `${ts.refused} refused, ${ts.bytesIn} bytes in, ${ts.bytesOut} bytes out`,
    );
    print(
      `udp server | udp server stopped: ${us.datagrams} datagrams, ` +
        `${us.bytesIn} bytes in, ${us.bytesOut} bytes out`,
    );
  }
}

if (import.meta.main) {
  try {
    await runDemo();
  } catch (err) {
    console.error(`error: ${errorText(err)}`);
    Deno.exit(1);
  }
}
