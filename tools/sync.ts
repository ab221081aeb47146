/**
 * tools/sync.ts: `deno task sync` writes lib/plumbing.ts into each script,
 * between its shared-block markers, keeping only the declarations that
 * script uses (and those that they use in turn), in the order they stand in
 * lib/plumbing.ts.
 *
 *   deno task sync            rewrite the blocks that are stale
 *   deno task sync --check    only say which are stale (exit 1 if any)
 *
 * A declaration is a top-level chunk of lib/plumbing.ts: its comments, then
 * its code, up to the next blank line that is followed by a line at column
 * 0. A script "uses" a name when the name appears as an identifier (not a
 * property, not in a comment or a string) in the script outside its block.
 */

/** The files that carry a shared block. */
export const SYNCED = [
  "server.ts",
  "workers.ts",
  "http.ts",
  "client.ts",
  "udp.ts",
  "lab.ts",
  "watch.ts",
  "chat.ts",
];

export const BEGIN = "// ===== shared block: begin =====";
export const END = "// ===== shared block: end =====";

const NOTE = [
  "// Written by `deno task sync` from lib/plumbing.ts: only what this file",
  "// uses, so that it runs alone when copied. Edit lib/plumbing.ts, not here;",
  "// tests/shared_block_test.ts fails when this copy is stale.",
];

/** One top-level declaration of lib/plumbing.ts. */
interface Chunk {
  text: string;
  names: string[];
  uses: Set<string>;
}

const DECLARES =
  /^(?:export\s+)?(?:declare\s+)?(?:async\s+)?(?:function\*?|class|interface|type|const|let|var|enum)\s+([A-Za-z_$][\w$]*)/gm;

/** Split lib/plumbing.ts (after its imports) into declarations. */
export function chunks(plumbing: string): Chunk[] {
  const lines = plumbing.split("\n");
  // Skip the module header and the imports: the scripts have their own.
  let start = 0;
  lines.forEach((line, i) => {
    if (/^import\s/.test(line)) start = i + 1;
  });
  const body = lines.slice(start);
  const groups: string[][] = [];
  let current: string[] = [];
  for (let i = 0; i < body.length; i++) {
    const line = body[i];
    const next = body[i + 1];
    if (line === "" && next !== undefined && /^[^\s}\])]/.test(next)) {
      if (current.some((l) => l !== "")) groups.push(current);
      current = [];
      continue;
    }
    current.push(line);
  }
  if (current.some((l) => l !== "")) groups.push(current);
  return groups.map((group) => {
    while (group.at(-1) === "") group.pop();
    const text = group.join("\n");
    const code = stripCommentsAndStrings(text);
    const names = [...code.matchAll(DECLARES)].map((m) => m[1]);
    return { text, names, uses: identifiers(code) };
  });
}

/**
 * The text between the markers that sync writes for `script` (the markers
 * excluded), given the script's text and lib/plumbing.ts.
 */
export function blockFor(script: string, plumbing: string): string {
  const all = chunks(plumbing);
  const used = identifiers(stripCommentsAndStrings(outsideBlock(script)));
  const byName = new Map<string, Chunk>();
  for (const c of all) for (const n of c.names) byName.set(n, c);
  const keep = new Set<Chunk>();
  const visit = (name: string) => {
    const c = byName.get(name);
    if (!c || keep.has(c)) return;
    keep.add(c);
    for (const u of c.uses) if (!c.names.includes(u)) visit(u);
  };
  for (const name of used) visit(name);
  const kept = all.filter((c) => keep.has(c)).map((c) => c.text);
  return [...NOTE, "", kept.join("\n\n")].join("\n");
}

/** `script` with its block replaced by what sync writes. */
export function synced(script: string, plumbing: string): string {
  const { before, after } = splitAtBlock(script);
  return `${before}${BEGIN}\n${blockFor(script, plumbing)}\n${END}${after}`;
}

/** The script without its block (what the script itself uses). */
function outsideBlock(script: string): string {
  const { before, after } = splitAtBlock(script);
  return before + after;
}

function splitAtBlock(script: string): { before: string; after: string } {
  const start = script.indexOf(BEGIN);
  const end = script.indexOf(END);
  if (start < 0 || end < start || script.indexOf(BEGIN, start + 1) >= 0) {
    throw new Error(
      `expected one "${BEGIN}" ... "${END}" pair of lines`,
    );
  }
  return {
    before: script.slice(0, start),
    after: script.slice(end + END.length),
  };
}

