/**
 * watch.ts: the kernel's view of the sockets on one port. Everything the
 * other scripts show is what a program sees (reads, writes, datagrams);
 * this one shows what the kernel keeps for each socket: its TCP state
 * (LISTEN, ESTABLISHED, TIME_WAIT, ...), both ends, the bytes waiting in
 * its queues, and its timer, plus the kernel's counters of drops and
 * retransmissions.
 *
 * What it shows:
 * - Linux lists every socket in /proc/net/tcp, tcp6, udp and udp6, one
 *   line each, readable by any user: `ss` and `netstat` read the same.
 * - A listening socket carries no data: its Recv-Q is the accept queue,
 *   connections the kernel finished that wait for accept(). It holds at
 *   most backlog + 1 (Linux compares with ">", not ">="): the next SYN is
 *   dropped, and TcpExtListenOverflows counts it.
 * - A connected socket's Recv-Q holds bytes that arrived and were not read
 *   yet; its Send-Q bytes sent and not yet acknowledged. Backpressure is
 *   these two filling up.
 * - The side that closes first keeps the socket pair in TIME_WAIT (60 s on
 *   Linux) after the connection ended.
 * - The counters (/proc/net/snmp, /proc/net/netstat) count what went wrong:
 *   a full accept queue (TcpExtListenOverflows), a full UDP receive buffer
 *   (UdpRcvbufErrors), a datagram to a port where nothing listens
 *   (UdpNoPorts). They are for the whole machine (or network namespace),
 *   not for one port.
 *
 * Run it beside a server (no root needed):
 *
 *   deno task server --port 9000           (terminal 1)
 *   deno run --allow-run=cat watch.ts --port 9000     (terminal 2)
 *   deno task client --port 9000 hello     (terminal 3)
 *
 * On a terminal it redraws a table; piped (`| cat`, to a file) it prints
 * one line per change, each starting with the time. It polls every 50 ms
 * (`--interval MS`): a state shorter than that can be missed.
 *
 * Try next: `server.ts --backlog 1` stopped with Ctrl-Z while clients
 * connect (the accept queue fills, TcpExtListenOverflows rises); a client
 * that does not read (Send-Q grows on the server, Recv-Q on the client);
 * a UDP flood (UdpRcvbufErrors).
 *
 * This file stands alone (no imports but Deno's own): copy it and run it.
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ─── 1. The kernel's socket tables ──────────────────────────────────────────

/** The files where Linux lists its sockets, one line per socket. */
export const SOCKET_TABLES = [
  "/proc/net/tcp",
  "/proc/net/tcp6",
  "/proc/net/udp",
  "/proc/net/udp6",
];
/** The files with the kernel's counters, "Name: keys" then "Name: values". */
export const COUNTER_FILES = ["/proc/net/snmp", "/proc/net/netstat"];

/** One socket, as one line of /proc/net/tcp (or udp) describes it. */
export interface SocketRow {
  proto: "tcp" | "udp";
  /** Our end and the other end, `HOST:PORT` (`0.0.0.0:0`: none). */
  local: string;
  remote: string;
  localPort: number;
  remotePort: number;
  /** LISTEN, ESTABLISHED, TIME_WAIT, ...; UNCONN for an unconnected UDP. */
  state: string;
  /** LISTEN: the accept queue; else bytes received, not yet read. */
  recvQ: number;
  /**
   * Bytes sent, not yet acknowledged (TCP). For LISTEN, `ss` shows the
   * backlog here (it asks the kernel over netlink); /proc has no backlog.
   */
  sendQ: number;
  /** The running timer, e.g. `timewait 59.2s`, or "". */
  timer: string;
  /** UDP: datagrams dropped on this socket (its receive buffer was full). */
  drops: number;
}

// The TCP states, numbered as the kernel numbers them (include/net/tcp_states.h).
const TCP_STATES = [
  "",
  "ESTABLISHED", // 01: the connection is open; data flows
  "SYN_SENT", // 02: connect() sent its SYN, waits for SYN-ACK
  "SYN_RECV", // 03: a SYN came to a listener, SYN-ACK sent, waits for ACK
  "FIN_WAIT1", // 04: we closed (sent FIN), waiting for its ACK
  "FIN_WAIT2", // 05: our FIN was acknowledged; waiting for the peer's FIN
  "TIME_WAIT", // 06: both closed, we closed first: the pair waits 60 s
  "CLOSE", // 07: no connection (an unconnected UDP socket: UNCONN)
  "CLOSE_WAIT", // 08: the peer closed (FIN came); we have not closed yet
  "LAST_ACK", // 09: we closed after the peer; waiting for our FIN's ACK
  "LISTEN", // 0A: a listening socket: it makes connections, carries none
  "CLOSING", // 0B: both sent FIN at once
  "NEW_SYN_RECV", // 0C: a half-open connection in a listener's SYN queue
];

