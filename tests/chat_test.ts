/**
 * chat.ts (and basics/chat.ts), driven as a user drives them: the script
 * in a child process on port 0, clients on real sockets, nc and client.ts
 * as the README shows them.
 */
import assert from "node:assert/strict";
import { MAX_LINE_BYTES, SEND_QUEUE_BYTES } from "../chat.ts";
import { ChatClient } from "./lib/chat.ts";
import {
  commandFor,
  hasStackTrace,
  type RunningScript,
  runScript,
  spawnChild,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };
const utf8 = new TextEncoder();
const bytesOf = (text: string) => utf8.encode(text).length;

/** Start chat.ts on a free port. */
function startChat(args: string[] = []): Promise<RunningScript> {
  return startScript("chat.ts", ["--port", "0", ...args]);
}

/** Connect a client and wait for its welcome (`* you are NAME (N here)`). */
async function join(port: number, here: number): Promise<ChatClient> {
  const c = await ChatClient.connect(port);
  await c.waitForLine(`* you are ${c.name} (${here} here)`);
  return c;
}

/** Close every client in `clients` (whatever state the test left them in). */
async function closeAll(clients: ChatClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
}

// --- one to many --------------------------------------------------------------

Deno.test({
  name:
    "50 clients: every line reaches every other client exactly once, in order per sender, never its sender; joins and leaves are announced and logged with both ends",
  ...SANITIZE,
  async fn() {
    const N = 50;
    const LINES = 5;
    await using server = await startChat();
    const clients: ChatClient[] = [];
    try {
      for (let k = 0; k < N; k++) clients.push(await join(server.port, k + 1));

      // Each client saw the joins of those after it, with the count.
      const last = clients[N - 1];
      for (const [k, c] of clients.entries()) {
        if (c !== last) await c.waitForLine(`* ${last.name} joined (${N} here)`);
        assert.deepEqual(c.lines, [
          `* you are ${c.name} (${k + 1} here)`,
          ...clients.slice(k + 1).map((j, i) =>
            `* ${j.name} joined (${k + 2 + i} here)`
          ),
        ]);
      }

      // Everyone talks at once, 5 numbered lines each, framed three ways:
      // all in one write (several lines in one read), a write per line, and
      // 3 bytes per write (half lines, and a character split in two).
      const said = (k: number) =>
        Array.from({ length: LINES }, (_, j) => `line ${j} — from client ${k}`);
      const sent = new Map<ChatClient, number>();
      await Promise.all(clients.map(async (c, k) => {
        const text = said(k).map((l) => l + "\n");
        sent.set(c, bytesOf(text.join("")));
        if (k % 3 === 0) return await c.send(text.join(""));
        if (k % 3 === 1) { for (const l of text) await c.send(l); return; }
        const all = utf8.encode(text.join(""));
        for (let at = 0; at < all.length; at += 3) {
          await c.send(all.subarray(at, at + 3));
        }
      }));
      const want = (N - 1) * LINES;
      await Promise.all(clients.map((c) =>
        c.waitUntil(`${want} lines`, () => c.said().length >= want, 30_000)
      ));

      // Leave one by one (FIN, as nc -N): each leave is announced to all
      // who are still there, with the new count.
      for (let i = 0; i < N; i++) {
        await clients[i].leave();
        await Promise.all(clients.slice(i + 1).map((c) =>
          c.waitForLine(`* ${clients[i].name} left (${N - 1 - i} here)`)
        ));
      }

      // What each one received (checked after the leaves, so that a late
      // duplicate would have arrived by now).
      for (const [k, c] of clients.entries()) {
        const bySender = new Map<string, string[]>();
        for (const line of c.said()) {
          const m = /^(\d+\.\d+\.\d+\.\d+:\d+): (.*)$/.exec(line);
          assert.ok(m, `client ${k} got an unexpected line ${line}`);
          bySender.set(m[1], [...bySender.get(m[1]) ?? [], m[2]]);
        }
        assert.ok(!bySender.has(c.name), `client ${k} got its own lines`);
        assert.equal(bySender.size, N - 1, `client ${k}: senders`);
        for (const [j, other] of clients.entries()) {
          if (other === c) continue;
          assert.deepEqual(
            bySender.get(other.name),
            said(j),
            `client ${k} got client ${j}'s lines lost, twice or out of order`,
          );
        }
        assert.equal(c.said().length, want, `client ${k}: lines received`);
        assert.equal(c.partial, "", `client ${k}: a line cut short`);
      }

      // The log: one join and one leave line per client, naming both ends;
      // the bytes in are what it sent, the bytes out what it received.
      const local = `127.0.0.1:${server.port}`;
      for (const [k, c] of clients.entries()) {
        const pair = `local ${local} remote ${c.name} (#${k + 1}`;
        assert.ok(
          server.stdout.lines.includes(`chat join ${pair}, ${k + 1} here)`),
          `no join line for client ${k}`,
        );
        const received = bytesOf(c.lines.map((l) => l + "\n").join(""));
        await server.waitForLine(
          new RegExp(
            `^chat leave ${
              escape(pair)
            }\\) in ${sent.get(c)} bytes, out ${received} bytes, ${LINES} lines$`,
          ),
        );
      }
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.stderr.text());
      const totalIn = [...sent.values()].reduce((a, b) => a + b, 0);
      assert.match(
        server.stdout.lines.at(-1)!,
        new RegExp(
          `^chat server stopped: ${N} clients, 0 refused, 0 cut off, ${
            N * LINES
          } lines, ${totalIn} bytes in, \\d+ bytes out$`,
        ),
      );
    } finally {
      await closeAll(clients);
    }
  },
});

