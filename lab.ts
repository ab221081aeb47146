/**
 * lab.ts: who can reach you? A two-host network built from two Linux
 * network namespaces, to see what a bind address really means.
 *
 *   deno task lab                       (in a root shell)
 *   sudo "$(command -v deno)" task lab    (otherwise)
 *
 * What it shows:
 * - A network namespace is a second copy of the kernel's network stack:
 *   its own interfaces, addresses, routes, ports and its own loopback
 *   `lo`. Two of them, joined by a virtual cable (a veth pair), are two
 *   hosts, A (198.18.0.1) and B (198.18.0.2), inside this one machine.
 * - server.ts and udp.ts run in host A bound in turn to 127.0.0.1, to A's
 *   address on the link, to 0.0.0.0 and to A's host name; client.ts and
 *   `udp.ts send` try each from A itself and from B. The table says what
 *   reached what, and for each miss the client's own error and its time.
 *   Loopback is private to its host; 0.0.0.0 is every interface; a name
 *   is only as public as the address it resolves to (here, as on most
 *   Debian-like systems, /etc/hosts maps the host's name to 127.0.0.1).
 * - The three ways a connect fails, seen from B: refused (a host answered
 *   with RST: nothing listens there), no route (no host has that address,
 *   or no route leads to it), and a timeout (the SYN is dropped: a full
 *   listen queue here; a firewall's DROP rule looks the same).
 *
 * Two more parts, each a run of its own:
 *
 *   deno task lab --dead-peer      (about 20 s)
 *   deno task lab --one-to-many    (about 10 s)
 *
 * - `--dead-peer`: a connection whose peer goes away without a word (its
 *   cable pulled, or its program frozen). Without keepalive the server
 *   keeps it for ever; with `server.ts --keepalive` the kernel probes the
 *   quiet connection and gives up on it (the clock shortened here to
 *   seconds, inside host A only); an idle timeout, the application's own
 *   clock, catches what keepalive cannot: a frozen program on a live host.
 * - `--one-to-many`: four hosts on one switch (a Linux bridge, in a
 *   namespace of its own). One datagram to a multicast group reaches the
 *   hosts that joined it and not the one that did not; one to the link's
 *   broadcast address reaches every host; and chat.ts shows what one to
 *   many costs over TCP: a copy of each line per connection.
 *
 * Everything happens inside the lab's own namespaces, on addresses from
 * 198.18.0.0/15, the range RFC 2544 keeps for benchmarks (never routed on
 * the internet), and groups from 239.255.0.0/16; the machine's own
 * interfaces, routes and sysctls are never touched. The lab removes all it
 * made (namespaces, cables, processes) when it ends, also on Ctrl-C or an
 * error. It needs Linux,
 * root and the `ip` command (iproute2); it runs server.ts, client.ts,
 * udp.ts and chat.ts from its own folder, as processes, the way you would
 * type them.
 *
 * Try it by hand afterwards (as root), the same steps the lab takes:
 *
 *   ip netns add a; ip netns add b
 *   ip link add va type veth peer name vb
 *   ip link set va netns a; ip link set vb netns b
 *   ip -n a addr add 198.18.0.1/24 dev va; ip -n a link set va up; ip -n a link set lo up
 *   ip -n b addr add 198.18.0.2/24 dev vb; ip -n b link set vb up; ip -n b link set lo up
 *   ip netns exec a deno run --allow-net server.ts --hostname 0.0.0.0 --port 9000
 *   ip netns exec b deno run --allow-net client.ts --hostname 198.18.0.1 --port 9000 hi
 *   ip netns del a; ip netns del b       (the veth pair goes with them)
 *
 * A dead peer by hand, on the same two hosts (keepalive's clock in A only):
 *
 *   ip netns exec a sysctl -w net.ipv4.tcp_keepalive_time=2 \
 *     net.ipv4.tcp_keepalive_intvl=1 net.ipv4.tcp_keepalive_probes=3
 *   ip netns exec a deno run --allow-net server.ts --hostname 0.0.0.0 --port 9000 --keepalive
 *   ip netns exec b deno run --allow-net client.ts --hostname 198.18.0.1 --port 9000
 *   (type hello, then in a third terminal:)  ip -n b link set vb down
 *
 * A switch by hand: a bridge in a namespace of its own, a cable per host:
 *
 *   ip netns add s; ip -n s link add br0 type bridge; ip -n s link set br0 up
 *   ip netns add c; ip -n s link add port-c type veth peer name vc netns c
 *   ip -n s link set port-c master br0; ip -n s link set port-c up
 *   ip -n c addr add 198.18.0.3/24 dev vc; ip -n c link set vc up
 *   ip -n c route add 224.0.0.0/4 dev vc       (where multicast goes)
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

// ───── the lesson: two hosts, four bind addresses, three failures ─────

/** Host A's and host B's addresses on the link: 198.18.0.0/15 only. */
export const A_ADDR = "198.18.0.1";
export const B_ADDR = "198.18.0.2";
/** The link is one /24: both hosts see 198.18.0.0-255 as "on this cable". */
const PREFIX = 24;
const LINK_NET = `198.18.0.0/${PREFIX}`;
/** On the link's /24, but no host has it: B's ARP question goes unanswered. */
const NOBODY_ADDR = "198.18.0.99";
/** Still RFC 2544 space, but off the /24: B has no route there at all. */
const OFF_LINK_ADDR = "198.19.0.1";
/** The namespaces are fresh and empty, so a fixed port is free for sure. */
const PORT = 9000;
/** The port of the server whose listen queue we fill (the timeout case). */
const FULL_QUEUE_PORT = 9001;
/** udp.ts send: how long to wait for a reply. UDP has no "refused" to wait for. */
const UDP_TIMEOUT_MS = 500;
/** client.ts --timeout for the table's probes (a miss is fast, or a timeout). */
const TCP_TIMEOUT_MS = 2000;
/** client.ts --timeout where the SYN is dropped: it waits this long. */
const DROPPED_SYN_TIMEOUT_MS = 2000;
/** client.ts --timeout for "no host": ARP gives up after ~3 s, so wait longer. */
const NO_HOST_TIMEOUT_MS = 5000;

/** One of the two hosts: a network namespace and its end of the veth pair. */
export interface Host {
  /** "A" or "B". */
  label: string;
  /** The namespace (`ip netns` name), unique per run: lab-PID-a. */
  netns: string;
  /** Its end of the veth pair, unique per run: labPIDa (at most 15 chars). */
  link: string;
  /** Its address on the link. */
  addr: string;
  /** On a switch (--one-to-many): the switch's end of its cable. */
  port?: string;
}

/** The two hosts of this run, named after our process id. */
export function labHosts(id = Deno.pid): { a: Host; b: Host } {
  return {
    a: { label: "A", netns: `lab-${id}-a`, link: `lab${id}a`, addr: A_ADDR },
    b: { label: "B", netns: `lab-${id}-b`, link: `lab${id}b`, addr: B_ADDR },
  };
}

/**
 * A namespace starts with nothing but a loopback interface that is DOWN:
 * even 127.0.0.1 does not work until `lo` is up.
 */
async function addNamespace(lab: Lab, netns: string): Promise<void> {
  await lab.ip(
    `netns add ${netns}`,
    (why) =>
      `cannot create a network namespace (${why}); inside a container this needs --privileged (CAP_SYS_ADMIN); try a root shell on a Linux machine or VM`,
  );
}

/**
 * Build the two hosts. The veth pair is a cable with two ends; each end
 * moves into one host.
 */
async function buildHosts(lab: Lab, a: Host, b: Host): Promise<void> {
  for (const h of [a, b]) await addNamespace(lab, h.netns);
  // The cable: two interfaces made as a pair, still in this machine's
  // namespace for a moment (they are down and have no address: harmless).
  await lab.ip(`link add ${a.link} type veth peer name ${b.link}`);
  for (const h of [a, b]) {
    // One end into each host; from now on only that host sees it.
    await lab.ip(`link set ${h.link} netns ${h.netns}`);
    await lab.ip(`-n ${h.netns} addr add ${h.addr}/${PREFIX} dev ${h.link}`);
    await lab.ip(`-n ${h.netns} link set ${h.link} up`);
    await lab.ip(`-n ${h.netns} link set lo up`);
  }
}

