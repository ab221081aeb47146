/**
 * Unix-socket helpers for tests: a scratch folder, the narrowest grants,
 * a server started on a path (`unix listening on PATH` first), and
 * another user (nobody, via setpriv) for the permission cases.
 *
 * The test process itself has no --allow-write, and Deno wants read, write
 * and net grants to connect to a Unix socket: every client here is a child
 * process (client.ts, tests/lib/unix_clients.ts, nc, python3).
 */
import { isRoot, runsOk } from "./tools.ts";
import {
  type Child,
  commandFor,
  spawnChild,
  type SpawnOptions,
} from "./spawn.ts";

/** The grants a script needs for a Unix socket at `path` (absolute). */
export function unixGrants(path: string): string[] {
  return [
    `--allow-read=${path}`,
    `--allow-write=${path}`,
    `--allow-net=unix:${path}`,
  ];
}

/**
 * A fresh folder under /tmp (short paths: a socket's is at most 107
 * bytes), made by `mktemp -d` and removed with all in it on dispose.
 */
export async function scratchDir(): Promise<
  { path: string } & AsyncDisposable
> {
  const out = await new Deno.Command("mktemp", {
    args: ["-d", "/tmp/sockpg.XXXXXX"],
  }).output();
  if (!out.success) throw new Error("mktemp -d failed");
  const path = new TextDecoder().decode(out.stdout).trim();
  return {
    path,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("rm", { args: ["-rf", path] }).output();
    },
  };
}

/** Run a command to its end; throw with its stderr if it fails. */
export async function sh(command: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command(command, { args, stdin: "null" }).output();
  if (!r.success) {
    throw new Error(
      `${command} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`,
    );
  }
}

/** What `path` is (lstat), or "none": "socket", "file", "directory". */
export function fileType(path: string): string {
  try {
    const info = Deno.lstatSync(path);
    if (info.isSocket) return "socket";
    return info.isDirectory ? "directory" : info.isFile ? "file" : "other";
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "none";
    throw err;
  }
}

/**
 * Start server.ts (or another script) on the Unix socket `path` with its
 * narrowest grants and wait for its first line, `unix listening on PATH`
 * (udp.ts: `unixgram listening on PATH`). `await using` kills it.
 */
export async function startUnixServer(
  path: string,
  args: string[] = [],
  options: SpawnOptions & { script?: string } = {},
): Promise<Child> {
  const script = options.script ?? "server.ts";
  const child = spawnChild(
    commandFor(script, ["--unix", path, ...args], {
      denoFlags: unixGrants(path),
      ...options,
    }, { stdin: "null" }),
    `${script} --unix ${path}`,
  );
  try {
    const first = await child.waitForLine(/./, 20_000);
    const proto = script === "udp.ts" ? "unixgram" : "unix";
    if (first !== `${proto} listening on ${path}`) {
      throw new Error(
        `expected "${proto} listening on ${path}" first, got ${
          JSON.stringify(first)
        }; stderr: ${child.stderr.text()}`,
      );
    }
    return child;
  } catch (err) {
    await child.stop("SIGKILL");
    throw err;
  }
}

/**
 * The words that run a command as the user nobody (uid and gid 65534, no
 * groups) when the tests run as root and setpriv exists; undefined else.
 */
export function asNobody(): string[] | undefined {
  const wrapper = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
  ];
  return isRoot() && runsOk(wrapper[0], ["-h"]) ? wrapper : undefined;
}