// The timer column ("tr"): which timer runs. Its time is in 1/100 s.
const TIMERS = ["", "retransmit", "keepalive", "timewait", "probe"];

/**
 * Parse one socket table (the text of /proc/net/tcp, tcp6, udp or udp6).
 * Each line after the header is one socket:
 *
 *   sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
 *    0: 0100007F:2328 00000000:0000 0A 00000000:00000001 00:00000000 ...
 *
 * Addresses are hexadecimal in the kernel's byte order (0100007F is
 * 127.0.0.1 on x86), ports in network order (2328 is 9000).
 */
export function parseSocketTable(
  proto: "tcp" | "udp",
  text: string,
): SocketRow[] {
  const rows: SocketRow[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [local, localPort] = parseAddress(f[1]);
    const [remote, remotePort] = parseAddress(f[2]);
    const st = parseInt(f[3], 16);
    const [txQueue, rxQueue] = f[4].split(":").map((h) => parseInt(h, 16));
    const [tr, when] = f[5].split(":").map((h) => parseInt(h, 16));
    const state = proto === "udp"
      ? (st === 1 ? "ESTABLISHED" : "UNCONN")
      : TCP_STATES[st] ?? `state ${st}`;
    rows.push({
      proto,
      local: formatAddr({ hostname: local, port: localPort }),
      remote: formatAddr({ hostname: remote, port: remotePort }),
      localPort,
      remotePort,
      state,
      recvQ: rxQueue,
      sendQ: txQueue,
      timer: tr > 0
        ? `${TIMERS[tr] ?? "timer"} ${(when / 100).toFixed(1)}s`
        : "",
      drops: proto === "udp" ? Number(f[12] ?? 0) : 0,
    });
  }
  return rows;
}

/**
 * `0100007F:2328` → ["127.0.0.1", 9000]. An IPv4 address is one 32-bit
 * word, an IPv6 address four, each printed in the machine's byte order
 * (little-endian on x86 and ARM), so the bytes of each word are reversed.
 */
export function parseAddress(hex: string): [string, number] {
  const [addr, port] = hex.split(":");
  const bytes: number[] = [];
  for (let w = 0; w < addr.length; w += 8) {
    const word = addr.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) {
      bytes.push(parseInt(word.slice(b, b + 2), 16));
    }
  }
  return [
    bytes.length === 4 ? bytes.join(".") : ipv6(bytes),
    parseInt(port, 16),
  ];
}

// ─── 2. The sockets on one port, and what changed ───────────────────────────

/** The rows where either end is on `port`. */
export function onPort(rows: SocketRow[], port: number): SocketRow[] {
  return rows.filter((r) => r.localPort === port || r.remotePort === port);
}

/**
 * What changed between two looks at the tables, one line each:
 * `tcp 127.0.0.1:9000 <-> 127.0.0.1:51234 ESTABLISHED -> TIME_WAIT`.
 * A socket is known by its protocol and its two ends (the socket pair), so
 * a connection that moves to TIME_WAIT is the same socket pair.
 */
export function changes(before: SocketRow[], after: SocketRow[]): string[] {
  const was = byPair(before);
  const now = byPair(after);
  const lines: string[] = [];
  for (const [key, row] of now) {
    const old = was.get(key);
    const pair = `${row.proto} ${row.local} <-> ${row.remote}`;
    const timer = row.timer ? ` (${row.timer})` : "";
    if (!old) lines.push(`${pair} ${row.state}${queues(row)}${timer}`);
    else if (old.state !== row.state) {
      lines.push(`${pair} ${old.state} -> ${row.state}${queues(row)}${timer}`);
    } else if (
      old.recvQ !== row.recvQ || old.sendQ !== row.sendQ ||
      old.drops !== row.drops
    ) {
      lines.push(`${pair} ${row.state}${queues(row)}`);
    }
  }
  for (const [key, row] of was) {
    if (!now.has(key)) {
      lines.push(
        `${row.proto} ${row.local} <-> ${row.remote} ${row.state} -> gone`,
      );
    }
  }
  return lines;
}

