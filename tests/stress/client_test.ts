/**
 * Faults, client side: servers that reset, stall or never read, and the
 * three ways a connect fails (refused, no route, no answer) seen for real
 * in a throwaway network namespace (`unshare -n`, root only; skipped with
 * the reason elsewhere). Addresses are from 198.18.0.0/15, never routed,
 * and live only inside the namespace, which vanishes with its process.
 */
import assert from "node:assert/strict";
import { randomBytes } from "../lib/bytes.ts";
import { readExactly, serveOne, writeAll } from "../lib/net.ts";
import { needsNetns, offline } from "../lib/netns.ts";
import { figures } from "../lib/figures.ts";
import { residentBytes } from "../lib/proc.ts";
import {
  commandFor,
  hasStackTrace,
  runScript,
  withTimeout,
} from "../lib/spawn.ts";
import { delay } from "../lib/time.ts";

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };

Deno.test({
  name:
    "netcat mode against a server that resets mid-upload: no stack trace, at most one error line",
  ...SANITIZE,
  fn: async () => {
    // The reset races with our upload and download, so try it a few times,
    // with and without a last word from the server before it goes.
    for (let round = 0; round < 12; round++) {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = (async () => {
        const conn = await listener.accept();
        await readExactly(conn, 1000);
        if (round % 2 === 0) {
          await writeAll(conn, new TextEncoder().encode("bye\n"));
        }
        // Close with megabytes unread in our receive buffer: the kernel sends RST.
        conn.close();
      })();
      const r = await runScript("client.ts", [
        "--port",
        String(listener.addr.port),
      ], {
        stdin: randomBytes(8 * 1024 * 1024),
      });
      await served;
      assert.ok(r.code === 0 || r.code === 1, `round ${round}: exit ${r.code}`);
      assert.ok(!hasStackTrace(r.stderr), `round ${round}: ${r.stderr}`);
      const lines = r.stderr.split("\n").filter((l) => l !== "");
      assert.ok(lines.length <= 1, r.stderr);
      if (r.code === 1) {
        assert.match(
          lines[0],
          /^error: tcp 127\.0\.0\.1:\d+ reset the connection/,
        );
      }
    }
  },
});

Deno.test({
  name:
    "--timeout bounds a write too: a server that accepts and never reads makes an upload give up with one error line, exit 1",
  ...SANITIZE,
  fn: async () => {
    // Never read: the buffers fill, writes stall.
    await using server = serveOne((_conn, released) => released);
    const r = await runScript("client.ts", [
      "--port",
      String(server.port),
      "--timeout",
      "500",
    ], { stdin: randomBytes(64 * 1024 * 1024), timeoutMs: 20_000 });
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.split("\n").filter((l) => l !== "");
    assert.equal(lines.length, 1, r.stderr);
    const where = `tcp 127\\.0\\.0\\.1:${server.port}`;
    // Both ways are stalled: whichever wait ends first tells it, truly.
    assert.match(
      lines[0],
      new RegExp(
        `^error: (${where} has taken none of our bytes for 500 ms \\(--timeout\\): the server is not reading|no data from ${where} for 500 ms \\(--timeout\\): the server accepted the connection but has sent nothing)$`,
      ),
    );
  },
});

Deno.test({
  name:
    "netcat mode, --timeout 300: nothing either way for 300 ms (stdin open but quiet, server silent) ends with an error, exit 1",
  ...SANITIZE,
  fn: async () => {
    await using server = serveOne((_conn, released) => released);
    const child = commandFor(
      "client.ts",
      [
        "--port",
        String(server.port),
        "--timeout",
        "300",
      ],
      {},
      { stdin: "piped" },
    ).spawn();
    try {
      // stdin stays open (we never close it until the end), and quiet.
      const { code, stderr } = await withTimeout(
        child.output(),
        10_000,
        () => "the client was still waiting after 10 s",
      ).catch((err) => {
        child.kill("SIGKILL");
        throw err;
      });
      assert.equal(code, 1);
      assert.equal(
        new TextDecoder().decode(stderr),
        `error: no data from tcp 127.0.0.1:${server.port} for 300 ms (--timeout): the server accepted the connection but has sent nothing\n`,
      );
    } finally {
      await child.stdin.close().catch(() => {});
    }
  },
});

// --- the three ways a connect fails, in a network namespace -----------------

/**
 * Run client.ts with `args` in a new, empty network namespace after
 * `setup` (shell commands). The namespace goes when the process ends.
 */
async function clientInNamespace(setup: string, args: string[]) {
  const started = performance.now();
  const { code, stderr } = await runScript("client.ts", args, offline(setup));
  return { code, stderr, took: performance.now() - started };
}

/** A veth pair in the namespace: we are 198.18.0.1/24 on `va`. */
const LINK = "ip link add va type veth peer name vb; " +
  "ip addr add 198.18.0.1/24 dev va; ip link set va up; ip link set vb up";

