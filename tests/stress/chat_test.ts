/**
 * chat.ts under abuse: clients that never read, a line that never ends, a
 * shutdown with a client that is stuck. The room must keep its memory
 * bounded, cut off only those that fall behind, and keep every line for
 * those that keep up. Memory figures are printed as `chat:` lines.
 */
import assert from "node:assert/strict";
import { SEND_QUEUE_BYTES } from "../../chat.ts";
import {
  bigLine,
  ChatClient,
  fillKernel,
  flood,
  LINE_BYTES,
} from "../lib/chat.ts";
import { figures } from "../lib/figures.ts";
import { residentBytes } from "../lib/proc.ts";
import { type RunningScript, startScript, withTimeout } from "../lib/spawn.ts";

const SANITIZE = { sanitizeResources: true, sanitizeOps: true };
const MiB = 1024 * 1024;
const HOST = "127.0.0.1";
const figure = figures("chat");

/** The stuck clients' names cut off so far, from the log. */
function cutOff(server: RunningScript): string[] {
  return server.stdout.lines
    .filter((l) => l.startsWith("chat leave ") && l.includes(": cut off: "))
    .map((l) => /remote (\S+)/.exec(l)![1]);
}

Deno.test({
  name:
    "40 clients that never read are each cut off while 64 MiB of lines go through the room; the reader gets every line in order; the server's memory stays within 32 MiB of idle",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("chat.ts", ["--port", "0"]);
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    const STUCK = 40;
    const stuck: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < STUCK; i++) {
        stuck.push(await Deno.connect({ hostname: HOST, port: server.port }));
        await a.waitForLine(new RegExp(` joined \\(${i + 3} here\\)$`));
      }
      const idle = await residentBytes(server.pid);
      let peak = idle;
      let allCutAt = -1;
      const TOTAL = 64 * MiB;
      const lines = await flood(a, b, TOTAL, async (n) => {
        if (n % 256 === 0) {
          peak = Math.max(peak, await residentBytes(server.pid));
        }
        if (allCutAt < 0 && cutOff(server).length === STUCK) allCutAt = n;
      });
      peak = Math.max(peak, await residentBytes(server.pid));
      figure(
        `${STUCK} clients that never read, ${
          (lines * LINE_BYTES / MiB).toFixed(0)
        } MiB through the room: RSS ${(idle / MiB).toFixed(1)} MiB idle, peak ${
          (peak / MiB).toFixed(1)
        } MiB; all cut off after ${
          (allCutAt * LINE_BYTES / MiB).toFixed(1)
        } MiB (queue bound ${SEND_QUEUE_BYTES} bytes each)`,
      );
      assert.equal(cutOff(server).length, STUCK, "every stuck client cut off");
      const names = stuck.map((s) => `${HOST}:${s.localAddr.port}`);
      assert.deepEqual(cutOff(server).sort(), names.sort());
      assert.deepEqual(
        b.said().filter((l) => l.startsWith(a.name)),
        Array.from({ length: lines }, (_, i) => `${a.name}: ${bigLine(i)}`),
        "b lost, repeated or reordered a line",
      );
      assert.ok(
        peak - idle < 32 * MiB,
        `RSS grew by ${((peak - idle) / MiB).toFixed(1)} MiB`,
      );
    } finally {
      for (const s of stuck) s.close();
      await Promise.all([a, b].map((c) => c[Symbol.asyncDispose]()));
    }
  },
});

Deno.test({
  name:
    "a line that never ends (64 MiB, no newline) is held to 4 KiB: the others get one cut line, memory stays within 16 MiB of idle, the sender is told once",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("chat.ts", ["--port", "0"]);
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    try {
      const idle = await residentBytes(server.pid);
      let peak = idle;
      const chunk = new TextEncoder().encode("z".repeat(MiB));
      for (let i = 0; i < 64; i++) {
        await a.send(chunk);
        if (i % 8 === 7) peak = Math.max(peak, await residentBytes(server.pid));
      }
      await a.send("\nand now a short one\n");
      await b.waitForLine(`${a.name}: and now a short one`);
      peak = Math.max(peak, await residentBytes(server.pid));
      figure(
        `a 64 MiB line: RSS ${(idle / MiB).toFixed(1)} MiB idle, peak ${
          (peak / MiB).toFixed(1)
        } MiB`,
      );
      assert.deepEqual(b.said(), [
        `${a.name}: ${"z".repeat(4096)}`,
        `${a.name}: and now a short one`,
      ]);
      assert.equal(
        a.lines.filter((l) => l.startsWith("* your line was cut")).length,
        1,
      );
      assert.ok(
        peak - idle < 16 * MiB,
        `RSS grew by ${((peak - idle) / MiB).toFixed(1)} MiB`,
      );
    } finally {
      await Promise.all([a, b].map((c) => c[Symbol.asyncDispose]()));
    }
  },
});

Deno.test({
  name:
    "SIGTERM with a client that is stuck with a full queue: the others get the goodbye and are closed, the stuck one is closed when the grace is over, exit 0",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("chat.ts", [
      "--port",
      "0",
      "--grace",
      "1",
    ]);
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    const stuck = await Deno.connect({ hostname: HOST, port: server.port });
    const stuckName = `${HOST}:${stuck.localAddr.port}`;
    try {
      await a.waitForLine(`* ${stuckName} joined (3 here)`);
      // Fill the kernel's buffers for stuck, and a few lines more: those
      // wait in its queue (far below the bound), its writer on a write.
      const { lines, held } = await fillKernel(
        a,
        b,
        server.port,
        stuck.localAddr.port,
      );
      assert.deepEqual(cutOff(server), [], "stuck was cut off too soon");
      figure(
        `the kernel held ${held} bytes for a client that never reads (after ${lines} lines of ${LINE_BYTES} bytes)`,
      );
      const started = performance.now();
      server.child.kill("SIGTERM");
      await Promise.all([a.waitClosed(), b.waitClosed()]);
      assert.equal(a.lines.at(-1), "* the server is stopping");
      const status = await withTimeout(
        server.status,
        20_000,
        () => "the server did not exit 20 s after SIGTERM, with --grace 1",
      );
      const took = performance.now() - started;
      figure(`shutdown with a stuck client, --grace 1: ${took.toFixed(0)} ms`);
      assert.equal(status.code, 0);
      await server.stdout.done;
      const out = server.stdout.lines;
      assert.ok(
        out.some((l) =>
          l.includes(`remote ${stuckName} `) &&
          l.endsWith(": shutdown, grace of 1 s over")
        ),
        out.slice(-5).join("\n"),
      );
      assert.match(
        out.at(-1)!,
        /^chat server stopped: 3 clients, 0 refused, 0 cut off, /,
      );
    } finally {
      stuck.close();
      await Promise.all([a, b].map((c) => c[Symbol.asyncDispose]()));
    }
  },
});
