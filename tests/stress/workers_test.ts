/**
 * workers.ts under a stdout that nobody reads: each worker writes its own
 * log lines from a bounded queue, so memory stays flat however much it
 * logs. (Before, every line went to the main thread as a message, and the
 * messages piled up while the main thread could not print: ~70 MB of
 * memory per MB echoed under --hex.)
 */
import assert from "node:assert/strict";
import { randomBytes, sha256 } from "../lib/bytes.ts";
import { figures } from "../lib/figures.ts";
import { readAll, writeAll } from "../lib/net.ts";
import { residentBytes } from "../lib/proc.ts";
import { withTimeout } from "../lib/spawn.ts";
import { startUnread } from "../lib/unread.ts";

const MiB = 1024 * 1024;
const HOST = "127.0.0.1";
/** A one-line figure for the report (not an assertion). */
const figure = figures("workers");

Deno.test({
  name:
    "workers.ts with stdout never read: echoing 8 MiB under --hex (70 MB of log lines) keeps memory flat after the first 3 MiB, and SIGTERM still exits 0",
  async fn() {
    await using server = await startUnread("workers.ts", [
      "--port",
      "0",
      "--workers",
      "2",
      "--hex",
    ], {
      denoFlags: [
        "--allow-net=127.0.0.1",
        "--allow-read=workers.ts,server.ts",
        // A small heap for each thread, so that garbage is collected
        // early and what RSS shows is what the process keeps. Lines kept
        // without bound would grow it all the same: the messages waiting
        // for the main thread used to live outside the JavaScript heap.
        "--v8-flags=--max-semi-space-size=4,--max-old-space-size=32",
      ],
    });
    const echoMiB = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const payload = randomBytes(MiB);
        using conn = await Deno.connect({ hostname: HOST, port: server.port });
        const [, echoed] = await withTimeout(
          Promise.all([
            writeAll(conn, payload).then(() => conn.closeWrite()),
            readAll(conn),
          ]),
          30_000,
          () => "no echo within 30 s: a worker waits for its stdout",
        );
        assert.equal(await sha256(echoed), await sha256(payload));
      }
    };
    await echoMiB(3);
    const warm = await residentBytes(server.child.pid);
    await echoMiB(5);
    const after = await residentBytes(server.child.pid);
    const mib = (n: number) => (n / MiB).toFixed(0);
    figure(
      `--workers 2 --hex, stdout unread: RSS ${
        mib(warm)
      } MiB after 3 MiB echoed, ${mib(after)} MiB after 8 MiB`,
    );
    assert.ok(
      after - warm < 64 * MiB,
      `RSS grew from ${mib(warm)} to ${mib(after)} MiB over 5 MiB echoed`,
    );
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr.text());
  },
});
