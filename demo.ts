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
 * `--diagram` also prints the exchange it just made as a Mermaid sequence
 * diagram (paste it into Markdown: GitHub draws it), with the real ports
 * and every read and write at its real size.
 *
 * Try next: run the same by hand in separate terminals, as the README shows:
 * `server.ts --port 9000` and `udp.ts --port 9000`, then `client.ts` and
 * `udp.ts send` against port 9000.
 *
 * Unlike the three scripts, this file imports them: it reuses their servers
 * and clients rather than copying them.
 */
import { parseArgs } from "node:util";
import { exchange, type Trace } from "./client.ts";
import { errorText, listenTcp, serveTcp } from "./server.ts";
import { formatAddr, listenUdp, sendDatagrams, serveUdp } from "./udp.ts";

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
  /** Every step the demo saw, in order: what {@link sequenceDiagram} draws. */
  steps: Step[];
  /** Each actor's address:port, as the sockets reported them. */
  ends: Record<Actor, string>;
}

/**
 * The six sockets of the demo: the two servers, and a client socket for
 * each conversation (every connection, every sender, has a port of its own).
 */
export type Actor =
  | "tcpClient1"
  | "tcpClient2"
  | "tcpServer"
  | "udpServer"
  | "udpSender1"
  | "udpSender2";

/**
 * One step of the exchange: a note over one or more actors, bytes handed
 * to the kernel on one side (`send`: a write() or a datagram), or a read
 * that returned on the other side (`read`).
 */