/** Where a probe goes: which host sends, to which address. */
interface Target {
  from: Host;
  to: string;
}

/** What one probe did: the echo came back, or the client's error line. */
export interface Probe {
  ok: boolean;
  /** The client's `error:` line (its first line on stderr) for a miss. */
  error: string;
  /** Wall time of the whole client run, Deno's start-up included. */
  ms: number;
}

/** One server of a row: its listening line (or why it did not start). */
interface Served {
  /** `tcp listening on HOST:PORT`, or "" when it did not start. */
  listening: string;
  /** Its `error:` line when it did not start. */
  error: string;
  /** One probe per target; null where the server did not start. */
  probes: (Probe | null)[];
}

/** One row of the table: a bind address and what each target got. */
export interface Row {
  bind: string;
  why: string;
  tcp: Served;
  udp: Served;
}

/**
 * The table. For each bind address: start server.ts and udp.ts in A on
 * the same port (TCP and UDP ports are separate: both fit), try both from
 * every target at once, stop them, next address.
 */
async function whoCanReachYou(
  lab: Lab,
  a: Host,
  b: Host,
  name: string,
): Promise<Row[]> {
  const targets: Target[] = [
    { from: a, to: "127.0.0.1" }, // A's own loopback: A talking to itself
    { from: a, to: a.addr }, // A's link address, from A itself
    { from: b, to: a.addr }, // the other host: the only way B can reach A
  ];
  const binds = [
    { bind: "127.0.0.1", why: "loopback" },
    { bind: a.addr, why: "A's link address" },
    { bind: "0.0.0.0", why: "every interface" },
    { bind: name, why: "A's host name" },
  ];
  // TCP: connect, send, half-close, read the echo (client.ts).
  const tcpProbe = (t: Target) =>
    lab.probe(t.from, "client.ts", [
      ...["--hostname", t.to, "--port", `${PORT}`],
      ...["--timeout", `${TCP_TIMEOUT_MS}`, `hello from ${t.from.label}`],
    ]);
  // UDP: one datagram out, wait for one back (udp.ts send).
  const udpProbe = (t: Target) =>
    lab.probe(t.from, "udp.ts", [
      ...["send", "--hostname", t.to, "--port", `${PORT}`],
      ...["--timeout", `${UDP_TIMEOUT_MS}`, `hello from ${t.from.label}`],
    ]);
  const rows: Row[] = [];
  for (const { bind, why } of binds) {
    // The servers exactly as a person starts them, inside host A.
    const args = ["--hostname", bind, "--port", `${PORT}`];
    const [tcp, udp] = await Promise.all([
      lab.startServer(a, "server.ts", args),
      lab.startServer(a, "udp.ts", args),
    ]);
    const tryAll = (s: Started, probe: (t: Target) => Promise<Probe>) =>
      Promise.all(targets.map((t) => s.listening ? probe(t) : null));
    const [tcpProbes, udpProbes] = await Promise.all([
      tryAll(tcp, tcpProbe),
      tryAll(udp, udpProbe),
    ]);
    await Promise.all([lab.stop(tcp.child), lab.stop(udp.child)]);
    rows.push({
      bind,
      why,
      tcp: { listening: tcp.listening, error: tcp.error, probes: tcpProbes },
      udp: { listening: udp.listening, error: udp.error, probes: udpProbes },
    });
  }
  printTable(rows, targets, name);
  // The name may resolve to an address host A does not have (the machine's
  // own, say): then no server can bind it, and that is the lesson. Any
  // other server that did not start is a broken script.
  const broken = rows.filter((r) => r.bind !== name)
    .flatMap((r) => [r.tcp, r.udp]).find((s) => s.error);
  if (broken) {
    throw new Error(
      `a server did not start, so the table is incomplete: ${broken.error}`,
    );
  }
  return rows;
}

/** One of the failure cases and what client.ts said. */
interface Failure {
  title: string;
  where: string;
  wire: string[];
  probe: Probe;
}

/**
 * The three ways a connect fails, all from B, all at once:
 * refused (RST), no route (ARP unanswered, or no route at all), timeout
 * (the SYN is dropped). For the timeout we need a SYN that goes unanswered
 * and there is no firewall in the namespace (iptables and nft are not
 * always installed), so we fill a listen queue: server.ts with `--backlog
 * 1`, frozen with SIGSTOP (what Ctrl-Z does) so it never calls accept().
 * The kernel completes handshakes into the queue on its own; once the
 * queue is full, Linux drops new SYNs without a word.
 */
async function threeFailures(lab: Lab, a: Host, b: Host): Promise<void> {
  // The server whose queue we fill, frozen right after it listens.
  const full = await lab.startServer(a, "server.ts", [
    ...["--hostname", a.addr, "--port", `${FULL_QUEUE_PORT}`],
    ...["--backlog", "1"],
  ]);
  if (!full.listening) {
    throw new Error(`server.ts did not start: ${full.error}`);
  }
  lab.freeze(full.child);
  // Two clients: with backlog 1, Linux queues backlog + 1 = 2 connections.
  const fillers = [1, 2].map(() =>
    lab.probe(b, "client.ts", [
      ...["--hostname", a.addr, "--port", `${FULL_QUEUE_PORT}`],
      ...["--timeout", "30000", "waiting in the queue"],
    ])
  );
  const queue = await lab.waitForQueue(a, FULL_QUEUE_PORT, 2);

  const client = (to: string, port: number, timeout: number) =>
    lab.probe(b, "client.ts", [
      ...["--hostname", to, "--port", `${port}`],
      ...["--timeout", `${timeout}`, "hello"],
    ]);
  const [refused, noHost, noRoute, timeout] = await Promise.all([
    client(a.addr, PORT, NO_HOST_TIMEOUT_MS),
    client(NOBODY_ADDR, PORT, NO_HOST_TIMEOUT_MS),
    client(OFF_LINK_ADDR, PORT, NO_HOST_TIMEOUT_MS),
    client(a.addr, FULL_QUEUE_PORT, DROPPED_SYN_TIMEOUT_MS),
  ]);
  await lab.stop(full.child); // the fillers end with it
  await Promise.all(fillers);

  printFailures([
    {
      title: "1. refused",
      where: `${a.addr}:${PORT} (host A is there; nothing listens on ${PORT})`,
      wire: ["A's kernel answers B's SYN with a RST at once."],
      probe: refused,
    },
    {
      title: "2a. no route: no host",
      where: `${NOBODY_ADDR}:${PORT} (on the link's /24, but no host has it)`,
      wire: [
        `B asks the link "who has ${NOBODY_ADDR}?" (ARP) 3 times, 1 s apart;`,
        "nobody answers, so the kernel gives up: EHOSTUNREACH.",
      ],
      probe: noHost,
    },
    {
      title: "2b. no route: no network",
      where: `${OFF_LINK_ADDR}:${PORT} (B has no route to ${OFF_LINK_ADDR})`,
      wire: ["No packet leaves B: ENETUNREACH from connect() at once."],
      probe: noRoute,
    },
    {
      title: "3. timeout",
      where:
        `${a.addr}:${FULL_QUEUE_PORT} (server.ts --backlog 1, frozen, queue full)`,
      wire: [
        `ss -ltn in A: ${queue}`,
        "(Recv-Q: connections waiting to be accepted; Send-Q: the backlog)",
        "A's kernel drops the SYN without a word; B resends it and waits.",
        "A firewall's DROP rule looks exactly the same from B.",
      ],
      probe: timeout,
    },
  ]);
}

// ───── dead peers: the other end went away without a word ─────

/**
 * Host A's keepalive clock, in seconds, set inside host A only (`ip netns
 * exec A sysctl -w ...`: the machine's own stays as it is). Linux's
 * defaults are 7200, 75 and 9: two hours of silence before the first
 * probe, then up to nine probes 75 s apart, 2 h 11 min in all. Here: 2 s
 * of silence, then a probe a second, and three unanswered ones end it.
 */
