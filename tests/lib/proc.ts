// --- /proc readings (Linux): how a spawned script uses the machine ---------
// Deno asks for --allow-all to read another process's /proc entries, so the
// tests read them with `cat` and `ls` (--allow-run is enough for that).

async function procText(command: string, args: string[]): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    stdin: "null",
  }).output();
  if (code !== 0) {
    throw new Error(
      `${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`,
    );
  }
  return new TextDecoder().decode(stdout);
}

/** The text of a /proc file (`/proc/PID/status`, `/proc/cpuinfo`). */
export function readProcFile(file: string): Promise<string> {
  return procText("cat", [file]);
}

/** Resident memory of process `pid` (VmRSS in /proc/PID/status), in bytes. */
export async function residentBytes(pid: number): Promise<number> {
  const status = await readProcFile(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** How many file descriptors process `pid` has open (/proc/PID/fd). */
export async function openFdCount(pid: number): Promise<number> {
  const list = await procText("ls", ["-U", `/proc/${pid}/fd`]);
  return list.split("\n").filter((l) => l !== "").length;
}

/**
 * CPU time process `pid` has used so far, user plus system, in milliseconds
 * (fields 14 and 15 of /proc/PID/stat, in clock ticks of 1/100 s).
 */
export async function cpuTimeMs(pid: number): Promise<number> {
  const stat = await readProcFile(`/proc/${pid}/stat`);
  // The command name (field 2) is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The command name of process `pid` (/proc/PID/comm): `deno`, `sh`. */
export async function processName(pid: number): Promise<string> {
  return (await readProcFile(`/proc/${pid}/comm`)).trim();
}

/** The soft open-file limit of process `pid` (/proc/PID/limits). */
export async function openFileLimit(pid: number): Promise<number> {
  const limits = await readProcFile(`/proc/${pid}/limits`);
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  if (!m) throw new Error(`no open-file limit in /proc/${pid}/limits`);
  return m[1] === "unlimited" ? Infinity : Number(m[1]);
}
