/** Junk command lines: a seeded fuzzer for the scripts' flag parsing. */
import {
  commandFor,
  hasStackTrace,
  LISTENING_LINE,
  OutputCollector,
  type SpawnOptions,
} from "./spawn.ts";

/**
 * A small seeded pseudo-random generator (mulberry32): numbers in [0, 1).
 * Tests that draw random inputs print the seed so a failure can be replayed.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What one run of a script with a junk command line did. */
export interface JunkRun {
  args: string[];
  code: number;
  /** Whether it printed a listening line (it was then stopped with SIGTERM). */
  listened: boolean;
  /** Whether it had to be killed because it neither exited nor listened. */
  hung: boolean;
  out: string;
  stderr: string;
}

/**
 * Run `script` with `args` as a user would, for at most `timeoutMs`. A
 * script that prints a listening line has valid arguments and is serving:
 * it is stopped with SIGTERM (and must then exit 0). One that neither exits
 * nor listens in time is killed and reported as hung.
 */
export async function runJunk(
  script: string,
  args: string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<JunkRun> {
  const child = commandFor(script, args, options, { stdin: "null" }).spawn();
  const stdout = new OutputCollector(child.stdout);
  const stderr = new OutputCollector(child.stderr);
  let listened = false;
  let hung = false;
  stdout.waitFor(LISTENING_LINE).then(() => {
    listened = true;
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
  });
  const timer = setTimeout(() => {
    hung = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs ?? 10_000);
  try {
    const { code } = await child.status;
    await Promise.all([stdout.done, stderr.done]);
    return {
      args,
      code,
      listened,
      hung,
      out: stdout.text(),
      stderr: stderr.text(),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Odd strings a command line may hold: edge numbers, unicode, shell bits. */
const JUNK_WORDS = [
  "",
  " ",
  "-",
  "--",
  "---",
  "-x",
  "--=",
  "=",
  "==",
  "--port=",
  "-1",
  "3.5",
  "1e3",
  "0x10",
  "NaN",
  "Infinity",
  "٣",
  "８０",
  "🦕",
  "é",
  "日本語",
  "\u202e",
  "\n",
  "\t",
  "'",
  '"',
  "\\",
  "$(true)",
  "%s%n",
  "../../etc/passwd",
  "/",
  "::",
  "0.0.0.0",
  "::1",
  "[::1]",
  "[::1",
  "127.0.0.1",
  "localhost",
  "256.1.1.1",
  "fe80::1%lo",
  "1.2.3.4.5",
  "serve",
  "send",
  "--HELP",
  "--Port",
  "-p",
];

/** Port values that never name a real port: 0 (any free one) or invalid. */
const JUNK_PORTS = [
  "0",
  "00",
  "-0",
  "-1",
  "65536",
  "70000",
  "99999999999999999999",
  "1e3",
  "0x50",
  " 0",
  "+0",
  "abc",
  "٠",
  "",
];

/** Timeouts (ms) that keep a run short, or are invalid. */
const JUNK_TIMEOUTS = ["1", "50", "200", "0", "-5", "1.5", "abc", "", "1e9x"];

/**
 * A random junk command line for a script that knows `flags`. Any port in
 * it is 0 or invalid and any timeout is short, so a run never touches a
 * real service or waits long; `--port 0` comes first so the default port is
 * never used either.
 */
export function junkArgs(random: () => number, flags: string[]): string[] {
  const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)];
  const word = (): string => {
    const r = random();
    if (r < 0.6) return pick(JUNK_WORDS);
    if (r < 0.8) {
      // A random unicode string, some of it outside the BMP.
      const length = 1 + Math.floor(random() * 12);
      return Array.from(
        { length },
        () => String.fromCodePoint(0x21 + Math.floor(random() * 0x1f000)),
      ).join("").replace(/[\ud800-\udfff]/g, "?");
    }
    if (r < 0.9) return pick(["a", "é", "🦕", "-", "9"]).repeat(20_000);
    // A number, but never a usable port (a flag left without its value
    // takes the next word as its value).
    return String(65_536 + Math.floor(random() * 1e6));
  };
  const value = (flag: string): string =>
    flag === "--port"
      ? pick(JUNK_PORTS)
      : flag === "--timeout"
      ? pick(JUNK_TIMEOUTS)
      : random() < 0.5
      ? word()
      : String(Math.floor(random() * 100));
  const args = ["--port", "0"];
  const count = Math.floor(random() * 8);
  for (let i = 0; i < count; i++) {
    if (random() < 0.55) {
      const flag = pick(flags);
      const r = random();
      if (r < 0.25) args.push(`${flag}=${value(flag)}`);
      else if (r < 0.85) args.push(flag, value(flag));
      else args.push(flag);
    } else {
      args.push(word());
    }
  }
  return args;
}

/** Run `task(0..count-1)` with at most `concurrency` running at once. */
export async function pool<T>(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

/** Why a junk run broke the rules, or "" if it kept them. */
export function junkProblem(r: JunkRun): string {
  if (r.hung) return "neither exited nor listened within the time limit";
  if (hasStackTrace(r.stderr)) return "stack trace on stderr";
  if (r.listened) return r.code === 0 ? "" : `exit ${r.code} after SIGTERM`;
  if (r.code === 0) {
    return /^usage: /.test(r.out) ? "" : "exit 0 without usage or listening";
  }
  if (r.code !== 1 && r.code !== 2) return `exit ${r.code}`;
  if (!/^error: \S/.test(r.stderr)) return `exit ${r.code} without "error: "`;
  if (r.code === 2 && !/\nusage: /.test(r.stderr)) return "exit 2, no usage";
  return "";
}

/**
 * Run `count` random junk command lines (see {@link junkArgs}) against
 * `script`, six at a time, under `denoFlags`. Returns a one-line summary
 * (with the seed, to replay a failure) and a description of each run that
 * broke the rules of {@link junkProblem}.
 */
export async function junkRound(
  script: string,
  flags: readonly string[],
  count: number,
  denoFlags: string[],
  seed = Math.floor(Math.random() * 2 ** 32),
): Promise<{ summary: string; problems: string[] }> {
  const random = seededRandom(seed);
  const lists = Array.from(
    { length: count },
    () => junkArgs(random, [...flags]),
  );
  const started = performance.now();
  const runs = await pool(
    count,
    6,
    (i) => runJunk(script, lists[i], { denoFlags, timeoutMs: 10_000 }),
  );
  const tally = (code: number) => runs.filter((r) => r.code === code).length;
  const summary = `junk ${script}: ${count} command lines (seed ${seed}) in ${
    (performance.now() - started).toFixed(0)
  } ms: ${runs.filter((r) => r.listened).length} listened, exit 0/1/2: ${
    tally(0)
  }/${tally(1)}/${tally(2)}`;
  const short = (a: string) => a.length > 60 ? a.slice(0, 60) + "…" : a;
  const problems = runs.flatMap((r) => {
    const why = junkProblem(r);
    return why === "" ? [] : [
      `${why}: ${script} ${
        JSON.stringify(r.args.map(short))
      } -> exit ${r.code}\n${r.stderr.slice(0, 600)}`,
    ];
  });
  return { summary, problems };
}