const KEEPALIVE = { time: 2, intvl: 1, probes: 3 };
/** How long we watch server.ts's log for its close line once B is gone. */
const WATCH_S = 10;
/** An idle timeout long enough to stay out of the way: an hour. */
const LONG_IDLE_S = 3600;
/** The application's own clock: close a connection quiet this long. */
const SHORT_IDLE_S = 3;

/** One server.ts in A for the dead-peer table: its flags and its port. */
interface Watched {
  flags: string;
  port: number;
  server: Started;
}

/** A connection from B, open and quiet: its client, and B's end of it. */
interface Quiet {
  talk: Talk;
  /** B's address:port, as server.ts's open line names it. */
  remote: string;
  /** Where that open line is in server.ts's log. */
  from: number;
}

/** What server.ts did once B was gone: its close line's time and reason. */
export interface Noticed {
  /** Seconds from B going away to server.ts's close line; null: still open. */
  seconds: number | null;
  /** The reason at the end of the close line. */
  reason: string;
}

/**
 * The dead-peer table. client.ts in B opens a connection to each of three
 * server.ts in A (no keepalive; keepalive; a short idle timeout), says
 * hello and goes quiet. Then B goes away, twice: its cable pulled (B's end
 * of the veth pair down: no FIN, no RST, nothing at all crosses), then,
 * cable back in, its program frozen (SIGSTOP: the program stops, but B's
 * kernel still answers for its sockets). Each time, for WATCH_S seconds,
 * we read server.ts's log for the connection's close line.
 */
async function deadPeers(lab: Lab, a: Host, b: Host): Promise<void> {
  // Keepalive is the kernel's: it probes, so the prober's clock counts.
  await lab.sysctl(a, {
    "net.ipv4.tcp_keepalive_time": KEEPALIVE.time,
    "net.ipv4.tcp_keepalive_intvl": KEEPALIVE.intvl,
    "net.ipv4.tcp_keepalive_probes": KEEPALIVE.probes,
  });
  const kinds = [
    `--idle-timeout ${LONG_IDLE_S}`,
    `--idle-timeout ${LONG_IDLE_S} --keepalive`,
    `--idle-timeout ${SHORT_IDLE_S}`,
  ];
  const watched: Watched[] = await Promise.all(kinds.map(async (flags, i) => {
    const port = PORT + i;
    const server = await lab.startServer(a, "server.ts", [
      ...["--hostname", a.addr, "--port", `${port}`],
      ...flags.split(" "),
    ]);
    if (!server.listening) {
      throw new Error(`server.ts ${flags} did not start: ${server.error}`);
    }
    return { flags, port, server };
  }));

  // 1. B's cable pulled. A's end of the pair loses its carrier, and that
  // is all: no packet tells A's TCP that anything happened.
  const cut = await Promise.all(watched.map((w) => openQuiet(lab, a, b, w)));
  await lab.ip(`-n ${b.netns} link set ${b.link} down`);
  const cutAt = performance.now();
  const afterCut = await Promise.all(
    watched.map((w, i) => noticed(w, cut[i], cutAt)),
  );
  // The cable back in: the connection no one gave up on still works; the
  // one keepalive ended is unknown to A now, and A's kernel says so (RST).
  await lab.ip(`-n ${b.netns} link set ${b.link} up`);
  const again = await Promise.all([cut[0], cut[1]].map((q) => sayAgain(q)));
  for (const q of cut) await lab.stop(q.talk.child);

  // 2. B's program frozen (what Ctrl-Z does): B's kernel is alive and
  // still ACKs for the socket, keepalive probes included.
  const frozen = await Promise.all(
    watched.map((w) => openQuiet(lab, a, b, w)),
  );
  for (const q of frozen) lab.freeze(q.talk.child);
  const frozenAt = performance.now();
  const afterFreeze = await Promise.all(
    watched.map((w, i) => noticed(w, frozen[i], frozenAt)),
  );
  for (const q of frozen) await lab.stop(q.talk.child);
  for (const w of watched) await lab.stop(w.server.child);

  printDeadPeers(
    watched.map((w, i) => ({
      flags: w.flags,
      cut: afterCut[i],
      frozen: afterFreeze[i],
    })),
    again,
    b,
  );
}

/**
 * client.ts in B, netcat mode (no MESSAGE: stdin to the socket, the socket
 * to stdout), stdin kept open: connect to `w`, say hello, read the echo.
 * Then the connection is quiet, as a session waiting for its user is.
 */
async function openQuiet(
  lab: Lab,
  a: Host,
  b: Host,
  w: Watched,
): Promise<Quiet> {
  const from = w.server.log.lines.length;
  const talk = lab.talk(b, "client.ts", [
    ...["--hostname", a.addr, "--port", `${w.port}`],
  ]);
  const open = await w.server.log.waitFor(
    /^tcp open local \S+ remote (\S+)/,
    START_TIMEOUT_MS,
    from,
  );
  if (!open) {
    throw new Error(
      `client.ts in B did not connect to server.ts ${w.flags}: ${await talk
        .error()}`,
    );
  }
  await talk.say("hello\n");
  if (!await talk.out.waitFor(/^hello$/, START_TIMEOUT_MS)) {
    throw new Error(
      `server.ts ${w.flags} did not echo: ${await talk.error()}`,
    );
  }
  return {
    talk,
    remote: /remote (\S+)/.exec(open.text)![1],
    from: open.index,
  };
}

/** Wait (to WATCH_S after `since`) for server.ts's close line of `q`. */
async function noticed(w: Watched, q: Quiet, since: number): Promise<Noticed> {
  const escaped = q.remote.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const left = WATCH_S * 1000 - (performance.now() - since);
  const line = await w.server.log.waitFor(
    new RegExp(`^tcp close local \\S+ remote ${escaped} `),
    left,
    q.from,
  );
  if (!line) return { seconds: null, reason: "" };
  return {
    seconds: (line.at - since) / 1000,
    reason: / bytes: (.*)$/.exec(line.text)?.[1] ?? "(no reason given)",
  };
}

/** After the cable is back: B types a line; the echo, or client.ts's error. */
async function sayAgain(q: Quiet): Promise<string> {
  const text = "still there?";
  await q.talk.say(`${text}\n`);
  const echo = await Promise.race([
    q.talk.out.waitFor(new RegExp(`^${text.replace("?", "\\?")}$`), 10_000),
    q.talk.child.status.then(() => undefined),
  ]);
  return echo ? "echoed" : await q.talk.error();
}

// ───── one to many: multicast, broadcast, and chat over TCP ─────

/** Hosts C and D: the one-to-many part has four hosts on a switch. */
export const C_ADDR = "198.18.0.3";
export const D_ADDR = "198.18.0.4";
/**
 * The group. 239.255.0.0/16 is IPv4's organization-local multicast scope
 * (RFC 2365): multicast's private range, for use inside one site.
 */
export const GROUP = "239.255.0.1";
/** The link's broadcast address: the /24's last one, "every host here". */
export const BROADCAST = "198.18.0.255";
/**
 * Every multicast group lives in 224.0.0.0/4. A host needs a route there
 * to send to a group or to join one (it says which interface); a real
 * host's default route covers it, our hosts have none.
 */
const MULTICAST_NET = "224.0.0.0/4";
/** udp.ts send: how long to collect replies from a group. */
const GROUP_TIMEOUT_MS = 1000;
/** How long a host's udp.ts serve may take to log a datagram that came. */
const LOG_WAIT_MS = 1000;

/** The switch: a namespace holding one bridge, a port per host. */
export interface Switch {
  netns: string;
  bridge: string;
}

