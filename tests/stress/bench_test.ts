/**
 * `deno task bench --quick` works: it starts the servers as the deno.json
 * tasks do, runs every load, exits 0 and prints a table with every row. No
 * figure is checked against a speed: speed is the benchmark's business,
 * never the tests'.
 */
import assert from "node:assert/strict";
import { parseBenchArgs, parseTaskLine } from "../../bench/bench.ts";
import { CHILD_ENV, projectPath, ROOT, withTimeout } from "../lib/spawn.ts";

const RR_FIGURES = [
  "round trips/s",
  "p50 ms",
  "p99 ms",
  "longest wait ms",
  "connections with no reply",
  "Jain fairness (1 = fair)",
];
const HOLD_FIGURES = [
  "connections open and echoed",
  "seconds to open",
  "server RSS MB, all open",
  "server RSS MB, idle",
];

/** The rows of the quick table: load, its figures, and if run bare too. */
const ROWS: [string, string[], boolean][] = [
  ["tcp stream 16 MiB", ["MB/s", "bytes verified (1 = all)"], false],
  ["tcp rr c=1", RR_FIGURES, false],
  ["tcp rr c=50", RR_FIGURES, false],
  ["tcp rr c=500", RR_FIGURES, true],
  ...[64, 1400].map((size): [string, string[], boolean] => [
    `udp rr ${size} B`,
    ["round trips/s", "loss %", "p99 ms"],
    false,
  ]),
  ["tcp hold 1000 connections", HOLD_FIGURES, true],
];

/** The tables of the output: each a list of rows, each a column -> cell map. */
function tables(out: string): Record<string, string>[][] {
  const result: Record<string, string>[][] = [];
  let head: string[] | undefined;
  for (const line of out.split("\n")) {
    if (!line.startsWith("|")) {
      head = undefined;
      continue;
    }
    const cells = line.split("|").slice(1, -1).map((c) => c.trim());
    if (head === undefined) {
      head = cells;
      result.push([]);
    } else if (!/^-+:?$/.test(cells[0])) {
      result.at(-1)!.push(
        Object.fromEntries(cells.map((c, i) => [head![i], c])),
      );
    }
  }
  return result;
}

/** A measured value: a number, or "yes" for verified bytes. */
const MEASURED = /^([\d.,]+|yes)$/;

Deno.test({
  name:
    "deno task bench --quick exits 0 and prints every row, bare where it should",
  async fn() {
    // The same command line as the `bench` task in deno.json.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...["--allow-net", "--allow-run", "--allow-read", "--allow-env"],
        "--allow-sys",
        projectPath("bench/bench.ts"),
        "--quick",
      ],
      cwd: ROOT,
      env: CHILD_ENV,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    const { code, stdout, stderr } = await withTimeout(
      output,
      60_000,
      () => {
        child.kill("SIGKILL");
        return "deno task bench --quick did not finish within 60 s";
      },
    ).catch(async (err) => {
      await output; // the killed child is reaped before the test ends
      throw err;
    });
    const out = new TextDecoder().decode(stdout);
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 0, `exit status; stdout:\n${out}\nstderr:\n${err}`);
    assert.match(
      out,
      /^\| load +\| figure +\| project \| +bare \| project\/bare \|$/m,
      "table header",
    );
    assert.match(out, /^project: started as `deno task server`/m);
    const all = tables(out);
    const main = all.find((t) => "project" in (t[0] ?? {}))!;
    const unix = all.find((t) => "unix" in (t[0] ?? {}));
    const workers = all.find((t) => "workers 1" in (t[0] ?? {}));
    for (const [load, figures, bare] of ROWS) {
      for (const figure of figures) {
        const row = main.find((r) => r.load === load && r.figure === figure);
        assert.ok(row, `no row "${load}" / "${figure}" in:\n${out}`);
        // Every cell has a measured value, not "failed".
        assert.match(row.project, MEASURED, `project: ${load} / ${figure}`);
        if (bare) assert.match(row.bare, MEASURED, `bare: ${load} / ${figure}`);
        else assert.equal(row.bare, "·", `bare: ${load} / ${figure}`);
      }
    }
    // server.ts on a Unix socket beside TCP: the same loads, both measured.
    assert.ok(unix, `no Unix-socket table in:\n${out}`);
    for (const load of ["stream 16 MiB", "rr c=1", "rr c=50"]) {
      const rate = load.startsWith("stream") ? "MB/s" : "round trips/s";
      const row = unix.find((r) => r.load === load && r.figure === rate);
      assert.ok(row, `no unix row "${load}" / "${rate}" in:\n${out}`);
      assert.match(row.tcp, MEASURED, `tcp: ${load}`);
      assert.match(row.unix, MEASURED, `unix: ${load}`);
      assert.match(row["unix/tcp"], /^\d+\.\d\d$/, `unix/tcp: ${load}`);
    }
    // The workers table, where server.ts has --workers; a note otherwise.
    if (workers) {
      for (const figure of RR_FIGURES) {
        const row = workers.find((r) =>
          r.load === "tcp rr c=500" && r.figure === figure
        );
        assert.ok(row, `no workers row "${figure}" in:\n${out}`);
        assert.match(row["workers 1"], MEASURED, `workers 1: ${figure}`);
        assert.match(row["workers 2"], MEASURED, `workers 2: ${figure}`);
      }
    } else {
      assert.match(out, /server\.ts has no --workers here/);
    }
    assert.match(out, /^limits of this benchmark:$/m, "the limits are stated");
  },
});

Deno.test("bench reads the settings from the deno.json task line", async () => {
  const line = "DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=32 deno run " +
    "--v8-flags=--max-semi-space-size=4 --allow-net=127.0.0.1 server.ts";
  assert.deepEqual(parseTaskLine(line), {
    env: { DENO_TOKIO_MAX_IO_EVENTS_PER_TICK: "32" },
    flags: ["--v8-flags=--max-semi-space-size=4", "--allow-net=127.0.0.1"],
    script: "server.ts",
  });
  assert.deepEqual(parseTaskLine("deno run --allow-net=127.0.0.1 udp.ts"), {
    env: {},
    flags: ["--allow-net=127.0.0.1"],
    script: "udp.ts",
  });
  assert.throws(() => parseTaskLine("FOO='a b' deno run server.ts"), /clever/);
  // The project's own tasks parse, and run the scripts they name.
  const config = JSON.parse(await Deno.readTextFile(projectPath("deno.json")));
  assert.equal(parseTaskLine(config.tasks.server).script, "server.ts");
  assert.equal(parseTaskLine(config.tasks.udp).script, "udp.ts");
});

Deno.test("bench flags: --compare takes only node, --rounds a small number", () => {
  assert.equal(parseBenchArgs(["--help"]), "help");
  assert.throws(() => parseBenchArgs(["--compare", "python"]), /"node"/);
  assert.throws(() => parseBenchArgs(["--rounds", "0"]), /--rounds/);
  assert.throws(() => parseBenchArgs(["--fast"]), /fast/);
  const o = parseBenchArgs(["--quick", "--compare", "node", "--bare"]);
  assert.ok(o !== "help");
  assert.deepEqual(
    [o.quick, o.compare, o.bare, o.rounds, o.pin],
    [true, true, true, 1, true],
  );
});
