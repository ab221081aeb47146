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
 * Everything happens inside the two namespaces, on addresses from
 * 198.18.0.0/15, the range RFC 2544 keeps for benchmarks (never routed on
 * the internet); the machine's own interfaces and routes are never
 * touched. The lab removes all it made (namespaces, the veth pair, the
 * processes) when it ends, also on Ctrl-C or an error. It needs Linux,
 * root and the `ip` command (iproute2); it runs server.ts, client.ts and
 * udp.ts from its own folder, as processes, the way you would type them.
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
}

/** The two hosts of this run, named after our process id. */
export function labHosts(id = Deno.pid): { a: Host; b: Host } {
  return {
    a: { label: "A", netns: `lab-${id}-a`, link: `lab${id}a`, addr: A_ADDR },
    b: { label: "B", netns: `lab-${id}-b`, link: `lab${id}b`, addr: B_ADDR },
  };
}

/**
 * Build the two hosts. A namespace starts with nothing but a loopback
 * interface that is DOWN: even 127.0.0.1 does not work until `lo` is up.
 * The veth pair is a cable with two ends; each end moves into one host.
 */
async function buildHosts(lab: Lab, a: Host, b: Host): Promise<void> {
  for (const h of [a, b]) {
    await lab.ip(
      `netns add ${h.netns}`,
      (why) =>
        `cannot create a network namespace (${why}); inside a container this needs --privileged (CAP_SYS_ADMIN); try a root shell on a Linux machine or VM`,
    );
  }
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

/**
 * The lab from start to end: check, build, show, and (always) remove.
 * Returns the exit code; throws an Error with a plain reason.
 */
export async function lab(options: LabOptions): Promise<number> {
  const { a, b } = labHosts();
  await preflight(a, b);
  const run = new Lab(options);
  const removeListener = removeAllOnSignals(run, [a, b]);
  try {
    console.log(
      `two hosts in network namespaces, joined by a veth pair (${LINK_NET}):`,
    );
    for (const h of [a, b]) {
      console.log(
        `  host ${h.label}: namespace ${h.netns}, ${h.link} ${h.addr}/${PREFIX}, lo 127.0.0.1`,
      );
    }
    await buildHosts(run, a, b);

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
    await run.removeAll([a, b]);
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
}

/** The usage text printed by `--help` and after a bad flag. */
export const USAGE = `usage: deno task lab [--verbose]
       deno run --allow-run --allow-read --allow-env lab.ts [--verbose]

Builds two hosts, A (${A_ADDR}) and B (${B_ADDR}), from two Linux network
namespaces joined by a veth pair, runs server.ts and udp.ts in A bound to
127.0.0.1, to A's link address, to 0.0.0.0 and to A's host name, and tries
each from A and from B with client.ts and udp.ts send. Prints what reached
what, then the three ways a connect fails: refused, no route, timeout.
Removes everything it made when it ends, also on Ctrl-C.

Needs Linux, root (for ip netns) and the ip command (iproute2). Uses only
addresses from 198.18.0.0/15; never touches this machine's own interfaces
or routes. Takes about 5 seconds.

options:
  --verbose   print every ip, deno and kill command as it runs (copy them
              to build the lab by hand)
  --help      show this help`;

const FLAGS = {
  verbose: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsOptionsConfig;

/** Parse the command line; `"help"` for `--help`. */
export function parseLabArgs(args: string[]): LabOptions | "help" {
  const { values } = parseFlags(args, FLAGS);
  if (values.help) return "help";
  return { verbose: values.verbose ?? false };
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
const SCRIPTS = ["server.ts", "client.ts", "udp.ts"];

function scriptPath(script: string): string {
  // A URL's path is percent-encoded ("My%20Projects"): decode it for a path.
  return decodeURIComponent(new URL(script, import.meta.url).pathname);
}

/** Where `ip` is: on PATH, or in /usr/sbin or /sbin (not on every PATH). */
function findIp(): string | undefined {
  const dirs = [
    ...(Deno.env.get("PATH") ?? "").split(":").filter((d) => d),
    "/usr/sbin",
    "/sbin",
  ];
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/ip`).isFile) return `${dir}/ip`;
    } catch { /* not here */ }
  }
  return undefined;
}

async function preflight(a: Host, b: Host) {
  if (Deno.build.os !== "linux") {
    throw new Error(
      `the lab needs Linux network namespaces, and this is ${Deno.build.os}; run it in a Linux VM (or WSL 2) as root`,
    );
  }
  for (const script of SCRIPTS) {
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
  if (!findIp()) {
    throw new Error(
      "the ip command (iproute2) is not installed, or not in PATH, /usr/sbin or /sbin; install it (apt-get install iproute2) and try again",
    );
  }
  const uid = await output("id", ["-u"]).catch(() => "");
  if (uid.trim() !== "0") {
    throw new Error(
      `the lab needs root to create network namespaces (ip netns add), and this is user id ${
        uid.trim() || "unknown"
      }; run it as root: sudo "$(command -v deno)" task lab`,
    );
  }
  const existing = await output(findIp()!, ["netns", "list"]).catch(() => "");
  for (const h of [a, b]) {
    if (existing.split(/\s+/).includes(h.netns)) {
      throw new Error(
        `a namespace named ${h.netns} already exists (left by an earlier run?); remove it with: ip netns del ${h.netns}`,
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
  /** Its first stdout line, `tcp listening on HOST:PORT`, or "". */
  listening: string;
  /** Its `error:` line when it did not start. */
  error: string;
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
  #ip = findIp() ?? "ip";
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

  #spawn(argv: string[]): Deno.ChildProcess {
    if (this.#closing) throw new Error("the lab is being removed");
    this.#say(argv);
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: CHILD_ENV,
      stdin: "null",
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
  #script(host: Host, script: string, args: string[]): Deno.ChildProcess {
    return this.#spawn([
      this.#ip,
      "netns",
      "exec",
      host.netns,
      Deno.execPath(),
      ...DENO_FLAGS,
      scriptPath(script),
      ...args,
    ]);
  }

  /** Start a listening script in `host`; read its listening line. */
  async startServer(
    host: Host,
    script: string,
    args: string[],
  ): Promise<Started> {
    const child = this.#script(host, script, args);
    const stdout = lines(child.stdout);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const first = await Promise.race([
      stdout.next(),
      new Promise<{ done: true; value: undefined }>((resolve) => {
        timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
          resolve({ done: true, value: undefined });
        }, START_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    const listening = first.done ? "" : first.value;
    if (/^(tcp|udp) listening on /.test(listening)) {
      // Keep reading its output: an unread pipe fills up and blocks it.
      (async () => {
        for await (const _ of stdout) { /* its log lines: not needed */ }
      })();
      child.stderr.pipeTo(new WritableStream()).catch(() => {});
      return { child, listening, error: "" };
    }
    await child.status;
    const err = await new Response(child.stderr).text();
    return {
      child,
      listening: "",
      error: errorLine(err) ||
        `${script} printed no listening line within ${START_TIMEOUT_MS} ms`,
    };
  }

  /** Run a client in `host` to its end: the echo, or its `error:` line. */
  async probe(host: Host, script: string, args: string[]): Promise<Probe> {
    const sent = args[args.length - 1];
    const start = performance.now();
    const { code, stdout, stderr } = await this.#script(host, script, args)
      .output();
    const ms = Math.round(performance.now() - start);
    const out = new TextDecoder().decode(stdout);
    const ok = code === 0 && out === sent;
    return {
      ok,
      error: ok ? "" : errorLine(new TextDecoder().decode(stderr)) ||
        `exit ${code}, got ${JSON.stringify(out)}`,
      ms,
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
  removeAll(hosts: Host[]): Promise<void> {
    this.#removed ??= this.#removeAll(hosts);
    return this.#removed;
  }

  async #removeAll(hosts: Host[]): Promise<void> {
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
    for (const h of hosts) {
      if (names.split(/\s+/).includes(h.netns)) {
        for (
          const pid of (await quiet(["netns", "pids", h.netns])).out.split(
            /\s+/,
          )
        ) {
          if (/^\d+$/.test(pid)) {
            try {
              Deno.kill(Number(pid), "SIGKILL");
            } catch { /* gone */ }
          }
        }
        if ((await quiet(["netns", "del", h.netns])).code !== 0) {
          left.push(`ip netns del ${h.netns}`);
        }
      }
      // Only if it never moved into its namespace (an error mid-build).
      if ((await quiet(["link", "show", h.link])).code === 0) {
        if ((await quiet(["link", "del", h.link])).code !== 0) {
          left.push(`ip link del ${h.link}`);
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
function removeAllOnSignals(run: Lab, hosts: Host[]): () => void {
  return onStopSignals(async (signal) => {
    stoppedBy = signal;
    console.error(`lab: ${signal}: removing the namespaces and processes`);
    await run.removeAll(hosts);
    Deno.exit(exitCodeOf(signal));
  }, () => {
    console.error(
      `error: stopped before the lab was removed; as root, run: ${
        hosts.map((h) => `ip netns del ${h.netns}`).join("; ")
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