/** The four hosts and the switch of this run, named after our process id. */
export function switchedHosts(id = Deno.pid): { hosts: Host[]; sw: Switch } {
  const hosts = [["A", A_ADDR], ["B", B_ADDR], ["C", C_ADDR], ["D", D_ADDR]]
    .map(([label, addr]) => {
      const x = label.toLowerCase();
      return {
        label,
        netns: `lab-${id}-${x}`,
        link: `lab${id}${x}`,
        addr,
        port: `port-${x}`,
      };
    });
  return { hosts, sw: { netns: `lab-${id}-s`, bridge: "br0" } };
}

/**
 * Build the switch and its hosts. A bridge is a switch in software: it
 * learns which address is behind which port and forwards frames there;
 * broadcast, and multicast it knows nothing about, go out of every port.
 * Each cable (veth pair) is made inside the switch with its other end put
 * straight into the host: nothing appears in this machine's namespace.
 */
async function buildSwitch(lab: Lab, sw: Switch, hosts: Host[]) {
  await addNamespace(lab, sw.netns);
  await lab.ip(
    `-n ${sw.netns} link add ${sw.bridge} type bridge`,
    (why) =>
      `cannot create a bridge (${why}); the kernel needs bridge support: modprobe bridge`,
  );
  await lab.ip(`-n ${sw.netns} link set ${sw.bridge} up`);
  for (const h of hosts) {
    await addNamespace(lab, h.netns);
    await lab.ip(
      `-n ${sw.netns} link add ${h.port} type veth peer name ${h.link} netns ${h.netns}`,
    );
    await lab.ip(`-n ${sw.netns} link set ${h.port} master ${sw.bridge}`);
    await lab.ip(`-n ${sw.netns} link set ${h.port} up`);
    await lab.ip(`-n ${h.netns} addr add ${h.addr}/${PREFIX} dev ${h.link}`);
    await lab.ip(`-n ${h.netns} link set ${h.link} up`);
    await lab.ip(`-n ${h.netns} link set lo up`);
    await lab.ip(`-n ${h.netns} route add ${MULTICAST_NET} dev ${h.link}`);
  }
}

/** One host's udp.ts serve in the one-to-many table. */
interface Receiver {
  host: Host;
  join: boolean;
  server: Started;
}

/** A datagram udp.ts send sent: where to, what it printed, who logged it. */
export interface Sent {
  to: string;
  what: string;
  /** udp.ts send's stdout lines (the replies) and its error line, if any. */
  printed: string[];
  /** Per receiver: whether its udp.ts serve logged the datagram. */
  got: boolean[];
}

/** What one client read in the chat: one line. */
export interface Heard {
  who: string;
  line: string;
}

/**
 * One to many, two ways. UDP: udp.ts serve in B, C and D (bound to
 * 0.0.0.0: a socket bound to one unicast address gets no multicast or
 * broadcast); B and C join the group, D does not. udp.ts send in A sends
 * one datagram to the group, then one to the broadcast address, and each
 * server's log says whether it came. TCP: chat.ts in A, client.ts in B, C
 * and D; a line from B is read by C and D, and not by B.
 */
async function oneToMany(lab: Lab, hosts: Host[]): Promise<void> {
  const [a, b, c, d] = hosts;
  const receivers: Receiver[] = await Promise.all(
    [{ host: b, join: true }, { host: c, join: true }, {
      host: d,
      join: false,
    }].map(async (r) => {
      const server = await lab.startServer(r.host, "udp.ts", [
        ...["serve", "--hostname", "0.0.0.0", "--port", `${PORT}`],
        ...(r.join ? ["--join", GROUP] : []),
      ]);
      if (!server.listening) {
        throw new Error(
          `udp.ts serve in host ${r.host.label} did not start: ${server.error}`,
        );
      }
      return { ...r, server };
    }),
  );

  const sends: Sent[] = [];
  for (
    const [to, what, extra] of [
      [GROUP, "the group", ["--ttl", "1"]], // TTL 1: this link only
      [BROADCAST, "the broadcast address", []],
    ] as const
  ) {
    const marks = receivers.map((r) => r.server.log.lines.length);
    const run = await lab.run(a, "udp.ts", [
      ...["send", "--hostname", to, "--port", `${PORT}`, ...extra],
      ...["--timeout", `${GROUP_TIMEOUT_MS}`, `hello, ${what}`],
    ]);
    // udp.ts send is done (it collected replies for a second): whatever
    // reached a server is in its log by now, or within a moment.
    const got = await Promise.all(receivers.map(async (r, i) =>
      Boolean(
        await r.server.log.waitFor(
          new RegExp(
            `^udp datagram .* remote ${a.addr.replaceAll(".", "\\.")}:`,
          ),
          LOG_WAIT_MS,
          marks[i],
        ),
      )
    ));
    const printed = run.out.split("\n").filter((l) => l.trim());
    if (run.code !== 0) printed.push(run.error);
    sends.push({ to, what, printed, got });
  }
  for (const r of receivers) await lab.stop(r.server.child);

  const heard = await chat(lab, a, [b, c, d]);
  printOneToMany(receivers, sends, heard, a);
}

/**
 * chat.ts in A, client.ts in `clients` (netcat mode, stdin open). Each
 * client waits for its welcome; then the first says a line, the second
 * answers. Returns the lines read, in order, per client.
 */
async function chat(lab: Lab, a: Host, clients: Host[]): Promise<Heard[]> {
  const server = await lab.startServer(a, "chat.ts", [
    ...["--hostname", a.addr, "--port", `${PORT}`],
  ]);
  if (!server.listening) {
    throw new Error(`chat.ts did not start: ${server.error}`);
  }
  const talks = clients.map((h) =>
    lab.talk(h, "client.ts", ["--hostname", a.addr, "--port", `${PORT}`])
  );
  for (const [i, t] of talks.entries()) {
    if (!await t.out.waitFor(/^\* you are /, START_TIMEOUT_MS)) {
      throw new Error(
        `client.ts in host ${
          clients[i].label
        } was not welcomed by chat.ts: ${await t
          .error()}`,
      );
    }
  }
  const heard: Heard[] = [];
  const said = [
    { from: 0, text: `hello from ${clients[0].label}` },
    { from: 1, text: `hi ${clients[0].label}, ${clients[1].label} here` },
  ];
  for (const { from, text } of said) {
    heard.push({ who: `${clients[from].label} says`, line: text });
    await talks[from].say(`${text}\n`);
    for (const [i, t] of talks.entries()) {
      if (i === from) continue;
      const line = await t.out.waitFor(
        new RegExp(`: ${text}$`),
        START_TIMEOUT_MS,
      );
      heard.push({
        who: `${clients[i].label} reads`,
        line: line?.text ?? `(nothing within ${START_TIMEOUT_MS} ms)`,
      });
    }
  }
  // Everything the first client read: its own line must not be there.
  const own = talks[0].out.lines.some((l) => l.text.endsWith(said[0].text));
  heard.push({
    who: `${clients[0].label} got its own line back`,
    line: own ? "yes" : "no",
  });
  for (const t of talks) await lab.stop(t.child);
  await lab.stop(server.child);
  return heard;
}

/**
 * The lab from start to end: check, build, show, and (always) remove.
 * Returns the exit code; throws an Error with a plain reason.
 */
