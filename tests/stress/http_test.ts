/**
 * Abuse, http.ts side: slowloris clients by the hundred, crowds of
 * clients, a connection limit under load, fuzzed request heads and junk
 * command lines. http.ts must answer each with a well-formed response (or
 * close at once), never crash, and still serve a new client afterwards.
 *
 * Everything runs on loopback and is bounded in count and time. Figures are
 * printed as `http abuse:` lines (not assertions).
 */
import assert from "node:assert/strict";
import { figures } from "../lib/figures.ts";
import { framing, HTTP_FLAGS, startHttp } from "../lib/http.ts";
import { junkRound, pool, seededRandom } from "../lib/junk.ts";
import { readAll, writeAll } from "../lib/net.ts";
import { delay } from "../lib/time.ts";
import { hasStackTrace, withTimeout } from "../lib/spawn.ts";
import { startUnread } from "../lib/unread.ts";

const SANITIZE = { sanitizeResources: true, sanitizeOps: true };
const HOST = "127.0.0.1";
const NARROW = ["--allow-net=127.0.0.1"];
const encode = (text: string) => new TextEncoder().encode(text);
/** A one-line figure for the report (not an assertion). */
const figure = figures("http abuse");

/** A fresh fetch() gets the page. */
async function assertServes(port: number, when: string): Promise<void> {
  const res = await withTimeout(
    fetch(`http://${HOST}:${port}/`),
    10_000,
    () => `${when}: no answer to a new client within 10 s`,
  );
  const body = await res.text();
  assert.equal(res.status, 200, `${when}: ${body}`);
}

Deno.test({
  name:
    "200 slowloris clients trickling a byte every 0.3 s: a normal client is still answered at once, and every slow one gets 408 at the head deadline",
  ...SANITIZE,
  async fn() {
    await using server = await startHttp(["--head-timeout", "2", "--quiet"]);
    const port = server.port;
    const COUNT = 200;
    const started = performance.now(); // before any connection is accepted
    const conns = await pool(
      COUNT,
      50,
      () => Deno.connect({ hostname: HOST, port }),
    );
    let done = false;
    const slow = conns.map(async (conn) => {
      const trickle = (async () => {
        await writeAll(conn, encode("GET / HTTP/1.1\r\nX-Slow: "));
        while (!done) {
          try {
            await conn.write(encode("a"));
          } catch {
            return; // closed by the server: fine
          }
          await delay(300);
        }
      })();
      try {
        const reply = await readAll(conn);
        return { reply, ms: performance.now() - started };
      } finally {
        await trickle;
        conn.close();
      }
    });
    try {
      // While all of them trickle, a normal client is served at once.
      const t0 = performance.now();
      await assertServes(port, "during the slowloris");
      const normalMs = performance.now() - t0;
      const results = await withTimeout(
        Promise.all(slow),
        20_000,
        () => "the slow clients were not all cut off within 20 s",
      );
      done = true;
      const statuses = results.map((r) => framing(r.reply, false));
      assert.deepEqual(
        statuses.filter((s) => s.status !== 408 || s.problem),
        [],
      );
      const times = results.map((r) => r.ms).sort((a, b) => a - b);
      figure(
        `slowloris: ${COUNT} trickling clients cut off with 408 after ${
          (times[0] / 1000).toFixed(2)
        }-${
          (times.at(-1)! / 1000).toFixed(2)
        } s (--head-timeout 2); a normal client meanwhile answered in ${
          normalMs.toFixed(0)
        } ms`,
      );
      assert.ok(times[0] >= 1_900, `cut off too early: ${times[0]} ms`);
    } finally {
      done = true;
      await Promise.allSettled(slow);
    }
    await assertServes(port, "after the slowloris");
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
  },
});

Deno.test({
  name:
    "300 clients at once all get a complete 200 page; with --max-connections 20 each gets a complete page or is closed at once, never half a reply",
  ...SANITIZE,
  async fn() {
    for (const extra of [[], ["--max-connections", "20"]]) {
      await using server = await startHttp(["--quiet", ...extra]);
      const port = server.port;
      const request = encode(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
      const started = performance.now();
      const replies = await pool(300, 300, async () => {
        const conn = await Deno.connect({ hostname: HOST, port });
        try {
          await writeAll(conn, request).catch(() => {}); // may be refused
          return await withTimeout(
            readAll(conn).catch(() => new Uint8Array()),
            20_000,
            () => "no reply or close within 20 s",
          );
        } finally {
          conn.close();
        }
      });
      const ms = performance.now() - started;
      const ok = replies.filter((r) => r.length > 0);
      for (const reply of ok) {
        assert.deepEqual(framing(reply, false), { status: 200, problem: "" });
      }
      figure(
        `300 clients at once${
          extra.length ? ` with ${extra.join(" ")}` : ""
        }: ${ok.length} pages, ${
          replies.length - ok.length
        } closed at once, in ${ms.toFixed(0)} ms`,
      );
      if (extra.length === 0) assert.equal(ok.length, 300);
      else assert.ok(ok.length >= 20, `${ok.length} pages`);
      await assertServes(port, `after the crowd ${extra.join(" ")}`);
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.stderr.text());
      const refused = Number(
        /, (\d+) refused,/.exec(server.stdout.lines.at(-1) ?? "")?.[1],
      );
      assert.equal(refused, replies.length - ok.length);
    }
  },
});

