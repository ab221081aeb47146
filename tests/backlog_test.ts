/**
 * The listen queue, seen from the kernel: `server.ts --backlog N` reaches
 * `listen(fd, N)` (ss shows it as Send-Q of the listening socket), and
 * when the queue is full Linux drops new SYNs, so client.ts's connect gives
 * up by its own `--timeout`, with an `error:` line, within the timeout plus
 * a margin (the start-up of a Deno process).
 */
import assert from "node:assert/strict";
import { fullListenQueue, listenQueue } from "./lib/net.ts";
import { hasStackTrace, runScript, startScript } from "./lib/spawn.ts";

for (const backlog of [7, 1]) {
  Deno.test(`server.ts --backlog ${backlog} reaches the kernel: ss shows Send-Q ${backlog}`, async () => {
    await using server = await startScript("server.ts", [
      "--backlog",
      `${backlog}`,
      "--port",
      "0",
      "--quiet",
    ]);
    const queue = await listenQueue(server.port);
    assert.equal(queue.backlog, backlog, queue.line);
    assert.equal(queue.waiting, 0, queue.line);
  });
}

Deno.test({
  name:
    "a full listen queue drops the SYN: client.ts --timeout 1000 gives up with an error: line within the timeout plus a margin",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    // A listener that never accepts, with room for backlog + 1 = 2: full.
    using full = await fullListenQueue();
    const { port, queue } = full;
    assert.equal(queue.waiting, 2, `the queue is not full: ${queue.line}`);
    const timeoutMs = 1000;
    const start = performance.now();
    const r = await runScript("client.ts", [
      "--port",
      `${port}`,
      "--timeout",
      `${timeoutMs}`,
      "hello",
    ], { timeoutMs: 15_000 });
    const elapsed = performance.now() - start;

    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, "");
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], new RegExp(`^error: .*127\\.0\\.0\\.1:${port}`));
    assert.match(lines[0], /1000 ms|time/i);
    assert.doesNotMatch(lines[0], /refused/i);
    assert.ok(!hasStackTrace(r.stderr), r.stderr);
    // It waited for the timeout (the SYN got no answer), and not much more.
    assert.ok(elapsed >= timeoutMs, `gave up after ${elapsed} ms`);
    assert.ok(elapsed < timeoutMs + 4000, `gave up after ${elapsed} ms`);
  },
});