export async function lab(options: LabOptions): Promise<number> {
  const { part } = options;
  const pair = labHosts();
  const switched = switchedHosts();
  const hosts = part === "one-to-many" ? switched.hosts : [pair.a, pair.b];
  const netns = hosts.map((h) => h.netns);
  if (part === "one-to-many") netns.push(switched.sw.netns);
  // A veth end that never reached its namespace (an error mid-build).
  const links = hosts.map((h) => h.link);
  await preflight(part, netns);
  const run = new Lab(options);
  const removeListener = removeAllOnSignals(run, netns, links);
  try {
    if (part === "one-to-many") {
      printSwitch(switched.sw, hosts);
      await buildSwitch(run, switched.sw, hosts);
      console.log();
      await oneToMany(run, hosts);
      return 0;
    }
    const { a, b } = pair;
    console.log(
      `two hosts in network namespaces, joined by a veth pair (${LINK_NET}):`,
    );
    for (const h of [a, b]) {
      console.log(
        `  host ${h.label}: namespace ${h.netns}, ${h.link} ${h.addr}/${PREFIX}, lo 127.0.0.1`,
      );
    }
    await buildHosts(run, a, b);
    if (part === "dead-peer") {
      console.log(
        `  in host A only: net.ipv4.tcp_keepalive_time=${KEEPALIVE.time}, tcp_keepalive_intvl=${KEEPALIVE.intvl}, tcp_keepalive_probes=${KEEPALIVE.probes}`,
      );
      console.log();
      await deadPeers(run, a, b);
      return 0;
    }

    // What A's host name means inside A: the namespace has its own network
    // but reads the same /etc/hosts as this machine.
    const name = await run.hostName(a);
    const resolved = await run.resolve(a, name);
    console.log(
      `  A's host name is "${name}"; inside A, \`getent hosts ${name}\` says: ${
        resolved || "(nothing: the name does not resolve)"
      }`,
    );
    console.log();

    await whoCanReachYou(run, a, b, name);
    console.log();
    await threeFailures(run, a, b);
    return 0;
  } finally {
    removeListener();
    await run.removeAll(netns, links);
  }
}

// Run as a program (not imported): main and the plumbing it uses are below
// this line, so start once the whole file has loaded.
if (import.meta.main) addEventListener("load", () => runMain(main, USAGE));

// ───── plumbing: flags, usage, errors, signals, limits ─────

/** Everything lab.ts can be told on the command line. */
export interface LabOptions {
  /** Print each `ip` and `deno` command as it runs. */
  verbose: boolean;
  /** Which lab: who can reach you (the default), dead peers, one to many. */
  part: LabPart;
}

/** The three runs of the lab. */
export type LabPart = "reach" | "dead-peer" | "one-to-many";

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE =
  `usage: deno task lab [--dead-peer | --one-to-many] [--verbose]
       deno run --allow-run --allow-read --allow-env lab.ts [--dead-peer | --one-to-many] [--verbose]

Builds two hosts, A (${A_ADDR}) and B (${B_ADDR}), from two Linux network
namespaces joined by a veth pair, runs server.ts and udp.ts in A bound to
127.0.0.1, to A's link address, to 0.0.0.0 and to A's host name, and tries
each from A and from B with client.ts and udp.ts send. Prints what reached
what, then the three ways a connect fails: refused, no route, timeout.
Takes about 5 seconds.

--dead-peer: client.ts in B holds a quiet connection to server.ts in A,
then B's cable is pulled, or B's program frozen; prints how long server.ts
took to notice, without keepalive, with --keepalive (the kernel's keepalive
clock set to seconds inside A) and with a short --idle-timeout. About 20 s.

--one-to-many: four hosts, A to D, on one switch (a bridge); one datagram
from A to the group ${GROUP} (B and C joined it, D did not) and one
to the broadcast address ${BROADCAST}, then chat.ts in A with a client
in B, C and D. About 10 s.

Removes everything it made when it ends, also on Ctrl-C. Needs Linux, root
(for ip netns) and the ip command (iproute2); --dead-peer also sysctl
(procps). Uses only addresses from 198.18.0.0/15 and groups from
239.255.0.0/16; never touches this machine's own interfaces, routes or
sysctls.

options:
  --dead-peer     the dead-peer run instead of the default one
  --one-to-many   the one-to-many run instead of the default one
  --verbose       print every ip, sysctl, deno and kill command as it runs
                  (copy them to build the lab by hand)
  --help          show this help`;

const FLAGS = {
  "dead-peer": { type: "boolean" },
  "one-to-many": { type: "boolean" },
  verbose: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsOptionsConfig;

/** Parse the command line; `"help"` for `--help`. */
export function parseLabArgs(args: string[]): LabOptions | "help" {
  const { values } = parseFlags(args, FLAGS);
  if (values.help) return "help";
  if (values["dead-peer"] && values["one-to-many"]) {
    throw new UsageError(
      "--dead-peer and --one-to-many are two separate runs: give one of them",
    );
  }
  const part: LabPart = values["dead-peer"]
    ? "dead-peer"
    : values["one-to-many"]
    ? "one-to-many"
    : "reach";
  return { verbose: values.verbose ?? false, part };
}

/**
 * The command-line program: the lab, its exit status, and errors said for
 * a person (a missing Deno grant names the command that has them).
 */
async function main(args: string[]): Promise<number> {
  const options = parseLabArgs(args);
  if (options === "help") {
    await writeStdout(USAGE + "\n");
    return 0;
  }
  try {
    return await lab(options);
  } catch (err) {
    // Stopped by a signal: what failed then was our own clean-up at work.
    if (stoppedBy) return exitCodeOf(stoppedBy);
    if (err instanceof Deno.errors.NotCapable) {
      throw new Error(
        `Deno did not grant what the lab needs (${
          errorText(err)
        }); run it with deno task lab, or deno run --allow-run --allow-read --allow-env lab.ts`,
      );
    }
    throw err;
  }
}

// --- preflight: say why the lab cannot work, before making anything -------

/** The scripts the lab runs, from lab.ts's own folder. */
const SCRIPTS: Record<LabPart, string[]> = {
  reach: ["server.ts", "client.ts", "udp.ts"],
  "dead-peer": ["server.ts", "client.ts"],
  "one-to-many": ["udp.ts", "chat.ts", "client.ts"],
};

function scriptPath(script: string): string {
  // A URL's path is percent-encoded ("My%20Projects"): decode it for a path.
  return decodeURIComponent(new URL(script, import.meta.url).pathname);
}

/**
 * Where a system tool is (`ip`, `sysctl`): on PATH, or in /usr/sbin or
 * /sbin (not on every PATH).
 */
function findTool(name: string): string | undefined {
  const dirs = [
    ...(Deno.env.get("PATH") ?? "").split(":").filter((d) => d),
    "/usr/sbin",
    "/sbin",
  ];
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch { /* not here */ }
  }
  return undefined;
}

async function preflight(part: LabPart, netns: string[]) {
  if (Deno.build.os !== "linux") {
    throw new Error(
      `the lab needs Linux network namespaces, and this is ${Deno.build.os}; run it in a Linux VM (or WSL 2) as root`,
    );
  }
  for (const script of SCRIPTS[part]) {
    try {
      Deno.statSync(scriptPath(script));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      throw new Error(
        `${script} is not beside lab.ts (${
          scriptPath(script)
        }); the lab runs the playground's scripts, so keep them in one folder`,
      );
    }
  }
  if (!findTool("ip")) {
    throw new Error(
      "the ip command (iproute2) is not installed, or not in PATH, /usr/sbin or /sbin; install it (apt-get install iproute2) and try again",
    );
  }
  if (part === "dead-peer" && !findTool("sysctl")) {
    throw new Error(
      "the sysctl command (procps) is not installed, or not in PATH, /usr/sbin or /sbin; install it (apt-get install procps) and try again",
    );
  }
  const uid = await output("id", ["-u"]).catch(() => "");
  if (uid.trim() !== "0") {
    throw new Error(
      `the lab needs root to create network namespaces (ip netns add), and this is user id ${
        uid.trim() || "unknown"
      }; run it as root: sudo "$(command -v deno)" task lab${
        part === "reach" ? "" : ` --${part}`
      }`,
    );
  }
  const existing = await output(findTool("ip")!, ["netns", "list"])
    .catch(() => "");
  for (const ns of netns) {
    if (existing.split(/\s+/).includes(ns)) {
      throw new Error(
        `a namespace named ${ns} already exists (left by an earlier run?); remove it with: ip netns del ${ns}`,
      );
    }
  }
}

/** Run a short command, return its stdout; throw with its stderr. */
async function output(command: string, args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    stdin: "null",
  }).output();
  if (code !== 0) {
    throw new Error(new TextDecoder().decode(stderr).trim() || `exit ${code}`);
  }
  return new TextDecoder().decode(stdout);
}

// --- running things inside the hosts, and removing them all ---------------