/** The queues as a change line shows them. */
function queues(row: SocketRow): string {
  if (row.state === "LISTEN") return ` accept queue ${row.recvQ}`;
  const drops = row.drops > 0 ? ` drops ${row.drops}` : "";
  if (row.recvQ === 0 && row.sendQ === 0) return drops;
  return ` recv-q ${row.recvQ} send-q ${row.sendQ}${drops}`;
}

// ─── 3. The kernel's counters ───────────────────────────────────────────────

/**
 * The counters that matter to these lessons, by `nstat`'s names (the group
 * in /proc/net/snmp or netstat, then the name): what each one counts.
 */
export const COUNTERS: Record<string, string> = {
  TcpExtListenOverflows: "connections dropped: an accept queue was full",
  TcpExtListenDrops: "SYNs dropped by a listener (full queue, or no memory)",
  TcpActiveOpens: "connect() calls that sent a SYN",
  TcpPassiveOpens: "connections a listener accepted the SYN of",
  TcpAttemptFails: "connects that failed (refused, reset in SYN_RECV)",
  TcpEstabResets: "established connections ended by a reset",
  TcpOutRsts: "resets sent",
  TcpRetransSegs: "TCP segments sent again (a loss, or no ACK in time)",
  TcpExtTCPTimeouts: "retransmission timers that fired",
  TcpExtTCPAbortOnData: "resets sent because unread data was discarded",
  UdpInDatagrams: "UDP datagrams delivered to a socket",
  UdpNoPorts: "UDP datagrams to a port where nothing listens",
  UdpInErrors: "UDP datagrams dropped (bad, or no room)",
  UdpRcvbufErrors: "UDP datagrams dropped: a receive buffer was full",
  UdpSndbufErrors: "UDP datagrams not sent: a send buffer was full",
};

/**
 * Parse /proc/net/snmp or /proc/net/netstat: lines in pairs, one of names
 * and one of values, each starting with its group (`Tcp:`, `TcpExt:`).
 */
export function parseCounters(text: string): Map<string, number> {
  const counters = new Map<string, number>();
  const lines = text.split("\n");
  for (let i = 0; i + 1 < lines.length; i++) {
    const names = lines[i].split(/\s+/);
    const values = lines[i + 1].split(/\s+/);
    if (names[0] !== values[0] || !names[0].endsWith(":")) continue;
    if (!/^-?\d/.test(values[1] ?? "")) continue;
    const group = names[0].slice(0, -1);
    names.slice(1).forEach((name, j) => {
      if (name) counters.set(group + name, Number(values[j + 1]));
    });
    i++;
  }
  return counters;
}

/** The counters of {@link COUNTERS} that moved: `TcpExtListenOverflows +1`. */
export function counterChanges(
  before: Map<string, number>,
  after: Map<string, number>,
): string[] {
  const lines: string[] = [];
  for (const name of Object.keys(COUNTERS)) {
    const delta = (after.get(name) ?? 0) - (before.get(name) ?? 0);
    if (delta !== 0) {
      lines.push(`${name} ${delta > 0 ? "+" : ""}${delta} (${COUNTERS[name]})`);
    }
  }
  return lines;
}

// ─── 4. Watch: look, compare, say what changed ──────────────────────────────

/** One look at the kernel: the sockets on our port, and the counters. */
export interface Look {
  sockets: SocketRow[];
  counters: Map<string, number>;
}

/** Read the tables and counters once (see {@link readProcFiles}). */
export async function look(port: number): Promise<Look> {
  const files = await readProcFiles([...SOCKET_TABLES, ...COUNTER_FILES]);
  const sockets = SOCKET_TABLES.flatMap((path) =>
    parseSocketTable(
      path.includes("tcp") ? "tcp" : "udp",
      files.get(path) ?? "",
    )
  );
  const counters = new Map<string, number>();
  for (const path of COUNTER_FILES) {
    for (const [k, v] of parseCounters(files.get(path) ?? "")) {
      counters.set(k, v);
    }
  }
  return { sockets: onPort(sockets, port), counters };
}

/**
 * Look every `intervalMs` until `signal` aborts, and call `report` with
 * what changed: socket lines, then counter lines. Resolves with the first
 * look and the last, for the summary.
 */
export async function watch(
  port: number,
  intervalMs: number,
  report: (
    now: Look,
    socketLines: string[],
    counterLines: string[],
  ) => Promise<void> | void,
  signal: AbortSignal,
): Promise<{ first: Look; last: Look }> {
  const first = await look(port);
  await report(first, changes([], first.sockets), []);
  let last = first;
  while (!signal.aborted) {
    await sleep(intervalMs, signal);
    if (signal.aborted) break;
    const now = await look(port);
    const socketLines = changes(last.sockets, now.sockets);
    const counterLines = counterChanges(last.counters, now.counters);
    if (socketLines.length || counterLines.length) {
      await report(now, socketLines, counterLines);
    }
    last = now;
  }
  return { first, last };
}