Deno.test({
  ...needsNetns(
    "the three ways a connect fails give three different messages: " +
      "no route to the network, no host answering on the link, no answer in time",
  ),
  fn: async () => {
    const [network, host, silent] = await Promise.all([
      // Only loopback: no route to 198.18.0.9 at all (ENETUNREACH).
      clientInNamespace("true", [
        "--hostname",
        "198.18.0.9",
        "--port",
        "9000",
        "hi",
      ]),
      // On the link, but nobody has 198.18.0.2: ARP asks three times, gets
      // no answer, and the kernel reports EHOSTUNREACH (about 3 s).
      clientInNamespace(LINK, [
        "--hostname",
        "198.18.0.2",
        "--port",
        "9000",
        "hi",
      ]),
      // A neighbour entry for a machine that is not there: the SYNs go out
      // and vanish, as with a firewall that drops them.
      clientInNamespace(
        `${LINK}; ip neigh add 198.18.0.3 lladdr 02:00:00:00:00:03 dev va nud permanent`,
        [
          "--hostname",
          "198.18.0.3",
          "--port",
          "9000",
          "--timeout",
          "700",
          "hi",
        ],
      ),
    ]);
    for (const r of [network, host, silent]) {
      assert.equal(r.code, 1, r.stderr);
      assert.ok(!hasStackTrace(r.stderr), r.stderr);
      assert.equal(r.stderr.split("\n").filter((l) => l).length, 1, r.stderr);
    }
    assert.match(
      network.stderr,
      /^error: no route to tcp 198\.18\.0\.9:9000 \(after \d+ ms\): this machine has no route to that network/,
    );
    assert.match(
      host.stderr,
      /^error: no route to tcp 198\.18\.0\.2:9000 \(after \d+ ms\): no host answers at that address/,
    );
    assert.match(
      silent.stderr,
      /^error: no answer from tcp 198\.18\.0\.3:9000 within 700 ms: the connection request \(SYN\) got no reply/,
    );
    console.log(
      `client faults: no route ${Math.round(network.took)} ms, no host ${
        Math.round(host.took)
      } ms, no answer ${Math.round(silent.took)} ms (each with Deno's start)`,
    );
  },
});

// --- --http: a response head without end ----------------------------------

Deno.test({
  name:
    "--http against 50 MB of header lines without end: the client gives up at its bound, exit 1, its memory flat instead of growing with the headers",
  ...SANITIZE,
  fn: async () => {
    const TOTAL = 50 * 1024 * 1024;
    const MiB = 1024 * 1024;
    const encoder = new TextEncoder();
    const requested = Promise.withResolvers<void>();
    const finished = Promise.withResolvers<void>();
    let sent = 0;
    await using server = serveOne(async (conn, released) => {
      await conn.read(new Uint8Array(8192)); // the request
      requested.resolve();
      await writeAll(conn, encoder.encode("HTTP/1.1 200 OK\r\n"));
      // Short lines: the kind that cost the old client most per byte.
      const block = encoder.encode("X-Filler: abcdefghijkl\r\n".repeat(2730));
      try {
        while (sent < TOTAL) {
          await writeAll(conn, block);
          sent += block.length;
        }
      } catch { /* the client gave up and went */ }
      finished.resolve();
      await released; // and never close: only the client can end this
    });
    const child = commandFor(
      "client.ts",
      [
        "--http",
        "--port",
        String(server.port),
      ],
      {},
      { stdin: "null" },
    ).spawn();
    let printed = 0;
    const drained = child.stdout.pipeTo(
      new WritableStream({
        write(chunk) {
          printed += chunk.length;
        },
      }),
    );
    const stderr = new Response(child.stderr).text();
    let exited = false;
    const status = child.status.finally(() => exited = true);
    let serverDone = false;
    finished.promise.then(() => serverDone = true);
    // Resident memory, sampled from the request on (Deno has started),
    // until the client exits or the server has sent all 50 MB.
    await Promise.race([requested.promise, status]);
    const samples: number[] = [];
    const sample = async () => {
      try {
        samples.push(await residentBytes(child.pid));
      } catch { /* it exited in between */ }
    };
    const deadline = performance.now() + 60_000;
    while (!exited && !serverDone && performance.now() < deadline) {
      await sample();
      await delay(50);
    }
    if (!exited) {
      await sample();
      child.kill("SIGKILL");
    }
    const { code } = await status;
    await drained;
    const errors = await stderr;
    const mb = (n: number) => (n / MiB).toFixed(1);
    const low = Math.min(...samples);
    const high = Math.max(...samples);
    figures("client")(
      `--http, header lines without end: the server sent ${
        mb(sent)
      } MiB before the client went (exit ${code}); ${printed} bytes printed; RSS ${
        samples.length === 0
          ? "not sampled (gone too soon)"
          : `${mb(low)} to ${mb(high)} MiB over ${samples.length} samples`
      }`,
    );
    if (samples.length > 1) {
      assert.ok(
        high - low < 32 * MiB,
        `RSS grew from ${mb(low)} to ${mb(high)} MiB with the headers`,
      );
    }
    assert.equal(code, 1, errors);
    assert.match(
      errors,
      /\nerror: tcp 127\.0\.0\.1:\d+ sent a response head over 65536 bytes/,
    );
    assert.ok(sent < TOTAL, `the client read all ${mb(sent)} MiB of headers`);
  },
});
