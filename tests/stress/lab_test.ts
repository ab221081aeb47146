/**
 * `deno task lab`, the two-host lab in network namespaces, run for real:
 * its table (who reached what), its three ways a connect fails, and that it
 * leaves nothing behind (namespaces, links, processes), also when stopped
 * by Ctrl-C, SIGTERM or SIGHUP (the terminal closed) halfway, and when it
 * runs from a folder whose path has a space and a non-ASCII letter. Needs root and `ip`; where namespaces
 * cannot be made, the tests are skipped and say why.
 */
import assert from "node:assert/strict";
import { CHILD_ENV, LAB_FLAGS, projectPath, runTask } from "../lib/spawn.ts";
import { runTool as sh } from "../lib/tools.ts";
import {
  assertNothingLeft as assertNothingLeftOf,
  interruptLab,
  labNames,
  NO_LAB,
  type Snapshot,
  snapshot,
} from "../lib/lab.ts";

/** Nothing is left of the (two-host) run whose output is `out`. */
function assertNothingLeft(before: Snapshot, out: string) {
  return assertNothingLeftOf(before, labNames(out));
}

const reason = NO_LAB;
if (reason) console.log(`lab tests skipped: ${reason}`);
const skipped = reason ? ` (skipped: ${reason})` : "";

/** A cell of the table: did the echo come back, and the note if not. */
interface Cell {
  ok: boolean;
  note: string;
}

/** The table the lab printed: rows by bind address, then by protocol. */
function parseTable(out: string) {
  const lines = out.split("\n");
  const headAt = lines.findIndex((l) =>
    /^bound to\s+proto\s+listening on/.test(l)
  );
  assert.ok(headAt >= 0, `no table in:\n${out}`);
  const head = lines[headAt].split(/\s{2,}/);
  const notes = new Map<string, string>();
  for (const m of out.matchAll(/^\[(\d+)\] (.*)$/gm)) notes.set(m[1], m[2]);
  const rows = new Map<
    string,
    Record<string, { listening: string; cells: Record<string, Cell> }>
  >();
  let bind = "";
  for (const line of lines.slice(headAt + 1)) {
    if (!line.trim()) break;
    const parts = line.trim().split(/\s{2,}/);
    if (!line.startsWith(" ")) bind = parts.shift()!.replace(/ \(.*\)$/, "");
    const [proto, listening, ...cells] = parts;
    const byTarget: Record<string, Cell> = {};
    cells.forEach((c, i) => {
      const note = /\[(\d+)\]/.exec(c)?.[1] ?? "";
      byTarget[head[3 + i]] = {
        ok: /^echo \d+ ms$/.test(c),
        note: notes.get(note) ?? "",
      };
    });
    rows.set(bind, {
      ...rows.get(bind),
      [proto]: { listening, cells: byTarget },
    });
  }
  return rows;
}

/** One case of "the three ways a connect fails": its error and time. */
function failure(out: string, title: RegExp): { error: string; ms: number } {
  const m = new RegExp(
    `^${title.source}.*\\n(?:   .*\\n)*?   client\\.ts said \\(its whole run took (\\d+) ms.*\\n   (.*)$`,
    "m",
  ).exec(out);
  assert.ok(m, `no case ${title} in:\n${out}`);
  return { ms: Number(m[1]), error: m[2] };
}