/** `text` as a literal piece of a regular expression. */
function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test({
  name:
    "a client that never reads is cut off once its queue passes the bound, with the reason logged and announced, and gets what was written before; the others keep chatting",
  ...SANITIZE,
  async fn() {
    await using server = await startChat();
    const a = await join(server.port, 1);
    const b = await join(server.port, 2);
    // The stuck client: connects, then never reads a byte.
    const stuck = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const stuckName = `127.0.0.1:${stuck.localAddr.port}`;
    try {
      await a.waitForLine(`* ${stuckName} joined (3 here)`);
      await b.waitForLine(`* ${stuckName} joined (3 here)`);

      // a talks in rounds of 32 lines of 4,000 bytes; each round, b reads
      // them all before the next (b keeps up, stuck does not). The kernel
      // holds some for stuck, then its queue fills. A room that awaited
      // each client's write in turn would stop here: b would wait too.
      const cutRe = new RegExp(
        `^chat leave local \\S+ remote ${
          escape(stuckName)
        } \\(#3\\) in 0 bytes, out (\\d+) bytes, 0 lines: cut off: over ${SEND_QUEUE_BYTES} bytes queued for it, it is not reading \\(IRC's "Max SendQ exceeded"\\)$`,
      );
      const PER_ROUND = 32;
      const MAX_BYTES = 64 * 1024 * 1024; // far past any kernel buffering
      const line = (n: number) => `${n} ${"x".repeat(4000)}`;
      let n = 0;
      while (!server.stdout.lines.some((l) => cutRe.test(l))) {
        assert.ok(
          n * 4000 < MAX_BYTES,
          `stuck was never cut off after ${n} lines (${n * 4000} bytes); log: ${
            server.stdout.lines.slice(-3)
          }`,
        );
        let round = "";
        for (let i = 0; i < PER_ROUND; i++) round += line(n++) + "\n";
        await a.send(round);
        await b.waitUntil(`line ${n - 1}`, () => b.said().length >= n);
      }
      const out = Number(cutRe.exec(
        server.stdout.lines.find((l) => cutRe.test(l))!,
      )![1]);
      const reason =
        `cut off: over ${SEND_QUEUE_BYTES} bytes queued for it, it is not reading (IRC's "Max SendQ exceeded")`;
      await a.waitForLine(`* ${stuckName} left (2 here): ${reason}`);
      await b.waitForLine(`* ${stuckName} left (2 here): ${reason}`);

      // The rest go on chatting.
      await b.send("still here?\n");
      await a.waitForLine(`${b.name}: still here?`);
      await a.send("yes\n");
      await b.waitForLine(`${a.name}: yes`);
      assert.deepEqual(
        b.said().filter((l) => !l.endsWith("x")),
        [`${a.name}: yes`],
      );

      // stuck was disconnected: reading now, it gets exactly the bytes the
      // log says were written to it (the kernel still had them), then EOF.
      const got: Uint8Array[] = [];
      const readAll = async () => {
        const buf = new Uint8Array(256 * 1024);
        for (let r; (r = await stuck.read(buf)) !== null;) {
          got.push(buf.slice(0, r));
        }
      };
      await withTimeout(readAll(), 20_000, () => "stuck was not closed");
      const text = new TextDecoder().decode(
        new Uint8Array(got.flatMap((c) => [...c])),
      );
      assert.equal(bytesOf(text), out, "bytes stuck received");
      const lines = text.split("\n");
      assert.equal(lines[0], `* you are ${stuckName} (3 here)`);
      assert.equal(lines[1], `* ${b.name} joined (3 here)`.replace(b.name, b.name));
      for (const [i, l] of lines.slice(2, -1).entries()) {
        assert.equal(l, `${a.name}: ${line(i)}`, `stuck's line ${i}`);
      }
      assert.ok(lines.length - 3 < n, "stuck got every line");
    } finally {
      try {
        stuck.close();
      } catch { /* closed */ }
      await closeAll([a, b]);
    }
  },
});