// Run as a program (not imported): main and the plumbing it uses are below
// this line, so start once the whole file has loaded.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/**
 * The command-line program: parse flags, look once (to fail early and
 * clearly), then watch until Ctrl-C and print the counters' summary.
 */
export async function main(args: string[]): Promise<number> {
  const options = parseWatchArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  if (Deno.build.os !== "linux") {
    throw new Error(
      `watch.ts reads Linux's /proc/net tables, and this is ${Deno.build.os}; run it on Linux (a VM or WSL 2), or use netstat/ss here`,
    );
  }
  const stop = new AbortController();
  const removeSignals = onStopSignals(() => stop.abort(), () => Deno.exit(0));
  const started = performance.now();
  const tty = options.tty ?? Deno.stdout.isTerminal();
  let changesSeen = 0;
  try {
    await writeStdout(
      `watching tcp and udp port ${options.port} every ${options.interval} ms (a state that lasts less than that can be missed)\n`,
    );
    const recent: string[] = [];
    const { first, last } = await watch(
      options.port,
      options.interval,
      async (now, socketLines, counterLines) => {
        changesSeen += socketLines.length;
        const lines = [
          ...socketLines,
          ...counterLines.map((c) => `counter ${c}`),
        ];
        if (tty) {
          recent.push(...lines.map((l) => `${clock()} ${l}`));
          recent.splice(0, Math.max(0, recent.length - RECENT_LINES));
          await writeStdout(drawTable(options.port, now, recent));
        } else if (lines.length) {
          await writeStdout(lines.map((l) => `${clock()} ${l}\n`).join(""));
        }
      },
      stop.signal,
    );
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const moved = counterChanges(first.counters, last.counters);
    await writeStdout(
      `watch stopped after ${seconds} s: ${changesSeen} socket changes; counters (this network namespace, every port): ${
        moved.length ? moved.join(", ") : "none moved"
      }\n`,
    );
  } finally {
    removeSignals();
  }
  return 0;
}

/** Everything watch.ts can be told on the command line. */
export interface WatchOptions {
  /** The port whose sockets to show (either end). */
  port: number;
  /** Milliseconds between two looks. */
  interval: number;
  /** Force the table (true) or the lines (false); default: stdout is a tty. */
  tty?: boolean;
}

/** The defaults, as `--help` shows them. */
export const DEFAULTS: WatchOptions = { port: 8080, interval: 50 };

const MAX_INTERVAL_MS = 60_000;
const RECENT_LINES = 8; // change lines kept under the table on a terminal

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE =
  `usage: deno run --allow-run=cat watch.ts [--port N] [--interval MS]

Shows every TCP and UDP socket on port N as the kernel sees it: state, both
ends, Recv-Q and Send-Q, the timer (TIME_WAIT's time left); for LISTEN,
Recv-Q is the accept queue (/proc has no backlog: \`ss -ltn\` shows it as
Send-Q). Prints the kernel's counters when they move (they count for this
network namespace, every port). Linux only; no root needed.

options:
  --port N        the port to watch, either end (default ${DEFAULTS.port})
  --interval MS   milliseconds between two looks, 1..${MAX_INTERVAL_MS} (default ${DEFAULTS.interval});
                  a state that lasts less than that can be missed
  --lines         print one line per change even on a terminal
  --help          show this help

On a terminal the table is redrawn in place; piped, each change is one line
that starts with the time. Ctrl-C prints what the counters did meanwhile.
Deno 2.9 lets a script read /proc only with --allow-all, so watch.ts reads
the tables through cat: --allow-run=cat (which can read any file you can).`;

