/**
 * An outside HTTP/1.1 check of http.ts: varnishtest, the test driver of
 * Varnish Cache (an HTTP client no one here wrote), sends the request heads
 * that RFC 9112 (sections 2 to 7) and RFC 9110 say a server must accept or
 * refuse, and checks each answer. One case per script in tests/stress/vtc/;
 * each says what it sends, what http.ts answers, and why.
 *
 * varnishtest comes with Debian's `varnish` package (`apt-get install
 * varnish`). Scripts with only clients need no varnishd, only a writable
 * $TMPDIR (or /tmp) for its work folders. Where it is missing, or cannot
 * run, the test is skipped and its name says why. Run one case by hand
 * against a running http.ts:
 *
 *   varnishtest -v -Dhttp_host=127.0.0.1 -Dhttp_port=8080 tests/stress/vtc/obs_fold.vtc
 */
import assert from "node:assert/strict";
import { startHttp } from "../lib/http.ts";
import { hasStackTrace, projectPath } from "../lib/spawn.ts";

const VTC_DIR = projectPath("tests/stress/vtc/");
/** Not a case: a script with nothing in it, to see varnishtest run at all. */
const READY = "ready.vtc";

/** Why varnishtest cannot run here ("" when it can). */
function varnishtestMissing(): string {
  try {
    const probe = new Deno.Command("varnishtest", {
      args: ["-q", VTC_DIR + READY],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    if (probe.success) return "";
    const said = new TextDecoder().decode(probe.stderr) +
      new TextDecoder().decode(probe.stdout);
    const first = said.split("\n").find((l) => l.trim() !== "") ?? "";
    return `varnishtest fails here (needs a writable $TMPDIR or /tmp): ${first.trim()}`;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return "varnishtest is not installed (Debian: apt-get install varnish)";
    }
    return `varnishtest cannot be started: ${
      err instanceof Error ? err.message : String(err)
    }`;
  }
}

const missing = varnishtestMissing();

/** Run one .vtc script against http.ts on `port`: passed, and what it said. */
async function varnishtest(
  script: string,
  port: number,
): Promise<{ passed: boolean; output: string }> {
  const run = await new Deno.Command("varnishtest", {
    // A failure prints its log; -t: the script's own time limit.
    args: [
      "-t",
      "30",
      "-Dhttp_host=127.0.0.1",
      `-Dhttp_port=${port}`,
      VTC_DIR + script,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return {
    passed: run.success,
    output: decode(run.stdout) + decode(run.stderr),
  };
}

Deno.test({
  name:
    "varnishtest, an outside HTTP/1.1 client, finds each head RFC 9112 says to accept or refuse answered as the RFC says (bare LF, obs-fold, a space before the colon, Content-Length, absolute-form, overlong lines, versions)" +
    (missing ? `: skipped, ${missing}` : ""),
  ignore: missing !== "",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn(t) {
    await using server = await startHttp(["--quiet"]);
    const scripts = [...Deno.readDirSync(VTC_DIR)]
      .filter((e) => e.isFile && e.name.endsWith(".vtc") && e.name !== READY)
      .map((e) => e.name)
      .sort();
    assert.ok(scripts.length >= 20, `${scripts.length} scripts`);
    for (const script of scripts) {
      await t.step(script, async () => {
        const run = await varnishtest(script, server.port);
        assert.ok(run.passed, `${script} failed:\n${run.output}`);
      });
    }
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
  },
});
