/**
 * Programs the tests compare with or drive: `xxd` (the dump layout the
 * scripts copy), `python3` (for a socket option Deno cannot set), `id`.
 * Each has a check, so a test can skip and say why where one is missing.
 */
import { CHILD_ENV } from "./spawn.ts";

/** Whether `command args` runs and exits 0 (false if it is missing). */
export function runsOk(command: string, args: string[]): boolean {
  try {
    return new Deno.Command(command, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** Whether `xxd` is on PATH (it comes with vim: /usr/bin/xxd). */
export function hasXxd(): boolean {
  return runsOk("xxd", ["-v"]);
}

/** What `xxd` prints for `bytes`, as lines (none for no bytes). */
export async function xxd(bytes: Uint8Array): Promise<string[]> {
  const child = new Deno.Command("xxd", {
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  const { stdout } = await child.output();
  return new TextDecoder().decode(stdout).split("\n").filter((l) => l !== "");
}

/** Whether python3 is on PATH (the reset clients need SO_LINGER). */
export function hasPython3(): boolean {
  return runsOk("python3", ["-c", ""]);
}

/**
 * `count` clients that connect to 127.0.0.1:`port` and reset at once,
 * `perSecond` a second (0: as fast as they can). SO_LINGER 0 makes close()
 * send RST instead of FIN; Deno cannot set SO_LINGER, so Python does it.
 * Fails if Python does.
 */
export async function resetClients(
  port: number,
  count: number,
  perSecond = 0,
): Promise<void> {
  const script = `import socket, struct, time
for _ in range(${count}):
    s = socket.create_connection(("127.0.0.1", ${port}))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    if ${perSecond}: time.sleep(1 / ${perSecond || 1})
`;
  const r = await new Deno.Command("python3", {
    args: ["-c", script],
    stdin: "null",
  }).output();
  if (!r.success) {
    throw new Error(
      `the python3 reset clients failed (exit ${r.code}): ${
        new TextDecoder().decode(r.stderr)
      }`,
    );
  }
}

/**
 * Whether the tests run as root (ports below 1024, raw sockets, network
 * namespaces). Deno.uid() needs --allow-sys and /proc/self --allow-all, so
 * ask `id`.
 */
export function isRoot(): boolean {
  try {
    const { stdout } = new Deno.Command("id", { args: ["-u"] }).outputSync();
    return new TextDecoder().decode(stdout).trim() === "0";
  } catch {
    return false;
  }
}

/** Run `command args` to the end (stdin empty): exit code, stdout, stderr. */
export async function runTool(
  command: string,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    env: CHILD_ENV,
    stdin: "null",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code, out: text(stdout), err: text(stderr) };
}
