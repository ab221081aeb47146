/**
 * What the lab's stress tests share: whether namespaces can be made here
 * (a skip reason where not), a snapshot of what a run could leave behind
 * (namespaces, links, processes in other namespaces, the machine's own
 * sysctls), and the check that a run left nothing of it.
 */
import assert from "node:assert/strict";
import { runTool as sh } from "./tools.ts";
import {
  commandFor,
  LAB_FLAGS,
  OutputCollector,
  withTimeout,
} from "./spawn.ts";

/** Why the lab cannot run here, or "" when it can. */
async function whyNoLab(): Promise<string> {
  if (Deno.build.os !== "linux") return "not Linux";
  const uid = await sh("id", ["-u"]).catch(() => ({ out: "" }));
  if (uid.out.trim() !== "0") return "not root (ip netns needs it)";
  const probe = `labtest-${Deno.pid}`;
  const add = await sh("ip", ["netns", "add", probe]).catch((e) => ({
    code: 1,
    err: String(e),
  }));
  if (add.code !== 0) return `cannot create a namespace: ${add.err.trim()}`;
  await sh("ip", ["netns", "del", probe]);
  return "";
}

/** "" where the lab can run, else why not (a skip reason). */
export const NO_LAB: string = await whyNoLab();

/** The name and `ignore` of a lab test: skipped, saying why, where it cannot run. */
export function needsLab(name: string): { name: string; ignore: boolean } {
  return {
    name: NO_LAB ? `${name} (skipped: ${NO_LAB})` : name,
    ignore: NO_LAB !== "",
  };
}

/** The machine's own keepalive settings: a lab run must not change them. */
const MACHINE_SYSCTLS = [
  "net/ipv4/tcp_keepalive_time",
  "net/ipv4/tcp_keepalive_intvl",
  "net/ipv4/tcp_keepalive_probes",
];

/** What the machine holds that a lab run could leave behind or change. */
export interface Snapshot {
  netns: string;
  links: string;
  /**
   * Processes in a network namespace other than ours, and not in one
   * that `ip netns list` names, unless it is one of `ours` (the run's
   * own, or one left without a name): "pid netns cmdline". Another
   * program's namespaces (a test or lab running beside us) are not ours
   * to judge or kill.
   */
  foreign: string[];
  /** This machine's (this namespace's) keepalive sysctls. */
  sysctls: string;
}

export async function snapshot(ours: string[] = []): Promise<Snapshot> {
  const netns = (await sh("ip", ["netns", "list"])).out;
  const links = (await sh("ip", ["-o", "link"])).out;
  // Every process's network namespace, next to our own (via /proc, with
  // sh: Deno wants --allow-all to read /proc itself).
  const script = `me=$(readlink /proc/$$/ns/net)
named=""
for f in /run/netns/*; do
  [ -e "$f" ] || continue
  case " $* " in *" \${f##*/} "*) continue ;; esac
  named="$named net:[$(stat -L -c %i "$f")]"
done
for d in /proc/[0-9]*; do
  n=$(readlink $d/ns/net 2>/dev/null) || continue
  [ "$n" = "$me" ] && continue
  case "$named " in *" $n "*) continue ;; esac
  echo "\${d#/proc/} $n $(tr '\\0' ' ' < $d/cmdline 2>/dev/null)"
done`;
  const foreign = (await sh("sh", ["-c", script, "sh", ...ours])).out
    .split("\n")
    .filter((l) => l.trim());
  const sysctls =
    (await sh("cat", MACHINE_SYSCTLS.map((f) => `/proc/sys/${f}`)))
      .out;
  return { netns, links, foreign, sysctls };
}

/** A run's names: its namespaces (lab-PID-x) and its links (labPIDx). */
export interface LabNames {
  netns: string[];
  links: string[];
}

/**
 * The lab's names in its output: each host line says `namespace
 * lab-PID-x, labPIDx ...`; the switch's line (--one-to-many) `namespace
 * lab-PID-s, bridge ...`. `hosts`: how many host lines there must be.
 */
export function labNames(out: string, hosts = 2): LabNames {
  const m = [...out.matchAll(/namespace (lab-\d+-[a-z]), (lab\d+[a-z]) /g)];
  assert.equal(m.length, hosts, `not ${hosts} host lines in:\n${out}`);
  const sw = [...out.matchAll(/namespace (lab-\d+-s), bridge /g)];
  return {
    netns: [...m.map((x) => x[1]), ...sw.map((x) => x[1])],
    links: m.map((x) => x[2]),
  };
}

/**
 * Nothing of the run named `names` is left, no new process sits in
 * another network namespace, and the machine's keepalive sysctls are as
 * they were. Whatever is left is removed first (so a failing lab does not
 * leave this machine dirty), then reported.
 */
export async function assertNothingLeft(before: Snapshot, names: LabNames) {
  const after = await snapshot(names.netns);
  const beforePids = new Set(before.foreign.map((l) => l.split(" ")[0]));
  const stray = after.foreign.filter((l) => !beforePids.has(l.split(" ")[0]));
  const leftNetns = names.netns.filter((ns) =>
    after.netns.split(/\s+/).includes(ns)
  );
  const leftLinks = names.links.filter((link) =>
    new RegExp(`\\b${link}\\b`).test(after.links)
  );
  for (const line of stray) {
    try {
      Deno.kill(Number(line.split(" ")[0]), "SIGKILL");
    } catch { /* gone */ }
  }
  for (const ns of leftNetns) await sh("ip", ["netns", "del", ns]);
  for (const link of leftLinks) await sh("ip", ["link", "del", link]);
  assert.deepEqual(leftNetns, [], `namespaces left:\n${after.netns}`);
  assert.deepEqual(leftLinks, [], `links left:\n${after.links}`);
  assert.deepEqual(stray, [], "processes left in a namespace");
  assert.equal(after.sysctls, before.sysctls, "the machine's sysctls changed");
}

/** How an interrupted lab run ended, with all it printed. */
export interface Interrupted {
  status: Deno.CommandStatus;
  out: string;
  err: string;
}

/**
 * Start `deno task lab ARGS` (as lab.ts with the task's grants), wait for
 * an output line matching `at` (up to `waitMs`), then send `signal` and
 * wait for the exit. A lab that does not get there, or does not exit, is
 * killed and the test fails.
 */
export async function interruptLab(
  args: string[],
  at: RegExp,
  signal: Deno.Signal,
  waitMs = 60_000,
): Promise<Interrupted> {
  const child = commandFor("lab.ts", args, { denoFlags: LAB_FLAGS }, {
    stdin: "null",
  }).spawn();
  const stdout = new OutputCollector(child.stdout);
  const stderr = new OutputCollector(child.stderr);
  try {
    await withTimeout(
      stdout.waitFor(at),
      waitMs,
      () => `the lab printed no line matching ${at}:\n${stdout.text()}`,
    );
    child.kill(signal);
    const status = await withTimeout(
      child.status,
      20_000,
      () => `the lab did not exit after ${signal}`,
    );
    await Promise.all([stdout.done, stderr.done]);
    return { status, out: stdout.text(), err: stderr.text() };
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await Promise.all([stdout.done, stderr.done]);
    throw err;
  }
}
