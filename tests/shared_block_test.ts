/**
 * The scripts stand alone, so the plumbing they all need is one block
 * pasted into each of them between two marker lines. This test keeps the
 * copies equal: change one, paste it into the others.
 */
import assert from "node:assert/strict";
import { projectPath } from "./lib/spawn.ts";

const SCRIPTS = ["server.ts", "http.ts", "client.ts", "udp.ts"];
const BEGIN = "// ===== shared block: begin =====";
const END = "// ===== shared block: end =====";

/** The shared block of `script`, markers included. */
async function sharedBlock(script: string): Promise<string> {
  const text = await Deno.readTextFile(projectPath(script));
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  assert.ok(start >= 0 && end > start, `${script} has no shared block`);
  assert.equal(
    text.indexOf(BEGIN, start + 1),
    -1,
    `${script} has the shared block twice`,
  );
  return text.slice(start, end + END.length);
}

Deno.test("the shared block is identical in server.ts, http.ts, client.ts and udp.ts", async () => {
  const [first, ...rest] = await Promise.all(SCRIPTS.map(sharedBlock));
  rest.forEach((block, i) => {
    if (block === first) return;
    const a = first.split("\n");
    const b = block.split("\n");
    const line = a.findIndex((l, j) => l !== b[j]);
    assert.fail(
      `${SCRIPTS[i + 1]}'s shared block differs from ${
        SCRIPTS[0]
      }'s at block line ${line + 1}:\n  ${SCRIPTS[0]}: ${
        JSON.stringify(a[line])
      }\n  ${SCRIPTS[i + 1]}: ${JSON.stringify(b[line])}`,
    );
  });
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