/** A server started by {@link Lab.startServer}. */
interface Started {
  child: Deno.ChildProcess;
  /** Its stdout, line by line: the listening line, then its log. */
  log: LineLog;
  /** Its first stdout line, `tcp listening on HOST:PORT`, or "". */
  listening: string;
  /** Its `error:` line when it did not start. */
  error: string;
}

/** A client in a conversation, started by {@link Lab.talk}. */
interface Talk {
  child: Deno.ChildProcess;
  /** What it printed: what came from the socket, line by line. */
  out: LineLog;
  /** Type `text` into its stdin (false if it is gone). */
  say(text: string): Promise<boolean>;
  /** Once it has ended: its `error:` line (or how it ended). */
  error(): Promise<string>;
}

/** What a script run to its end by {@link Lab.run} did. */
interface Ran {
  code: number;
  out: string;
  /** Its `error:` line (or its first line on stderr), "" if none. */
  error: string;
  /** Wall time of the whole run, Deno's start-up included. */
  ms: number;
}

/** How long a server may take to print its listening line. */
const START_TIMEOUT_MS = 20_000;
const CHILD_ENV = { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
const DENO_FLAGS = ["run", "--allow-net", "--unstable-net"];

/**
 * Everything one run made, so that it can all be removed: the child
 * processes, the namespaces and the veth pair.
 */
class Lab {
  #ip = findTool("ip") ?? "ip";
  #sysctl = findTool("sysctl") ?? "sysctl";
  #children = new Set<Deno.ChildProcess>();
  #closing = false;
  #removed: Promise<void> | undefined;
  constructor(readonly options: LabOptions) {}

  /** --verbose: the command as a person would type it in the project folder. */
  #say(argv: string[]) {
    if (!this.options.verbose) return;
    const words = argv.map((w) =>
      w === this.#ip
        ? "ip"
        : w === this.#sysctl
        ? "sysctl"
        : w === Deno.execPath()
        ? "deno"
        : w.startsWith(scriptPath("."))
        ? w.slice(scriptPath(".").length)
        : /[^\w@%+=:,./-]/.test(w)
        ? `'${w.replaceAll("'", `'"'"'`)}'`
        : w
    );
    console.log(`  $ ${words.join(" ")}`);
  }

  #spawn(
    argv: string[],
    stdin: "null" | "piped" = "null",
  ): Deno.ChildProcess {
    if (this.#closing) throw new Error("the lab is being removed");
    this.#say(argv);
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: CHILD_ENV,
      stdin,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#children.add(child);
    child.status.finally(() => this.#children.delete(child));
    return child;
  }

  /**
   * Run `ip` with `command` (words split on spaces, as in a shell); a
   * failure is an Error with ip's own words.
   */
  async ip(
    command: string,
    explain = (why: string) => `ip ${command} failed: ${why}`,
  ): Promise<string> {
    const args = command.split(" ");
    const { code, stdout, stderr } = await this.#spawn([this.#ip, ...args])
      .output();
    if (code !== 0) {
      throw new Error(
        explain(new TextDecoder().decode(stderr).trim() || `exit ${code}`),
      );
    }
    return new TextDecoder().decode(stdout);
  }

  /**
   * The host name, as `hostname` prints it inside `host` (the namespaces
   * share this machine's name: `ip netns` gives them their own network,
   * not their own name).
   */
  async hostName(host: Host): Promise<string> {
    const child = this.#spawn([
      this.#ip,
      "netns",
      "exec",
      host.netns,
      "hostname",
    ]);
    const { code, stdout } = await child.output();
    const name = new TextDecoder().decode(stdout).trim();
    if (code !== 0 || !name) {
      throw new Error("the hostname command printed no name");
    }
    return name;
  }

  /** What `name` resolves to inside `host`: getent's line, or "". */
  async resolve(host: Host, name: string): Promise<string> {
    const child = this.#spawn([
      this.#ip,
      "netns",
      "exec",
      host.netns,
      "getent",
      "hosts",
      name,
    ]);
    const { stdout } = await child.output();
    return new TextDecoder().decode(stdout).split("\n")[0].replace(/\s+/g, " ")
      .trim();
  }

  /** `ip netns exec NS deno run ... SCRIPT ARGS`: a script inside a host. */
  #script(
    host: Host,
    script: string,
    args: string[],
    stdin: "null" | "piped" = "null",
  ): Deno.ChildProcess {
    return this.#spawn([
      this.#ip,
      "netns",
      "exec",
      host.netns,
      Deno.execPath(),
      ...DENO_FLAGS,
      scriptPath(script),
      ...args,
    ], stdin);
  }

  /**
   * Set kernel settings inside `host` only: `ip netns exec` runs sysctl in
   * the host's namespace, where net.* settings are that namespace's own.
   */
  async sysctl(host: Host, settings: Record<string, number>): Promise<void> {
    const pairs = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
    const { code, stderr } = await this.#spawn([
      ...[this.#ip, "netns", "exec", host.netns, this.#sysctl, "-q", "-w"],
      ...pairs,
    ]).output();
    if (code !== 0) {
      throw new Error(
        `sysctl in host ${host.label} failed: ${
          new TextDecoder().decode(stderr).trim() || `exit ${code}`
        }`,
      );
    }
  }

  /** Start a listening script in `host`; read its listening line. */
  async startServer(
    host: Host,
    script: string,
    args: string[],
  ): Promise<Started> {
    const child = this.#script(host, script, args);
    // Keep reading its output: an unread pipe fills up and blocks it.
    const log = new LineLog(child.stdout);
    const first = await log.waitFor(/^/, START_TIMEOUT_MS);
    const listening = first?.text ?? "";
    if (/^(tcp|udp) listening on /.test(listening)) {
      child.stderr.pipeTo(new WritableStream()).catch(() => {});
      return { child, log, listening, error: "" };
    }
    try {
      child.kill("SIGKILL"); // silent for too long, or not a listening line
    } catch { /* gone */ }
    await child.status;
    const err = await new Response(child.stderr).text();
    return {
      child,
      log,
      listening: "",
      error: errorLine(err) ||
        `${script} printed no listening line within ${START_TIMEOUT_MS} ms`,
    };
  }

  /** Run a script in `host` to its end: its stdout and `error:` line. */
  async run(host: Host, script: string, args: string[]): Promise<Ran> {
    const start = performance.now();
    const { code, stdout, stderr } = await this.#script(host, script, args)
      .output();
    return {
      code,
      out: new TextDecoder().decode(stdout),
      error: errorLine(new TextDecoder().decode(stderr)),
      ms: Math.round(performance.now() - start),
    };
  }

  /** Run a client in `host` to its end: the echo, or its `error:` line. */
  async probe(host: Host, script: string, args: string[]): Promise<Probe> {
    const sent = args[args.length - 1];
    const { code, out, error, ms } = await this.run(host, script, args);
    const ok = code === 0 && out === sent;
    return {
      ok,
      error: ok ? "" : error || `exit ${code}, got ${JSON.stringify(out)}`,
      ms,
    };
  }

  /**
   * Start a client in `host` with its stdin open, as a person at a
   * terminal runs it: type lines with `say`, read `out`.
   */
  talk(host: Host, script: string, args: string[]): Talk {
    const child = this.#script(host, script, args, "piped");
    const out = new LineLog(child.stdout);
    const stderr = new Response(child.stderr).text().catch(() => "");
    const stdin = child.stdin.getWriter();
    stdin.closed.catch(() => {}); // it may end before we stop typing
    const encoder = new TextEncoder();
    return {
      child,
      out,
      say: (text) =>
        stdin.write(encoder.encode(text)).then(() => true, () => false),
      error: async () => {
        const { code, signal } = await child.status;
        return errorLine(await stderr) ||
          (signal ? `stopped by ${signal}` : `exit ${code}`);
      },
    };
  }

  /**
   * Wait until the listener on `port` in `host` has `count` connections in
   * its accept queue (ss: Recv-Q); return ss's line. Polls the kernel's
   * own count, for at most 10 s.
   */
  async waitForQueue(host: Host, port: number, count: number) {
    const deadline = performance.now() + 10_000;
    let line = "";
    while (performance.now() < deadline) {
      const child = this.#spawn([
        this.#ip,
        "netns",
        "exec",
        host.netns,
        "ss",
        "-ltnH",
        `sport = :${port}`,
      ]);
      line = new TextDecoder().decode((await child.output()).stdout).trim()
        .replace(/\s+/g, " ");
      if (Number(line.split(" ")[1]) >= count) return line;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `the listen queue of port ${port} in host ${host.label} never held ${count} connections (ss: ${
        line || "no listener"
      })`,
    );
  }

  /** SIGSTOP, what Ctrl-Z sends: the process stops running, its sockets stay. */
  freeze(child: Deno.ChildProcess): void {
    this.#say(["kill", "-STOP", `${child.pid}`]);
    child.kill("SIGSTOP");
  }

  /** Stop a server: SIGKILL (a frozen one cannot act on SIGTERM). */
  async stop(child: Deno.ChildProcess): Promise<void> {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
  }

  /**
   * Remove everything this run made, once, whatever state it is in: kill
   * our processes (and anything else still inside the namespaces), delete
   * the namespaces (a veth end inside one goes with it) and a veth pair
   * that never made it into one.
   */
  removeAll(netns: string[], links: string[]): Promise<void> {
    this.#removed ??= this.#removeAll(netns, links);
    return this.#removed;
  }

  async #removeAll(netns: string[], links: string[]): Promise<void> {
    this.#closing = true;
    const children = [...this.#children];
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await Promise.allSettled(children.map((c) => c.status));
    const left: string[] = [];
    const quiet = async (args: string[]) => {
      const { code, stdout } = await new Deno.Command(this.#ip, {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).output().catch(() => ({ code: 1, stdout: new Uint8Array() }));
      return { code, out: new TextDecoder().decode(stdout) };
    };
    const names = (await quiet(["netns", "list"])).out;
    for (const ns of netns) {
      if (!names.split(/\s+/).includes(ns)) continue;
      const pids = (await quiet(["netns", "pids", ns])).out.split(/\s+/);
      for (const pid of pids) {
        if (/^\d+$/.test(pid)) {
          try {
            Deno.kill(Number(pid), "SIGKILL");
          } catch { /* gone */ }
        }
      }
      if ((await quiet(["netns", "del", ns])).code !== 0) {
        left.push(`ip netns del ${ns}`);
      }
    }
    for (const link of links) {
      // Only if it never moved into its namespace (an error mid-build).
      if ((await quiet(["link", "show", link])).code === 0) {
        if ((await quiet(["link", "del", link])).code !== 0) {
          left.push(`ip link del ${link}`);
        }
      }
    }
    if (left.length) {
      console.error(
        `warning: could not remove everything; as root, run: ${
          left.join("; ")
        }`,
      );
    }
  }
}