/** Identifiers in code, properties (`a.name`, `{ name: ... }`) aside. */
function identifiers(code: string): Set<string> {
  const found = new Set<string>();
  for (
    const m of code.matchAll(
      /(?<![\w$])(?<!(?<!\.)\.)([A-Za-z_$][\w$]*)(?![\w$])/g,
    )
  ) {
    found.add(m[1]);
  }
  return found;
}

/**
 * Blank out comments and the text of string, template and regular
 * expression literals (keeping `${...}` code), so that only code is left to
 * scan for names. Line breaks stay, so line counts do not move.
 */
export function stripCommentsAndStrings(src: string): string {
  let out = "";
  let i = 0;
  // Whether a "/" here starts a regular expression (not a division).
  const regexCanStart = () => {
    const before = out.replace(/\s+$/, "");
    return before === "" || /[(,=:[!&|?{};+\-*%<>~^]$/.test(before) ||
      /\b(return|typeof|case|in|of|delete|void|throw|new)$/.test(before);
  };
  const blank = (s: string) => s.replace(/[^\n]/g, " ");
  // Template literal from i (at the backtick); returns the index after it.
  const template = (at: number): number => {
    let j = at + 1;
    out += " ";
    while (j < src.length && src[j] !== "`") {
      if (src[j] === "\\") {
        out += "  ";
        j += 2;
      } else if (src[j] === "$" && src[j + 1] === "{") {
        out += "${";
        j = code(j + 2, "}");
        out += "}";
        j++;
      } else {
        out += src[j] === "\n" ? "\n" : " ";
        j++;
      }
    }
    out += " ";
    return j + 1;
  };
  // Code from `at` until the unmatched `close` (or the end).
  const code = (at: number, close?: string): number => {
    let depth = 0;
    let j = at;
    while (j < src.length) {
      const ch = src[j];
      const next = src[j + 1];
      if (close && ch === close && depth === 0) return j;
      if (ch === "{") depth++;
      if (ch === "}") depth--;
      if (ch === "/" && next === "/") {
        const e = src.indexOf("\n", j);
        const stop = e < 0 ? src.length : e;
        out += blank(src.slice(j, stop));
        j = stop;
      } else if (ch === "/" && next === "*") {
        const e = src.indexOf("*/", j + 2);
        const stop = e < 0 ? src.length : e + 2;
        out += blank(src.slice(j, stop));
        j = stop;
      } else if (ch === '"' || ch === "'") {
        let k = j + 1;
        while (k < src.length && src[k] !== ch && src[k] !== "\n") {
          k += src[k] === "\\" ? 2 : 1;
        }
        out += blank(src.slice(j, k + 1));
        j = k + 1;
      } else if (ch === "`") {
        j = template(j);
      } else if (ch === "/" && regexCanStart()) {
        let k = j + 1;
        let inClass = false;
        while (k < src.length && src[k] !== "\n") {
          if (src[k] === "\\") k++;
          else if (src[k] === "[") inClass = true;
          else if (src[k] === "]") inClass = false;
          else if (src[k] === "/" && !inClass) break;
          k++;
        }
        k++;
        while (/[a-z]/.test(src[k] ?? "")) k++;
        out += blank(src.slice(j, k));
        j = k;
      } else {
        out += ch;
        j++;
      }
    }
    return j;
  };
  i = code(0);
  return out + src.slice(i);
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const root = new URL("../", import.meta.url);
  const plumbing = await Deno.readTextFile(new URL("lib/plumbing.ts", root));
  const stale: string[] = [];
  for (const name of SYNCED) {
    const url = new URL(name, root);
    let text: string;
    try {
      text = await Deno.readTextFile(url);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue;
      throw err;
    }
    let want: string;
    try {
      want = synced(text, plumbing);
    } catch (err) {
      console.error(`error: ${name}: ${(err as Error).message}`);
      Deno.exit(1);
    }
    if (want === text) continue;
    stale.push(name);
    if (!check) await Deno.writeTextFile(url, want);
  }
  if (check) {
    if (stale.length) {
      console.error(
        `error: stale shared block in ${stale.join(", ")}: run deno task sync`,
      );
      Deno.exit(1);
    }
    console.log("every shared block is what lib/plumbing.ts gives");
  } else {
    console.log(
      stale.length ? `synced ${stale.join(", ")}` : "nothing to sync",
    );
  }
}
