/**
 * Many sockets, one port: `server.ts --reuse-port` (SO_REUSEPORT) in two
 * processes, and `server.ts --workers N` (N listeners on one port in one
 * process, a Deno Worker each). The kernel picks the listener for each new
 * connection from a hash of its addresses and ports, so the tests use
 * enough connections and ask only that more than one listener got some.
 */
import assert from "node:assert/strict";
import { randomBytes, sha256 } from "./lib/bytes.ts";
import { readAll, writeAll } from "./lib/net.ts";
import {
  hasStackTrace,
  projectPath,
  type RunningScript,
  runScript,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";

const HOST = "127.0.0.1";

/** What --workers needs: loopback, and reading the script each worker loads. */
const WORKER_FLAGS = [
  "--allow-net=127.0.0.1",
  `--allow-read=${projectPath("server.ts")}`,
];

/** Send `payload`, half-close, read the echo; returns it and our port. */
async function echoOnce(
  port: number,
  payload: Uint8Array,
): Promise<{ echoed: Uint8Array<ArrayBuffer>; clientPort: number }> {
  using conn = await Deno.connect({ hostname: HOST, port });
  const [, echoed] = await Promise.all([
    writeAll(conn, payload).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  return { echoed, clientPort: conn.localAddr.port };
}

/**
 * Which of `servers` logged the open line of the client at `clientPort`
 * (its index), and that line; whichever it was, within 10 s.
 */
async function whoOpened(
  servers: RunningScript[],
  clientPort: number,
): Promise<{ index: number; line: string }> {
  const re = new RegExp(`tcp open local \\S+ remote ${HOST}:${clientPort} `);
  return await withTimeout(
    Promise.race(
      servers.map((s, index) =>
        s.stdout.waitFor(re).then((line) => ({ index, line }))
      ),
    ),
    10_000,
    () => `no server logged the connection from port ${clientPort}`,
  );
}

Deno.test("two servers with --reuse-port share one port: 50 connections are spread over both, each log shows that port", async () => {
  await using a = await startScript("server.ts", [
    "--port",
    "0",
    "--reuse-port",
  ]);
  await using b = await startScript("server.ts", [
    "--port",
    String(a.port),
    "--reuse-port",
  ]);
  assert.equal(b.stdout.lines[0], `tcp listening on ${HOST}:${a.port}`);
  const got = [0, 0];
  for (let i = 0; i < 50; i++) {
    const payload = new TextEncoder().encode(`client ${i}`);
    const { echoed, clientPort } = await echoOnce(a.port, payload);
    assert.deepEqual(echoed, payload);
    const { index, line } = await whoOpened([a, b], clientPort);
    assert.match(line, new RegExp(`^tcp open local ${HOST}:${a.port} `));
    got[index]++;
  }
  assert.ok(
    got[0] > 0 && got[1] > 0,
    `the kernel gave ${got[0]} connections to the first server and ${
      got[1]
    } to the second`,
  );
});

Deno.test("a second server on a port taken by a --reuse-port server fails unless it sets --reuse-port too", async () => {
  // Both must ask for SO_REUSEPORT: either one without it is refused.
  for (
    const [first, second] of [[["--reuse-port"], []], [[], ["--reuse-port"]]]
  ) {
    await using server = await startScript("server.ts", [
      "--port",
      "0",
      ...first,
    ]);
    const r = await runScript("server.ts", [
      "--port",
      String(server.port),
      ...second,
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, "");
    assert.match(
      r.stderr,
      new RegExp(`^error: tcp ${HOST}:${server.port} is already in use.*\\n$`),
    );
  }
});

Deno.test("--reuse-port and --workers without --unstable-net: one error line naming the flag, exit 1", async () => {
  for (const flag of [["--reuse-port"], ["--workers", "2"]]) {
    const r = await runScript("server.ts", ["--port", "0", ...flag], {
      // --no-config: deno.json would turn --unstable-net on.
      denoFlags: ["--no-config", ...WORKER_FLAGS],
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, "");
    assert.match(
      r.stderr,
      new RegExp(`^error: ${flag[0]} needs Deno's --unstable-net flag.*\\n$`),
    );
    assert.ok(!hasStackTrace(r.stderr));
  }
});

Deno.test("--workers without read access to server.ts: one error line naming --allow-read, exit 1", async () => {
  const r = await runScript("server.ts", ["--port", "0", "--workers", "2"], {
    denoFlags: ["--allow-net=127.0.0.1"],
  });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.out, "");
  assert.match(
    r.stderr,
    /^error: --workers needs read access to this script.*--allow-read=\S*server\.ts\n$/,
  );
});

Deno.test("--workers 3: all three listen on one port, 60 clients get their bytes back exactly from at least two of them, SIGTERM prints one combined summary", async () => {
  await using server = await startScript("server.ts", [
    "--port",
    "0",
    "--workers",
    "3",
  ], { denoFlags: WORKER_FLAGS });
  const where = `${HOST}:${server.port}`;
  assert.equal(server.stdout.lines[0], `tcp listening on ${where}`);
  for (const id of [1, 2, 3]) {
    await server.waitForLine(
      new RegExp(`^worker ${id} \\| tcp listening on ${where}$`),
    );
  }
  // 60 clients, 10 at a time, payloads from 1 byte to 1 MiB.
  const perWorker = new Map<string, number>();
  let total = 0;
  for (let round = 0; round < 6; round++) {
    await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const size = [1, 100, 1000, 64 * 1024, 1024 * 1024][(round + i) % 5];
      const payload = randomBytes(size);
      const { echoed, clientPort } = await echoOnce(server.port, payload);
      assert.equal(await sha256(echoed), await sha256(payload), `${size} B`);
      const line = await server.waitForLine(
        new RegExp(
          `^worker \\d \\| tcp close local ${where} remote ${HOST}:${clientPort} .* in ${size} bytes, out ${size} bytes$`,
        ),
      );
      const worker = line.slice(0, 8);
      perWorker.set(worker, (perWorker.get(worker) ?? 0) + 1);
      total += size;
    }));
  }
  assert.ok(
    perWorker.size >= 2,
    `all 60 connections went to ${[...perWorker.keys()]}`,
  );
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr.text());
  assert.equal(server.stderr.text(), "");
  const counts = [1, 2, 3].map((id) => perWorker.get(`worker ${id}`) ?? 0);
  const lines = server.stdout.lines;
  for (const [i, n] of counts.entries()) {
    assert.ok(
      lines.some((l) =>
        l.startsWith(
          `worker ${i + 1} | tcp server stopped: ${n} connections, 0 refused, `,
        )
      ),
      `worker ${i + 1}'s summary`,
    );
  }
  assert.equal(
    lines.at(-1),
    `tcp server stopped: 60 connections, 0 refused, ${total} bytes in, ${total} bytes out (3 workers: ${
      counts.join(" + ")
    } connections)`,
  );
});

Deno.test("--workers 2 on a port another program holds: one error line, address in use, exit 1", async () => {
  using holder = Deno.listen({ hostname: HOST, port: 0 });
  const r = await runScript("server.ts", [
    "--port",
    String(holder.addr.port),
    "--workers",
    "2",
  ], { denoFlags: WORKER_FLAGS });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.out, "");
  assert.match(
    r.stderr,
    new RegExp(
      `^error: tcp ${HOST}:${holder.addr.port} is already in use.*\\n$`,
    ),
  );
  assert.ok(!hasStackTrace(r.stderr));
});