/** The first `error:` line of a script's stderr (or its first line). */
function errorLine(stderr: string): string {
  const all = stderr.split("\n").filter((l) => l.trim());
  return all.find((l) => l.startsWith("error:")) ?? all[0] ?? "";
}

/**
 * A child's output, line by line, each line with the time it arrived, so
 * that a lab part can wait for a line ("tcp close ...") and say when it
 * came. Reads to the end of the stream: an unread pipe would block the
 * child once full.
 */
class LineLog {
  readonly lines: { text: string; at: number }[] = [];
  #ended = false;
  #wake = new Set<() => void>();

  constructor(stream: ReadableStream<Uint8Array>) {
    (async () => {
      for await (const text of lines(stream)) {
        this.lines.push({ text, at: performance.now() });
        this.#notify();
      }
    })().catch(() => {}).finally(() => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify() {
    for (const wake of [...this.#wake]) wake();
  }

  /**
   * The first line at index `from` or later that matches `re`, waiting up
   * to `ms` for it; undefined if none came (or the stream ended first).
   */
  async waitFor(
    re: RegExp,
    ms: number,
    from = 0,
  ): Promise<{ text: string; at: number; index: number } | undefined> {
    const deadline = performance.now() + ms;
    for (let i = from;; i++) {
      while (i >= this.lines.length) {
        const left = deadline - performance.now();
        if (this.#ended || left <= 0) return undefined;
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            this.#wake.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, left);
          this.#wake.add(wake);
        });
      }
      if (re.test(this.lines[i].text)) return { ...this.lines[i], index: i };
    }
  }
}

/** The lines of a stream, as they come. */
async function* lines(stream: ReadableStream<Uint8Array>) {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    rest += text;
    let nl;
    while ((nl = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, nl);
      rest = rest.slice(nl + 1);
    }
  }
  if (rest) yield rest;
}

/** The signal that stopped the lab, if one did. */
let stoppedBy: Deno.Signal | undefined;

/** The shell's exit status for a process stopped by `signal`. */
function exitCodeOf(signal: Deno.Signal): number {
  return signal === "SIGINT" ? 130 : signal === "SIGHUP" ? 129 : 143;
}

/**
 * Ctrl-C, SIGTERM or SIGHUP (the terminal closed, the SSH session dropped):
 * remove everything, then exit (130 / 143 / 129). A second signal while
 * removing exits at once, with the commands to finish by hand.
 */
function removeAllOnSignals(
  run: Lab,
  netns: string[],
  links: string[],
): () => void {
  return onStopSignals(async (signal) => {
    stoppedBy = signal;
    console.error(`lab: ${signal}: removing the namespaces and processes`);
    await run.removeAll(netns, links);
    Deno.exit(exitCodeOf(signal));
  }, () => {
    console.error(
      `error: stopped before the lab was removed; as root, run: ${
        netns.map((ns) => `ip netns del ${ns}`).join("; ")
      }`,
    );
    Deno.exit(1);
  }, ["SIGINT", "SIGTERM", "SIGHUP"]);
}

// --- printing ---------------------------------------------------------------

/** An error line cut to its first clause, for the footnotes. */
function shorten(error: string, max = 120): string {
  const cut = error
    .replace(/ \(after \d+ ms\)/, "") // the table has its own times
    .split("; ")[0] // the advice after ";" is for a person at a prompt
    .split(": ").slice(0, 3).join(": "); // "error: what: why"
  return cut.length > max ? cut.slice(0, max - 1) + "…" : cut;
}

function printTable(rows: Row[], targets: Target[], name: string): void {
  console.log(
    "Who can reach you: server.ts (tcp) and udp.ts (udp) in host A, tried with",
  );
  console.log(
    'client.ts and udp.ts send from A itself and from B. A cell says "echo" when',
  );
  console.log(
    "the bytes came back, or the miss [n] below; times are whole client runs.",
  );
  console.log();
  const notes: string[] = [];
  const note = (error: string) => {
    const text = shorten(error);
    let i = notes.indexOf(text);
    if (i < 0) i = notes.push(text) - 1;
    return `[${i + 1}]`;
  };
  const cell = (p: Probe | null) =>
    !p ? "-" : p.ok ? `echo ${p.ms} ms` : `✗ ${note(p.error)} ${p.ms} ms`;
  const listening = (s: Served) =>
    s.listening
      ? s.listening.replace(/^(tcp|udp) listening on /, "")
      : `did not start ${note(s.error)}`;
  const head = [
    "bound to",
    "proto",
    "listening on",
    ...targets.map((t) => `${t.from.label} → ${t.to}`),
  ];
  const table: string[][] = [head];
  for (const r of rows) {
    const first = `${r.bind} (${r.why})`;
    table.push([first, "tcp", listening(r.tcp), ...r.tcp.probes.map(cell)]);
    table.push(["", "udp", listening(r.udp), ...r.udp.probes.map(cell)]);
  }
  const widths = head.map((_, i) => Math.max(...table.map((r) => r[i].length)));
  for (const r of table) {
    console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  }
  console.log();
  notes.forEach((n, i) => console.log(`[${i + 1}] ${n}`));

  // What the name turned into, as server.ts itself reported it.
  const named = rows.find((r) => r.bind === name)?.tcp.listening ?? "";
  const resolved = /listening on (.*):\d+$/.exec(named)?.[1] ?? "";
  const nameLine = resolved === ""
    ? `here server.ts could not bind\n  "${name}" at all: it resolves to no address that host A has.`
    : resolved.startsWith("127.")
    ? `here "${name}"\n  resolves to ${resolved} (/etc/hosts), so binding to the name binds to\n  loopback, and B cannot reach it.`
    : `here "${name}"\n  resolves to ${resolved}, and binding to the name binds to that address.`;
  console.log(`
What to remember:
- 127.0.0.1 is loopback, private to its host: B cannot reach it, and even A
  cannot reach it through its link address. B's own 127.0.0.1 is B itself.
- A socket bound to one address answers on that address only: bound to
  ${A_ADDR}, A itself cannot reach it as 127.0.0.1.
- 0.0.0.0 means every interface of the host: loopback and the link alike.
- A name is only as public as the address it resolves to: ${nameLine}
- A TCP miss is a refusal (RST: a host answered, nothing listens on that
  address); a UDP miss is only silence, so udp.ts send waits out its timeout.
- A firewall that drops packets turns a refusal into a timeout (see 3 below).`);
}

function printFailures(failures: Failure[]): void {
  console.log("The three ways a connect fails (client.ts in host B):");
  for (const f of failures) {
    console.log();
    console.log(`${f.title}: ${f.where}`);
    for (const w of f.wire) console.log(`   ${w}`);
    console.log(
      `   client.ts said (its whole run took ${f.probe.ms} ms, Deno's start-up included):`,
    );
    console.log(
      `   ${
        f.probe.ok ? "(it connected: this case did not happen)" : f.probe.error
      }`,
    );
  }
}

/** The hosts of the one-to-many run and the switch between them. */
function printSwitch(sw: Switch, hosts: Host[]): void {
  console.log(
    `${hosts.length} hosts in network namespaces, on one switch (${LINK_NET}):`,
  );
  console.log(
    `  switch: namespace ${sw.netns}, bridge ${sw.bridge}, ports ${
      hosts.map((h) => h.port).join(" ")
    }`,
  );
  for (const h of hosts) {
    console.log(
      `  host ${h.label}: namespace ${h.netns}, ${h.link} ${h.addr}/${PREFIX} (cable to ${h.port}), route ${MULTICAST_NET} dev ${h.link}`,
    );
  }
}

/** "closed after 5.1 s [1]" or "still open after 10 s". */
function noticedCell(n: Noticed, note: (reason: string) => string): string {
  return n.seconds === null
    ? `still open after ${WATCH_S} s`
    : `closed after ${n.seconds.toFixed(1)} s ${note(n.reason)}`;
}

function printDeadPeers(
  rows: { flags: string; cut: Noticed; frozen: Noticed }[],
  again: string[],
  b: Host,
): void {
  console.log(
    `Dead peers: client.ts in B holds a connection to each server.ts in A (netcat
mode, stdin open), says "hello", then goes quiet. Then B goes away, and for
${WATCH_S} s we read server.ts's log for the connection's close line.`,
  );
  console.log();
  const notes: string[] = [];
  const note = (reason: string) => {
    let i = notes.indexOf(reason);
    if (i < 0) i = notes.push(reason) - 1;
    return `[${i + 1}]`;
  };
  const table = [
    ["server.ts in A", "B's cable pulled", "B frozen"],
    ["", `(ip link set ${b.link} down)`, "(kill -STOP client.ts)"],
    ...rows.map((r) => [
      r.flags,
      noticedCell(r.cut, note),
      noticedCell(r.frozen, note),
    ]),
  ];
  const widths = table[0].map((_, i) =>
    Math.max(...table.map((r) => r[i].length))
  );
  for (const r of table) {
    console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  }
  console.log();
  notes.forEach((n, i) => console.log(`[${i + 1}] server.ts: ${n}`));
  console.log();
  console.log("With the cable back in, B typed one more line:");
  console.log(`  on the connection without keepalive: ${again[0]}`);
  console.log(`  on the one keepalive ended:          ${again[1]}`);
  const total = KEEPALIVE.time + KEEPALIVE.intvl * KEEPALIVE.probes;
  console.log(`
What to remember:
- A peer that vanishes sends nothing: no FIN, no RST. A connection on which
  no one sends is never checked, so without keepalive the server keeps it
  (and its memory, its slot under --max-connections) for ever.
- --keepalive (SO_KEEPALIVE) lets the kernel ask: after tcp_keepalive_time
  of silence (${KEEPALIVE.time} s here), a probe every tcp_keepalive_intvl (${KEEPALIVE.intvl} s), and
  tcp_keepalive_probes (${KEEPALIVE.probes}) unanswered ones end it: ${total} s from the last packet.
  The pending read fails with ETIMEDOUT. Linux's defaults are 7200, 75 and 9:
  2 h 11 min. They are set per network namespace (here in A only), or per
  socket (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT; Deno has no call for them).
- Keepalive asks the peer's kernel, not its program: a frozen or deadlocked
  program on a live host answers every probe. Only the application's own
  clock sees that: an idle timeout (server.ts --idle-timeout), or a
  heartbeat the protocol defines (a line every N s, answered; SSH's
  ServerAliveInterval, WebSocket ping/pong).
- A cut nobody sent through is harmless: once the cable is back, the
  connection works as before. Keepalive trades that for freeing the dead
  ones: the peer of a connection it ended gets a RST on its next packet.`);
}

function printOneToMany(
  receivers: Receiver[],
  sends: Sent[],
  heard: Heard[],
  a: Host,
): void {
  console.log(
    `One datagram, many hosts: udp.ts serve (bound to 0.0.0.0:${PORT}) in ${
      receivers.map((r) => r.host.label).join(", ")
    }; udp.ts send in A
sends one datagram to the group ${GROUP}, then one to the link's
broadcast address ${BROADCAST}. A cell says whether that host's
udp.ts serve logged it.`,
  );
  console.log();
  const table = [
    [
      "host",
      "udp.ts serve",
      ...sends.map((s) => `to ${s.to}`),
    ],
    ...receivers.map((r, i) => [
      `${r.host.label} ${r.host.addr}`,
      r.join ? `--join ${GROUP}` : "(no --join)",
      ...sends.map((s) => s.got[i] ? "got it" : "-"),
    ]),
  ];
  const widths = table[0].map((_, i) =>
    Math.max(...table.map((r) => r[i].length))
  );
  for (const r of table) {
    console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  }
  for (const s of sends) {
    console.log();
    console.log(`udp.ts send in A, to ${s.what} ${s.to}, printed:`);
    for (const line of s.printed) console.log(`  ${line}`);
    if (!s.printed.length) console.log("  (nothing)");
  }
  console.log();
  console.log(
    `Chat, one to many over TCP: chat.ts in A (${a.addr}:${PORT}), client.ts in ${
      receivers.map((r) => r.host.label).join(", ")
    } (netcat mode):`,
  );
  const width = Math.max(...heard.map((h) => h.who.length)) + 1;
  for (const h of heard) {
    console.log(`  ${`${h.who}:`.padEnd(width)} ${h.line}`);
  }
  console.log(`
What to remember:
- Multicast: A sent ONE datagram; the switch copied the frame out of every
  port (with no IGMP querier on the link, a bridge floods multicast), and
  each host's kernel kept it only if a socket there had joined the group
  (IP_ADD_MEMBERSHIP). D got the frame and dropped it. TTL 1 keeps it on
  this link; a router would forward it only to where members are.
- Broadcast: every host on the link gets it, joined or not: one datagram
  costs every host on the subnet a look. Routers never forward it, and
  IPv6 has no broadcast at all (only multicast).
- Replies are unicast: each receiver answers A's own address:port.
- TCP is one to one. chat.ts keeps a connection per client and writes each
  line once per other client: N clients, N - 1 copies, made by the server.`);
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

/** What went wrong, in words: an Error's message, or whatever was thrown. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
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