/** A valid request with 1 to 3 random byte-level mutations. */
function mutatedRequest(random: () => number): Uint8Array {
  const base = encode(
    "GET /fuzz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: text/plain\r\nContent-Length: 0\r\n\r\n",
  );
  const bytes = [...base];
  const interesting = [
    0x00,
    0x09,
    0x0a,
    0x0d,
    0x20,
    0x3a,
    0x2f,
    0x7f,
    0x80,
    0xff,
    0x1b,
  ];
  const count = 1 + Math.floor(random() * 3);
  for (let i = 0; i < count; i++) {
    const at = Math.floor(random() * bytes.length);
    const r = random();
    const byte = random() < 0.7
      ? interesting[Math.floor(random() * interesting.length)]
      : Math.floor(random() * 256);
    if (r < 0.4) bytes.splice(at, 0, byte);
    else if (r < 0.7) bytes[at] = byte;
    else bytes.splice(at, 1);
  }
  return new Uint8Array(bytes);
}

Deno.test({
  name:
    "400 fuzzed request heads: each gets a well-formed response with an exact Content-Length (200, 400, 405, 431 or 505), and the server keeps serving",
  ...SANITIZE,
  async fn() {
    await using server = await startHttp(["--quiet"]);
    const port = server.port;
    const seed = Math.floor(Math.random() * 2 ** 32);
    const random = seededRandom(seed);
    const requests = Array.from({ length: 400 }, () => mutatedRequest(random));
    const results = await pool(requests.length, 8, async (i) => {
      const conn = await Deno.connect({ hostname: HOST, port });
      try {
        // Send it all and half-close: a head left without its end gets
        // its answer at once instead of at the head deadline.
        await writeAll(conn, requests[i]).catch(() => {});
        await conn.closeWrite().catch(() => {});
        const reply = await withTimeout(
          readAll(conn),
          10_000,
          () => `no reply to fuzzed request ${i} (seed ${seed})`,
        );
        const head = new TextDecoder().decode(requests[i].subarray(0, 5)) ===
          "HEAD ";
        return framing(reply, head);
      } finally {
        conn.close();
      }
    });
    const tally = new Map<number, number>();
    for (const r of results) {
      tally.set(r.status, (tally.get(r.status) ?? 0) + 1);
    }
    figure(
      `fuzz (seed ${seed}): ${
        [...tally].sort().map(([s, n]) => `${n} × ${s}`).join(", ")
      }`,
    );
    const problems = results.flatMap((r, i) =>
      r.problem || ![200, 400, 405, 431, 505].includes(r.status)
        ? [
          `${
            JSON.stringify(new TextDecoder().decode(requests[i]))
          }: ${r.status} ${r.problem}`,
        ]
        : []
    );
    assert.deepEqual(problems, [], `seed ${seed}`);
    await assertServes(port, "after the fuzz");
    assert.ok(!hasStackTrace(server.stderr.text()), server.stderr.text());
  },
});

Deno.test({
  name:
    "junk command lines: http.ts exits 0, 1 or 2 with an error line, never a stack trace or a hang",
  ...SANITIZE,
  async fn() {
    const flags = [...HTTP_FLAGS, "-h"];
    const round = await junkRound("http.ts", flags, 150, NARROW);
    figure(round.summary);
    assert.deepEqual(round.problems, [], round.summary);
  },
});

Deno.test({
  name:
    "a stdout nobody reads never stops the server: its first line read, then stdout never again, 300 requests with --hex (MBs of log; a pipe holds 64 KiB) are all answered, lines past the queue are dropped with a warning, and SIGTERM still stops it, exit 0",
  ...SANITIZE,
  async fn() {
    // Its first line read (for the port), stdout is never read again: the
    // pipe fills (64 KiB) and stays full.
    const args = ["--port", "0", "--hex"];
    await using server = await startUnread("http.ts", args, {
      denoFlags: NARROW,
    });
    const { port, stderr } = server;
    // Each exchange logs its reads and writes with their bytes in hex:
    // about 7 KB of log per request, 2 MB in all.
    const COUNT = 300;
    const started = performance.now();
    const replies = await pool(COUNT, 8, async (i) => {
      const conn = await Deno.connect({ hostname: HOST, port });
      try {
        await writeAll(conn, encode(`GET /${i} HTTP/1.1\r\nHost: a\r\n\r\n`));
        return framing(
          await withTimeout(
            readAll(conn),
            10_000,
            () => `request ${i}: no reply within 10 s (stuck on stdout?)`,
          ),
          false,
        );
      } finally {
        conn.close();
      }
    });
    const servedMs = performance.now() - started;
    assert.deepEqual(
      replies.filter((r) => r.status !== 200 || r.problem),
      [],
    );

    // SIGTERM: no exchange is open, so it stops at once; the log lines
    // still queued get at most 2 s to be written (they never will be).
    const stopping = performance.now();
    const { code } = await server.stop("SIGTERM", 15_000);
    const stopMs = performance.now() - stopping;
    await stderr.done;
    assert.equal(code, 0, stderr.text());
    // Past the queue's bound lines are dropped, and stderr says so (once
    // each time the queue overflows again), and says nothing else.
    const warning = "warning: stdout is not being read; dropping log lines";
    assert.ok(stderr.lines.includes(warning), stderr.text());
    assert.deepEqual(
      stderr.lines.filter((l) => l !== "" && l !== warning),
      [],
    );
    assert.ok(!hasStackTrace(stderr.text()), stderr.text());
    figure(
      `stdout never read: ${COUNT} requests with --hex answered in ${
        servedMs.toFixed(0)
      } ms; SIGTERM to exit ${stopMs.toFixed(0)} ms`,
    );
  },
});