Deno.test({
  name:
    `deno task lab: loopback is private, the link address and 0.0.0.0 reach B, a name binds what it resolves to; refused, no route and timeout are told apart; nothing is left${skipped}`,
  ignore: reason !== "",
  async fn() {
    const before = await snapshot();
    const r = await runTask("lab", [], { timeoutMs: 60_000 });
    const out = r.out;
    try {
      assert.equal(r.code, 0, `exit ${r.code}\n${out}\n${r.stderr}`);
      assert.equal(r.stderr, "");
      const table = parseTable(out);
      const L = "A → 127.0.0.1", AL = "A → 198.18.0.1", BL = "B → 198.18.0.1";
      const reach = (bind: string, proto: string) => {
        const row = table.get(bind)?.[proto];
        assert.ok(row, `no ${proto} row for ${bind}`);
        return [L, AL, BL].map((t) => row.cells[t].ok);
      };
      for (const proto of ["tcp", "udp"]) {
        // Loopback: A reaches it as 127.0.0.1 only; B never.
        assert.deepEqual(reach("127.0.0.1", proto), [true, false, false]);
        // The link address: A and B reach it there, not as 127.0.0.1.
        assert.deepEqual(reach("198.18.0.1", proto), [false, true, true]);
        // 0.0.0.0: every interface, everyone.
        assert.deepEqual(reach("0.0.0.0", proto), [true, true, true]);
      }
      // The misses say why: TCP refused (RST), UDP no reply.
      const loop = table.get("127.0.0.1")!;
      assert.match(loop.tcp.cells[BL].note, /^error: .*refused/);
      assert.match(
        loop.udp.cells[BL].note,
        /^error: no reply .* within 500 ms/,
      );

      // The host name: bound to what it resolves to, and reached like it.
      const named =
        /A's host name is "([^"]+)"; inside A, `getent hosts \S+` says: (\S+)/
          .exec(out);
      assert.ok(named, out);
      const [, name, resolved] = named;
      const nameRow = table.get(name);
      assert.ok(nameRow, `no row for the host name ${name}`);
      if (resolved.startsWith("127.") || resolved === "198.18.0.1") {
        assert.equal(nameRow.tcp.listening, `${resolved}:9000`);
        const like = resolved === "198.18.0.1" ? resolved : "127.0.0.1";
        for (const proto of ["tcp", "udp"]) {
          assert.deepEqual(reach(name, proto), reach(like, proto));
        }
      } else {
        // An address host A does not have (the machine's own): no bind.
        assert.match(nameRow.tcp.listening, /^did not start \[\d+\]$/);
      }

      // The three ways a connect fails, each with its own message.
      const refused = failure(out, /1\. refused/);
      const noHost = failure(out, /2a\. no route: no host/);
      const noNet = failure(out, /2b\. no route: no network/);
      const timeout = failure(out, /3\. timeout/);
      assert.match(
        refused.error,
        /^error: connection refused by tcp 198\.18\.0\.1:9000\b/,
      );
      assert.match(
        noHost.error,
        /^error: .*198\.18\.0\.99:9000.*no (route|host)/i,
      );
      assert.match(noNet.error, /^error: .*198\.19\.0\.1:9000.*no route/i);
      assert.match(
        timeout.error,
        /^error: no answer from tcp 198\.18\.0\.1:9001 within 2000 ms/,
      );
      for (const f of [noHost, noNet, timeout]) {
        assert.doesNotMatch(f.error, /refused/);
      }
      assert.doesNotMatch(noHost.error, /within \d+ ms/);
      // No two cases read the same once addresses and times are set aside.
      const gist = (e: string) =>
        e.replace(/[\d.]+:\d+/g, "ADDR").replace(/\d+ ms/g, "N ms");
      const gists = [refused, noHost, noNet, timeout].map((f) => gist(f.error));
      assert.equal(new Set(gists).size, 4, gists.join("\n"));
      // A refusal is quick; the dropped SYN waits out client.ts's --timeout
      // (2000 ms) and gives up soon after (the margin: Deno's start-up).
      assert.ok(
        timeout.ms >= 2000 && timeout.ms < 2000 + 5000,
        `${timeout.ms} ms`,
      );
      assert.ok(refused.ms < timeout.ms, `refused ${refused.ms} ms`);
      assert.ok(noNet.ms < timeout.ms, `no network ${noNet.ms} ms`);
    } finally {
      await assertNothingLeft(before, out);
    }
  },
});

// The exit status a shell gives a process stopped by each signal.
const EXIT_BY_SIGNAL = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  Deno.test({
    name:
      `the lab stopped by ${signal} halfway removes its namespaces, links and processes${skipped}`,
    ignore: reason !== "",
    async fn() {
      const before = await snapshot();
      // The servers are being started inside host A: stop it now.
      const r = await interruptLab(
        ["--verbose"],
        /\$ .* netns exec lab-\d+-a .*udp\.ts/,
        signal,
        30_000,
      );
      await assertNothingLeft(before, r.out);
      assert.match(r.err, new RegExp(`^lab: ${signal}: removing`));
      assert.equal(r.status.code, EXIT_BY_SIGNAL[signal], r.err);
    },
  });
}

Deno.test({
  name:
    `the lab runs from a folder whose path has a space and a non-ASCII letter ("My Projects/Übung")${skipped}`,
  ignore: reason !== "",
  async fn() {
    const top = (await sh("mktemp", ["-d"])).out.trim();
    const dir = `${top}/My Projects/Übung`;
    const before = await snapshot();
    let out = "";
    try {
      // mkdir and cp, not Deno.mkdir: the test tasks grant no --allow-write.
      await sh("mkdir", ["-p", dir]);
      await sh("cp", [
        ...["lab.ts", "server.ts", "client.ts", "udp.ts"].map(projectPath),
        dir,
      ]);
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--unstable-net", ...LAB_FLAGS, `${dir}/lab.ts`],
        cwd: dir,
        env: CHILD_ENV,
        stdin: "null",
      }).output();
      out = new TextDecoder().decode(r.stdout);
      const err = new TextDecoder().decode(r.stderr);
      assert.equal(r.code, 0, `exit ${r.code}\n${out}\n${err}`);
      assert.doesNotMatch(err, /not beside lab\.ts/);
      assert.match(out, /^Who can reach you:/m);
      assert.match(out, /The three ways a connect fails/);
    } finally {
      await sh("rm", ["-rf", top]);
      await assertNothingLeft(before, out);
    }
  },
});