export type Step =
  | { kind: "note"; over: Actor[]; text: string }
  | { kind: "send"; from: Actor; to: Actor; text: string }
  | { kind: "read"; at: Actor; text: string };

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
  // What each socket did, in the order this process saw it: the diagram.
  const steps: Step[] = [];
  const tcpClientOf = (id: number): Actor =>
    id === 1 ? "tcpClient1" : "tcpClient2";
  let udpSender: Actor = "udpSender1";
  // Every line says who is speaking: one of the servers or one of the
  // clients. The demo also listens to the servers' lines to wait for a
  // connection's close and to count reads and datagrams.
  const closed = new Map<number, () => void>();
  const closeSeen = (id: number) =>
    new Promise<void>((resolve) => closed.set(id, resolve));
  const tcpReads = new Map<number, number[]>();
  const tcpLog = (line: string) => {
    print(`tcp server | ${line}`);
    const open = /^tcp open .* \(#(\d+),/.exec(line);
    if (open) {
      steps.push({ kind: "note", over: ["tcpServer"], text: "accept()" });
    }
    const read = /^tcp #(\d+) read (\d+) bytes$/.exec(line);
    if (read) {
      const id = Number(read[1]);
      tcpReads.set(id, [...tcpReads.get(id) ?? [], Number(read[2])]);
      steps.push({
        kind: "read",
        at: "tcpServer",
        text: `read() ${read[2]} bytes`,
      });
    }
    const wrote = /^tcp #(\d+) wrote (\d+) bytes$/.exec(line);
    if (wrote) {
      steps.push({
        kind: "send",
        from: "tcpServer",
        to: tcpClientOf(Number(wrote[1])),
        text: `write() ${wrote[2]} bytes`,
      });
    }
    const close = /^tcp close .* \(#(\d+)\)/.exec(line);
    if (close) {
      const id = Number(close[1]);
      // The echo ends when a read returns null: the client's FIN came.
      steps.push({ kind: "read", at: "tcpServer", text: "read() null: EOF" });
      steps.push({
        kind: "send",
        from: "tcpServer",
        to: tcpClientOf(id),
        text: "FIN: close()",
      });
      closed.get(id)?.();
    }
  };
  const udpSizes: number[] = [];
  const udpLog = (line: string) => {
    print(`udp server | ${line}`);
    const datagram = /^udp datagram .* (\d+) bytes$/.exec(line);
    if (datagram) {
      udpSizes.push(Number(datagram[1]));
      steps.push({
        kind: "read",
        at: "udpServer",
        text: `receive() ${datagram[1]} bytes`,
      });
    }
  };
  // A client's trace: its writes are arrows to the server, its reads notes.
  // Its FIN goes right after the write that sent the last byte (converse()
  // half-closes then); once the reply ends, it closed first: TIME_WAIT.
  const tcpClientTrace = (me: Actor, payload: number): Trace => {
    let sent = 0;
    return (what) => {
      const n = /^(wrote|read) (\d+) bytes$/.exec(what);
      if (!n) return;
      if (n[1] === "read") {
        steps.push({ kind: "read", at: me, text: `read() ${n[2]} bytes` });
        return;
      }
      steps.push({
        kind: "send",
        from: me,
        to: "tcpServer",
        text: `write() ${n[2]} bytes`,
      });
      sent += Number(n[2]);
      if (sent === payload) {
        steps.push({
          kind: "send",
          from: me,
          to: "tcpServer",
          text: "FIN: closeWrite()",
        });
      }
    };
  };
  const tcpClientEnd = (me: Actor) => {
    steps.push({ kind: "read", at: me, text: "read() null: EOF" });
    steps.push({
      kind: "note",
      over: [me],
      text: "TIME_WAIT: it sent the first FIN",
    });
  };
  const connecting = (me: Actor) =>
    steps.push({
      kind: "note",
      over: [me, "tcpServer"],
      text: "SYN, SYN-ACK, ACK",
    });
  // A sender's trace: each datagram sent is an arrow; each reply is drawn
  // when it arrives (the server sends it right after its receive).
  const udpSenderTrace: Trace = (what) => {
    const n = /^(sent|received) (\d+) bytes$/.exec(what);
    if (!n) return;
    if (n[1] === "sent") {
      steps.push({
        kind: "send",
        from: udpSender,
        to: "udpServer",
        text: `datagram, ${n[2]} bytes`,
      });
    } else {
      steps.push({
        kind: "send",
        from: "udpServer",
        to: udpSender,
        text: `datagram, ${n[2]} bytes`,
      });
      steps.push({
        kind: "read",
        at: udpSender,
        text: `receive() ${n[2]} bytes`,
      });
    }
  };
  const part = (over: Actor[], text: string) =>
    steps.push({ kind: "note", over, text });

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
    part(["tcpClient1", "tcpServer"], `1. TCP: ${show(tcpMessage)}`);
    connecting("tcpClient1");
    const t = await exchange(hostname, port, tcpMessage, {
      trace: tcpClientTrace("tcpClient1", tcpMessage.length),
    });
    tcpClientEnd("tcpClient1");
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
    part(["udpServer", "udpSender1"], `2. UDP: ${show(udpMessage)}`);
    const [u] = await sendDatagrams(hostname, port, [udpMessage], {
      timeoutMs: 5000,
      trace: udpSenderTrace,
    });
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
    const clientTrace = tcpClientTrace("tcpClient2", hello.length);
    const trace: Trace = (what, bytes) => {
      if (what.startsWith("wrote")) writes++;
      clientTrace(what, bytes);
    };
    const secondClosed = closeSeen(2);
    part(["tcpClient2", "tcpServer"], `4. TCP: ${show(hello)}, 1 byte a write`);
    connecting("tcpClient2");
    const t2 = await exchange(hostname, port, hello, { chunk: 1, trace });
    tcpClientEnd("tcpClient2");
    await secondClosed;
    const reads = tcpReads.get(2) ?? [];
    print(
      `tcp client | ${writes} writes of 1 byte; the server read them in ${reads.length} ${
        reads.length === 1 ? "read" : "reads"
      } (${reads.join(" + ")} bytes)`,
    );
    const before = udpSizes.length;
    udpSender = "udpSender2";
    part(
      ["udpServer", "udpSender2"],
      `4. UDP: ${show(hello)}, 1 byte a datagram`,
    );
    const u2 = await sendDatagrams(hostname, port, pieces, {
      timeoutMs: 5000,
      trace: udpSenderTrace,
    });
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
      steps,
      ends: {
        tcpClient1: tcpResult.local,
        tcpClient2: formatAddr(t2.local),
        tcpServer: formatAddr(tcp.addr),
        udpServer: formatAddr(udp.addr),
        udpSender1: udpResult.local,
        udpSender2: formatAddr(u2[0].local),
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

// ─── 5. The picture ─────────────────────────────────────────────────────────

/** Who each actor is, as the diagram labels its lifeline. */
const ROLES: Record<Actor, string> = {
  tcpClient1: "tcp client 1",
  tcpClient2: "tcp client 2",
  tcpServer: "tcp server",
  udpServer: "udp server",
  udpSender1: "udp sender 1",
  udpSender2: "udp sender 2",
};

/**
 * The exchange as a Mermaid sequence diagram, fenced for Markdown: one
 * lifeline per socket, labelled with its address:port; an arrow for each
 * write() or datagram sent, a note for each read() or receive() with the
 * bytes it returned. Read sizes are the real ones: TCP's (a stream) need
 * not match the writes; UDP's (datagrams) always do. (No text here holds
 * `;` or `#`, which Mermaid reads specially.)
 */
export function sequenceDiagram(result: DemoResult): string[] {
  const actors = Object.keys(ROLES) as Actor[];
  const lines = ["```mermaid", "sequenceDiagram"];
  for (const actor of actors) {
    lines.push(
      `  participant ${actor} as ${ROLES[actor]}<br/>${result.ends[actor]}`,
    );
  }
  for (const step of result.steps) {
    if (step.kind === "note") {
      lines.push(`  Note over ${step.over.join(",")}: ${step.text}`);
    } else if (step.kind === "send") {
      lines.push(`  ${step.from}->>${step.to}: ${step.text}`);
    } else {
      lines.push(`  Note over ${step.at}: ${step.text}`);
    }
  }
  lines.push("```");
  return lines;
}

// The entry runs once the whole file is loaded: `main` needs the plumbing
// below, which is not defined yet at this line.
if (import.meta.main) {
  addEventListener("load", async () => Deno.exit(await main(Deno.args)));
}

// ───── plumbing: flags, usage, errors, signals, limits ─────

const USAGE =
  `usage: deno run --allow-net=127.0.0.1 --unstable-net demo.ts [--diagram]

Starts a TCP and a UDP echo server on one free port, talks to both, prints
what every side saw, and exits 0.

options:
  --diagram   then print the exchange as a Mermaid sequence diagram
              (real ports, every read and write with its size)
  --help      show this help`;

/** The command line: run the demo (and draw it); returns the exit status. */
export async function main(args: string[]): Promise<number> {
  let diagram: boolean;
  try {
    const { values } = parseArgs({
      args,
      options: {
        diagram: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    diagram = values.diagram;
  } catch (err) {
    console.error(`error: ${usageReason(err)}\n\n${USAGE}`);
    return 2;
  }
  try {
    const result = await runDemo();
    if (diagram) {
      console.log("");
      console.log(
        "The exchange as a Mermaid sequence diagram (GitHub draws it in Markdown):",
      );
      console.log("");
      console.log(sequenceDiagram(result).join("\n"));
    }
    return 0;
  } catch (err) {
    console.error(`error: ${errorText(err)}`);
    return 1;
  }
}

/** parseArgs's complaint, said as the other scripts say theirs. */
function usageReason(err: unknown): string {
  const text = errorText(err);
  const flag = /^Unknown option '([^']*)'/.exec(text);
  if (flag) return `unknown flag "${flag[1]}"`;
  const word = /^Unexpected argument '([^']*)'/.exec(text);
  if (word) return `demo.ts takes no arguments, only flags ("${word[1]}")`;
  const value = /^Option '([^']*)' does not take an argument/.exec(text);
  if (value) return `${value[1]} takes no value`;
  return text;
}
