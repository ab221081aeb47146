/**
 * The scripts stand alone, so the plumbing they need is copied into each of
 * them from lib/plumbing.ts by `deno task sync`, between two marker lines.
 * These tests fail when a copy is stale: edit lib/plumbing.ts, then sync.
 */
import assert from "node:assert/strict";
import { projectPath } from "./lib/spawn.ts";
import { blockFor, chunks, SYNCED, synced } from "../tools/sync.ts";

const SCRIPTS = ["server.ts", "http.ts", "client.ts", "udp.ts"];

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("every script's shared block is what deno task sync writes from lib/plumbing.ts", async () => {
  const plumbing = await Deno.readTextFile(projectPath("lib/plumbing.ts"));
  for (const script of SYNCED) {
    const path = projectPath(script);
    if (!(await exists(path))) continue;
    const text = await Deno.readTextFile(path);
    const want = synced(text, plumbing);
    if (want === text) continue;
    const a = text.split("\n");
    const b = want.split("\n");
    const line = a.findIndex((l, j) => l !== b[j]);
    assert.fail(
      `${script}'s shared block is stale at line ${
        line + 1
      } (run deno task sync):\n  has:    ${
        JSON.stringify(a[line])
      }\n  wants:  ${JSON.stringify(b[line])}`,
    );
  }
});

Deno.test("sync copies only what a script uses, with what that depends on", () => {
  const plumbing = [
    'import { x } from "node:util";',
    "",
    "/** A. */",
    "export function a(): number {",
    "  return b() + 1; // not c()",
    "}",
    "",
    "function b(): number {",
    '  return "c()".length;',
    "}",
    "",
    "export const c = 3;",
  ].join("\n");
  assert.deepEqual(chunks(plumbing).map((c) => c.names), [["a"], ["b"], [
    "c",
  ]]);
  const script =
    "a();\n// ===== shared block: begin =====\n// ===== shared block: end =====\n";
  const block = blockFor(script, plumbing);
  assert.match(block, /function a\(\)/);
  assert.match(block, /function b\(\)/);
  assert.doesNotMatch(block, /const c/);
  // A name in a comment or a string is not a use.
  const none = blockFor("// a()\nconst s = 'b';\n" + script.slice(5), plumbing);
  assert.doesNotMatch(none, /function/);
});

Deno.test("every script is lesson first: its first socket call is within its first 110 lines", async () => {
  const firstCall = /Deno\.(listen|connect|listenDatagram)\(/;
  for (const script of SCRIPTS) {
    const lines = (await Deno.readTextFile(projectPath(script))).split("\n");
    const at = lines.findIndex((l) =>
      firstCall.test(l) && !/^\s*(\*|\/\/)/.test(l)
    );
    assert.ok(at >= 0, `${script} makes no socket call`);
    assert.ok(at < 110, `${script}'s first socket call is at line ${at + 1}`);
  }
});
