/**
 * `deno task lab --dead-peer`, run for real: a quiet connection from host B
 * to server.ts in host A, then B's cable pulled, then B's program frozen.
 * Without keepalive server.ts keeps the connection; with --keepalive (the
 * keepalive clock set to seconds inside A only) it closes it, timed out, a
 * few seconds after the cut, but not when only B's program is frozen; a
 * short --idle-timeout closes it either way. Nothing is left afterwards,
 * the machine's own keepalive sysctls included, also when the lab is
 * stopped halfway. Needs root and `ip`; skipped, saying why, elsewhere.
 */
import assert from "node:assert/strict";
import { runTask } from "../lib/spawn.ts";
import {
  assertNothingLeft,
  interruptLab,
  labNames,
  needsLab,
  snapshot,
} from "../lib/lab.ts";
import { figures } from "../lib/figures.ts";

const figure = figures("lab --dead-peer");

/** A cell of the table: closed after N s (and why), or still open. */
interface Cell {
  seconds: number | null;
  reason: string;
}

/** The dead-peer table, by server.ts's flags: the cut and the freeze. */
function parseTable(out: string): Map<string, { cut: Cell; frozen: Cell }> {
  const lines = out.split("\n");
  const at = lines.findIndex((l) =>
    /^server\.ts in A\s+B's cable pulled\s+B frozen$/.test(l)
  );
  assert.ok(at >= 0, `no dead-peer table in:\n${out}`);
  const notes = new Map<string, string>();
  for (const m of out.matchAll(/^\[(\d+)\] server\.ts: (.*)$/gm)) {
    notes.set(m[1], m[2]);
  }
  const cell = (text: string): Cell => {
    if (/^still open after \d+ s$/.test(text)) {
      return { seconds: null, reason: "" };
    }
    const m = /^closed after ([\d.]+) s \[(\d+)\]$/.exec(text);
    assert.ok(m, `a cell that says neither: ${JSON.stringify(text)}`);
    return { seconds: Number(m[1]), reason: notes.get(m[2]) ?? "" };
  };
  const rows = new Map<string, { cut: Cell; frozen: Cell }>();
  for (const line of lines.slice(at + 2)) {
    if (!line.trim()) break;
    const [flags, cut, frozen] = line.split(/\s{2,}/);
    rows.set(flags, { cut: cell(cut), frozen: cell(frozen) });
  }
  return rows;
}

Deno.test({
  ...needsLab(
    "deno task lab --dead-peer: without keepalive a pulled cable goes unnoticed; --keepalive ends it, timed out, in seconds, but not a frozen peer; a short idle timeout ends both; nothing is left",
  ),
  async fn() {
    const before = await snapshot();
    const r = await runTask("lab", ["--dead-peer"], { timeoutMs: 120_000 });
    try {
      assert.equal(r.code, 0, `exit ${r.code}\n${r.out}\n${r.stderr}`);
      assert.equal(r.stderr, "");
      assert.match(
        r.out,
        /in host A only: net\.ipv4\.tcp_keepalive_time=2, tcp_keepalive_intvl=1, tcp_keepalive_probes=3/,
      );
      const rows = parseTable(r.out);
      assert.deepEqual([...rows.keys()], [
        "--idle-timeout 3600",
        "--idle-timeout 3600 --keepalive",
        "--idle-timeout 3",
      ]);
      const none = rows.get("--idle-timeout 3600")!;
      const keepalive = rows.get("--idle-timeout 3600 --keepalive")!;
      const idle = rows.get("--idle-timeout 3")!;

      // No keepalive, no short idle timeout: nothing ever checks.
      assert.equal(none.cut.seconds, null, "closed without keepalive");
      assert.equal(none.frozen.seconds, null, "closed without keepalive");

      // Keepalive: 2 s of silence, then 3 probes 1 s apart, all lost: 5 s
      // from the hello's last packet, which came just before the cut.
      assert.notEqual(keepalive.cut.seconds, null, "keepalive missed the cut");
      const ka = keepalive.cut.seconds!;
      assert.ok(ka >= 3.5 && ka < 10, `keepalive noticed after ${ka} s`);
      assert.match(keepalive.cut.reason, /timed out/i);
      // B's kernel answers the probes for its frozen program.
      assert.equal(
        keepalive.frozen.seconds,
        null,
        "keepalive ended a live host",
      );

      // The application's clock: 3 s without a byte, whatever the cause.
      for (const c of [idle.cut, idle.frozen]) {
        assert.ok(
          c.seconds !== null && c.seconds >= 2 && c.seconds < 10,
          `idle timeout after ${c.seconds} s`,
        );
        assert.match(c.reason, /idle for 3 s/);
      }

      // Cable back in: the connection no one ended still echoes; the one
      // keepalive ended is reset by A's kernel on B's next bytes.
      assert.match(r.out, /on the connection without keepalive: echoed$/m);
      assert.match(r.out, /on the one keepalive ended: +error: .*reset/m);

      figure(
        `keepalive (time 2, intvl 1, probes 3) noticed the pulled cable after ${ka} s; --idle-timeout 3 after ${idle.cut.seconds} s (cut) and ${idle.frozen.seconds} s (frozen)`,
      );
    } finally {
      await assertNothingLeft(before, labNames(r.out));
    }
  },
});

Deno.test({
  ...needsLab(
    "the dead-peer lab stopped by SIGTERM while B's client is frozen removes its namespaces, links and processes",
  ),
  async fn() {
    const before = await snapshot();
    // B's clients are being frozen (SIGSTOP): stop the lab now.
    const r = await interruptLab(
      ["--dead-peer", "--verbose"],
      /^ {2}\$ kill -STOP \d+$/,
      "SIGTERM",
    );
    await assertNothingLeft(before, labNames(r.out));
    assert.match(r.err, /^lab: SIGTERM: removing/);
    assert.equal(r.status.code, 143, r.err);
  },
});
