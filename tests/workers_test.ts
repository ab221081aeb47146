/**
 * Many sockets, one port: `server.ts --reuse-port` (SO_REUSEPORT) in two
 * processes, and `workers.ts --workers N` (N listeners on one port in one
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
import { waitUntil } from "./lib/time.ts";
import { startUnread } from "./lib/unread.ts";

const HOST = "127.0.0.1";

/**
 * The grants workers.ts's header shows: loopback, and reading the two files
 * each worker loads (relative: the tests run the scripts from their folder).
 */
const WORKER_FLAGS = [
  "--allow-net=127.0.0.1",
  "--allow-read=workers.ts,server.ts",
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

Deno.test("server.ts --reuse-port and workers.ts without --unstable-net: one error line naming the flag, exit 1", async () => {
  for (
    const [script, args, reason] of [
      ["server.ts", ["--reuse-port"], "--reuse-port needs"],
      ["workers.ts", ["--workers", "2"], "workers.ts needs"],
    ] as const
  ) {
    const r = await runScript(script, ["--port", "0", ...args], {
      // --no-config: deno.json would turn --unstable-net on.
      denoFlags: ["--no-config", ...WORKER_FLAGS],
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, "");
    assert.match(
      r.stderr,
      new RegExp(`^error: ${reason} Deno's --unstable-net flag.*\\n$`),
    );
    assert.ok(!hasStackTrace(r.stderr));
  }
});

Deno.test("workers.ts without read access to workers.ts and server.ts: one error line naming both for --allow-read, exit 1", async () => {
  for (const read of [[], ["--allow-read=workers.ts"]]) {
    const r = await runScript("workers.ts", ["--port", "0"], {
      denoFlags: ["--allow-net=127.0.0.1", ...read],
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.out, "");
    assert.equal(
      r.stderr,
      `error: each worker loads workers.ts and server.ts again, so Deno must let it read them: run again with --allow-read=${
        projectPath("workers.ts")
      },${projectPath("server.ts")}\n`,
    );
  }
});

Deno.test("workers.ts --workers 3: all three listen on one port, 60 clients get their bytes back exactly from at least two of them, SIGTERM prints one combined summary", async () => {
  await using server = await startScript("workers.ts", [
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

Deno.test("workers.ts --workers 2 on a port another program holds: one error line, address in use, exit 1", async () => {
  using holder = Deno.listen({ hostname: HOST, port: 0 });
  const r = await runScript("workers.ts", [
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

/**
 * What the server did with a fresh connection: echoed a byte ("served"), or
 * closed it at once ("closed": the end, or a reset, instead of the echo).
 */
async function servedOrClosed(
  conn: Deno.TcpConn,
): Promise<"served" | "closed"> {
  try {
    await conn.write(new Uint8Array([42]));
    const buf = new Uint8Array(1);
    const n = await withTimeout(
      conn.read(buf),
      20_000,
      () => "neither an echo nor a close within 20 s",
    );
    return n === 1 && buf[0] === 42 ? "served" : "closed";
  } catch (err) {
    if (
      err instanceof Deno.errors.ConnectionReset ||
      err instanceof Deno.errors.BrokenPipe
    ) return "closed";
    throw err;
  }
}

Deno.test("workers.ts --workers 3 --max-connections 4 is one limit for the process: of 20 connections held open over several workers, 4 are served and 16 closed at once; closing the 4 frees 4 slots", async () => {
  await using server = await startScript("workers.ts", [
    "--port",
    "0",
    "--workers",
    "3",
    "--max-connections",
    "4",
  ], { denoFlags: WORKER_FLAGS });
  const held: Deno.TcpConn[] = [];
  try {
    const fates = { served: 0, closed: 0 };
    const workersSeen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const conn = await Deno.connect({ hostname: HOST, port: server.port });
      held.push(conn);
      fates[await servedOrClosed(conn)]++;
      // Which worker took it: its open or refused line names our port.
      const line = await server.waitForLine(
        new RegExp(
          `^worker \\d \\| tcp (open|refused) local \\S+ remote ${HOST}:${conn.localAddr.port}[ :]`,
        ),
      );
      workersSeen.add(line.slice(0, 8));
    }
    assert.ok(
      workersSeen.size >= 2,
      `the kernel gave all 20 connections to ${[...workersSeen]}`,
    );
    assert.deepEqual(fates, { served: 4, closed: 16 });
    // Closing the 4 served ones gives their slots back, in every worker.
    for (const conn of held.splice(0)) conn.close();
    const closes = () =>
      server.stdout.lines.filter((l) => /^worker \d \| tcp close /.test(l));
    await waitUntil(
      () => closes().length === 4,
      20_000,
      () => `${closes().length} of the 4 served connections logged a close`,
    );
    for (let i = 0; i < 4; i++) {
      const conn = await Deno.connect({ hostname: HOST, port: server.port });
      held.push(conn);
      assert.equal(await servedOrClosed(conn), "served", `new client ${i + 1}`);
    }
  } finally {
    for (const conn of held) conn.close();
  }
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr.text());
  assert.match(
    server.stdout.lines.at(-1) ?? "",
    /^tcp server stopped: 8 connections, 16 refused, /,
  );
});

Deno.test("workers.ts with stdout never read after the listening line: 1 MiB under --hex and 100 clients are echoed exactly, and SIGTERM still exits 0", async () => {
  // Each worker writes its own lines: none waits for stdout, none queues
  // them without bound (nor does the main thread, which gets none).
  await using server = await startUnread("workers.ts", [
    "--port",
    "0",
    "--workers",
    "2",
    "--hex",
  ], { denoFlags: WORKER_FLAGS });
  const stalled = () => "no echo within 30 s: a worker waits for its stdout";
  const payload = randomBytes(1024 * 1024);
  const { echoed } = await withTimeout(
    echoOnce(server.port, payload),
    30_000,
    stalled,
  );
  assert.equal(await sha256(echoed), await sha256(payload));
  const clientPorts = new Set<number>();
  for (let batch = 0; batch < 5; batch++) {
    await withTimeout(
      Promise.all(Array.from({ length: 20 }, async (_, i) => {
        const word = new TextEncoder().encode(`client ${batch}.${i}`);
        const { echoed, clientPort } = await echoOnce(server.port, word);
        assert.deepEqual(echoed, word);
        clientPorts.add(clientPort);
      })),
      30_000,
      stalled,
    );
  }
  assert.equal(clientPorts.size, 100);
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr.text());
  assert.match(
    server.stderr.text(),
    /^warning: stdout is not being read; dropping log lines$/m,
  );
  assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
});

Deno.test("workers.ts --help shows its own usage and every server.ts option, exit 0", async () => {
  const r = await runScript("workers.ts", ["--help"], {
    denoFlags: WORKER_FLAGS,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.out,
    /^usage: deno run --allow-net=127\.0\.0\.1 --allow-read=workers\.ts,server\.ts --unstable-net workers\.ts \[--workers N\]/,
  );
  for (const flag of ["--workers N", "--max-connections N", "--hex"]) {
    assert.match(r.out, new RegExp(`^  ${flag} `, "m"), flag);
  }
  assert.equal(r.stderr, "");
});

for (
  const [args, reason] of [
    [["--workers", "0"], /--workers must be a whole number from 1 to 256/],
    [["--workers"], /--workers needs a value/],
    // server.ts's own parser says it; the usage is workers.ts's.
    [["--bogus"], /unknown flag "--bogus"/],
  ] as const
) {
  Deno.test(`workers.ts ${args.join(" ")} is a usage error: exit 2, one-line reason, workers.ts's usage`, async () => {
    const r = await runScript("workers.ts", ["--port", "0", ...args], {
      denoFlags: WORKER_FLAGS,
    });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.out, "");
    const [first, blank, usage] = r.stderr.split("\n");
    assert.match(first, /^error: /);
    assert.match(first, reason);
    assert.equal(blank, "");
    assert.match(usage, /^usage: .* workers\.ts /);
    assert.ok(!hasStackTrace(r.stderr));
  });
}
