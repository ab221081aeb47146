/**
 * `deno task bench --quick` works: it starts the servers, runs every load,
 * exits 0 and prints a table with every row. No figure is checked against a
 * speed: speed is the benchmark's business, never the tests'.
 */
import assert from "node:assert/strict";
import { CHILD_ENV, projectPath, ROOT, withTimeout } from "../lib/spawn.ts";

/** The rows of the quick table: load, then the figures it reports. */
const ROWS: [string, string[]][] = [
  ["tcp stream 16 MiB", ["MB/s", "bytes verified (1 = all)"]],
  ...[1, 50, 500].map((c): [string, string[]] => [
    `tcp rr c=${c}`,
    [
      "round trips/s",
      "p50 ms",
      "p99 ms",
      "connections with no reply",
      "Jain fairness (1 = fair)",
    ],
  ]),
  ...[64, 1400].map((size): [string, string[]] => [
    `udp rr ${size} B`,
    ["round trips/s", "loss %", "p99 ms"],
  ]),
  ["tcp hold 1000 connections", [
    "connections open and echoed",
    "seconds to open",
    "server RSS MB, all open",
    "server RSS MB, idle",
  ]],
];

Deno.test({
  name: "deno task bench --quick exits 0 and prints a table with every row",
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
    assert.match(out, /^\| load +\| figure +\| project \|$/m, "table header");
    for (const [load, figures] of ROWS) {
      for (const figure of figures) {
        const row = out.split("\n").find((l) =>
          l.startsWith(`| ${load} `) && l.includes(`| ${figure} `)
        );
        assert.ok(row, `no row "${load}" / "${figure}" in:\n${out}`);
        // Every cell has a measured value, not "failed".
        assert.match(row, /\| +[\d.,]+ \|$|\| +yes \|$/, `value in ${row}`);
      }
    }
    assert.match(out, /^limits of this benchmark:$/m, "the limits are stated");
  },
});