const FLAGS = {
  port: { type: "string" },
  interval: { type: "string" },
  lines: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsOptionsConfig;

/** Parse the command line; `"help"` for `--help`. */
export function parseWatchArgs(args: string[]): WatchOptions | "help" {
  const { values } = parseFlags(args, FLAGS);
  if (values.help) return "help";
  return {
    port: values.port === undefined
      ? DEFAULTS.port
      : parseInteger("--port", values.port, 1, 65535),
    interval: values.interval === undefined
      ? DEFAULTS.interval
      : parseInteger("--interval", values.interval, 1, MAX_INTERVAL_MS),
    tty: values.lines ? false : undefined,
  };
}

/**
 * Read files of /proc. Deno 2.9 asks for --allow-all to read anything in
 * /proc; without it we ask `cat` (--allow-run=cat), all files in one run.
 * Each table's header line says which file it is.
 */
async function readProcFiles(paths: string[]): Promise<Map<string, string>> {
  if (readDirectly) {
    try {
      const texts = await Promise.all(paths.map(readIfThere));
      return new Map(paths.map((p, i) => [p, texts[i]]));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotCapable)) throw err;
      readDirectly = false;
    }
  }
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("cat", {
      args: paths,
      stdin: "null",
      stderr: "null",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) {
      throw new Error(
        "Deno may not read /proc/net (Deno 2.9 allows /proc only with --allow-all); run again with --allow-run=cat, so watch.ts reads it through cat",
      );
    }
    if (err instanceof Deno.errors.NotFound) {
      throw new Error("cat is not installed; install coreutils and try again");
    }
    throw err;
  }
  return splitProcFiles(new TextDecoder().decode(out.stdout), paths);
}
let readDirectly = true;

async function readIfThere(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    // tcp6/udp6 are missing where IPv6 is off.
    if (err instanceof Deno.errors.NotFound) return "";
    throw err;
  }
}

/**
 * Split `cat`'s output back into files. A socket table starts with its
 * header: `rem_address` (IPv4) or `remote_address` (IPv6), and UDP's ends
 * with `drops`; the counters are what follows the tables.
 */
export function splitProcFiles(
  text: string,
  paths: string[],
): Map<string, string> {
  const files = new Map<string, string>();
  let current = "";
  for (const line of text.split("\n")) {
    if (/^\s*sl\s+local_address/.test(line)) {
      const v6 = /remote_address/.test(line);
      const udp = /\bdrops\s*$/.test(line);
      current = `/proc/net/${udp ? "udp" : "tcp"}${v6 ? "6" : ""}`;
    } else if (/^[A-Za-z]+:/.test(line)) {
      current = "counters"; // "Tcp: ..." lines: socket lines start with a space
    }
    if (!current) continue;
    files.set(current, (files.get(current) ?? "") + line + "\n");
  }
  // The counter parser reads "Name: keys" / "Name: values" pairs from any
  // text, so both counter files can share the one section.
  const counters = files.get("counters") ?? "";
  for (const p of paths) {
    if (COUNTER_FILES.includes(p)) {
      files.set(p, p === COUNTER_FILES[0] ? counters : "");
    }
  }
  return files;
}

/** The time of day, `08:01:02.345`, that starts each change line. */
function clock(): string {
  return new Date().toISOString().slice(11, 23);
}

/** The terminal view: the sockets as a table, recent changes below it. */
function drawTable(port: number, now: Look, recent: string[]): string {
  const head = [
    "proto",
    "state",
    "local",
    "remote",
    "recv-q",
    "send-q",
    "timer",
  ];
  const rows = now.sockets.map((r) => [
    r.proto,
    r.state,
    r.local,
    r.remote,
    String(r.recvQ),
    String(r.sendQ),
    r.timer || (r.drops ? `drops ${r.drops}` : ""),
  ]);
  const table = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...table.map((r) => r[i].length)));
  const text = table.map((r) =>
    r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()
  );
  return [
    "\x1b[H\x1b[2J", // cursor home, clear the screen
    `port ${port}: ${rows.length} sockets (LISTEN: recv-q is the accept queue)\n`,
    text.join("\n"),
    "\n\nrecent changes:\n",
    recent.join("\n"),
    "\n",
  ].join("");
}

/** An IPv6 address from its 16 bytes, shortened as people write it. */
function ipv6(bytes: number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  }
  // ::ffff:127.0.0.1 is an IPv4 client on an IPv6 socket.
  if (groups.slice(0, 5).every((g) => g === "0") && groups[5] === "ffff") {
    return `::ffff:${bytes.slice(12).join(".")}`;
  }
  // The longest run of zero groups (two or more) becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j > i ? j : i + 1;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${
    groups.slice(best + bestLen).join(":")
  }`;
}

/** Group sockets by protocol and socket pair (a repeat gets `#2`). */
function byPair(rows: SocketRow[]): Map<string, SocketRow> {
  const map = new Map<string, SocketRow>();
  for (const r of rows) {
    let key = `${r.proto} ${r.local} ${r.remote}`;
    for (let n = 2; map.has(key); n++) {
      key = `${r.proto} ${r.local} ${r.remote} #${n}`;
    }
    map.set(key, r);
  }
  return map;
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
