/**
 * Children cut off from the network, so a test sends nothing off the
 * machine: the child runs in its own, new network namespace (`unshare -n`,
 * root only), where only a loopback exists. A name lookup there finds no
 * route to the machine's resolver and fails at once, with no query sent;
 * a namespace vanishes with its last process. Where namespaces cannot be
 * made, tests skip and say why ({@link NO_NETNS}).
 */
import type { SpawnOptions } from "./spawn.ts";

/** Why a child cannot get a network namespace here, or "" if it can. */
async function whyNoNetns(): Promise<string> {
  if (Deno.build.os !== "linux") return "network namespaces are Linux only";
  try {
    const { success } = await new Deno.Command("unshare", {
      args: ["-n", "ip", "link", "set", "lo", "up"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return success ? "" : "unshare -n failed (needs root)";
  } catch {
    return "no unshare or ip command";
  }
}

/** "" where {@link offline} works, else why not (a skip reason). */
export const NO_NETNS: string = await whyNoNetns();

/**
 * The name and `ignore` of a test that needs {@link offline}: skipped,
 * saying why, where namespaces cannot be made.
 */
export function needsNetns(name: string): { name: string; ignore: boolean } {
  return {
    name: NO_NETNS ? `${name} (skipped: ${NO_NETNS})` : name,
    ignore: NO_NETNS !== "",
  };
}

/**
 * Spawn options (for runScript, startScript, commandFor) that run the
 * child in a new network namespace: loopback up, then `setup` (shell
 * commands, e.g. a veth pair), then the script. Nothing it sends can leave
 * the machine.
 */
export function offline(setup = "", options: SpawnOptions = {}): SpawnOptions {
  return {
    ...options,
    wrapper: [
      "unshare",
      "-n",
      "sh",
      "-c",
      `set -e; ip link set lo up; ${setup}${setup ? ";" : ""} exec "$@"`,
      "sh",
    ],
  };
}
