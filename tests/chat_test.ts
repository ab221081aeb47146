/**
 * chat.ts (and basics/chat.ts), driven as a user drives them: the script
 * in a child process on port 0, clients on real sockets, nc and client.ts
 * as the README shows them.
 */
import assert from "node:assert/strict";
import { MAX_LINE_BYTES, SEND_QUEUE_BYTES } from "../chat.ts";
import { concat } from "./lib/bytes.ts";
import { bigLine, ChatClient, fillKernel, flood } from "./lib/chat.ts";
import { readAll } from "./lib/net.ts";
import {
  commandFor,
  hasStackTrace,
  type RunningScript,
  runScript,
  spawnChild,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import { waitUntil } from "./lib/time.ts";

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };
const utf8 = new TextEncoder();
const bytesOf = (text: string) => utf8.encode(text).length;

/** Start chat.ts on a free port. */
function startChat(args: string[] = []): Promise<RunningScript> {
  return startScript("chat.ts", ["--port", "0", ...args]);
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
      for (let k = 0; k < N; k++) {
        clients.push(await ChatClient.join(server.port, k + 1));
      }

      // Each client saw the joins of those after it, with the count.
      const last = clients[N - 1];
      for (const [k, c] of clients.entries()) {
        if (c !== last) {
          await c.waitForLine(`* ${last.name} joined (${N} here)`);
        }
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
        if (k % 3 === 1) {
          for (const l of text) await c.send(l);
          return;
        }
        const all = utf8.encode(text.join(""));
        for (let at = 0; at < all.length; at += 3) {
          await c.send(all.subarray(at, at + 3));
        }
      }));
      const want = (N - 1) * LINES;
      await Promise.all(
        clients.map((c) =>
          c.waitUntil(`${want} lines`, () => c.said().length >= want, 30_000)
        ),
      );

      // Leave one by one (FIN, as nc -N): each leave is announced to all
      // who are still there, with the new count.
      for (let i = 0; i < N; i++) {
        await clients[i].leave();
        await Promise.all(
          clients.slice(i + 1).map((c) =>
            c.waitForLine(`* ${clients[i].name} left (${N - 1 - i} here)`)
          ),
        );
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
        await server.waitForLine(
          new RegExp(`^${escape(`chat join ${pair}, ${k + 1} here)`)}$`),
        );
        const received = bytesOf(c.lines.map((l) => l + "\n").join(""));
        await server.waitForLine(
          new RegExp(
            `^chat leave ${escape(pair)}\\) in ${
              sent.get(c)
            } bytes, out ${received} bytes, ${LINES} lines$`,
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
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    // The stuck client: connects, then never reads a byte.
    const stuck = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
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
      const out = Number(
        cutRe.exec(
          server.stdout.lines.find((l) => cutRe.test(l))!,
        )![1],
      );
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
      const text = new TextDecoder().decode(concat(got));
      assert.equal(bytesOf(text), out, "bytes stuck received");
      const lines = text.split("\n");
      assert.equal(lines[0], `* you are ${stuckName} (3 here)`);
      for (const [i, l] of lines.slice(1, -1).entries()) {
        assert.equal(l, `${a.name}: ${line(i)}`, `stuck's line ${i}`);
      }
      assert.ok(lines.length - 2 < n, "stuck got every line");
    } finally {
      try {
        stuck.close();
      } catch { /* closed */ }
      await closeAll([a, b]);
    }
  },
});

Deno.test({
  name:
    "a line over 4096 bytes reaches the others cut to 4096 bytes (on a character boundary), the sender is told, and the next line is whole; CR LF ends a line as LF does",
  ...SANITIZE,
  async fn() {
    await using server = await startChat();
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    try {
      assert.equal(MAX_LINE_BYTES, 4096);
      const told =
        `* your line was cut to ${MAX_LINE_BYTES} bytes, the longest line here`;
      // 10,000 bytes in one line, sent 1,000 bytes a write, then a short one.
      const long = utf8.encode("x".repeat(10_000) + "\nafter the long line\n");
      for (let at = 0; at < long.length; at += 1000) {
        await a.send(long.subarray(at, at + 1000));
      }
      await b.waitForLine(`${a.name}: after the long line`);
      await a.waitForLine(told);
      // Exactly the limit is whole; 2,000 three-byte characters (6,000
      // bytes) are cut to 1,365 of them (4,095 bytes), not mid-character.
      await a.send("y".repeat(MAX_LINE_BYTES) + "\r\n");
      await a.send("€".repeat(2000) + "\nlast\r\n");
      await b.waitForLine(`${a.name}: last`);
      assert.deepEqual(b.said(), [
        `${a.name}: ${"x".repeat(MAX_LINE_BYTES)}`,
        `${a.name}: after the long line`,
        `${a.name}: ${"y".repeat(MAX_LINE_BYTES)}`,
        `${a.name}: ${"€".repeat(1365)}`,
        `${a.name}: last`,
      ]);
      await a.waitUntil(
        "two notes",
        (l) => l.filter((x) => x === told).length === 2,
      );
      const cutLog = () =>
        server.stdout.lines.filter((l) =>
          l === "chat #1 line cut to 4096 bytes"
        );
      await waitUntil(() => cutLog().length >= 2, 20_000, () => `${cutLog()}`);
      assert.equal(cutLog().length, 2);
    } finally {
      await closeAll([a, b]);
    }
  },
});

/** Whether OpenBSD netcat (`nc -N`, half-close at the end of input) is here. */
function hasNcWithN(): boolean {
  try {
    const { stdout, stderr } = new Deno.Command("nc", {
      args: ["-h"],
      stdin: "null",
    }).outputSync();
    return /\s-N\s/.test(
      new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr),
    );
  } catch {
    return false;
  }
}

for (const tool of ["client.ts", "nc"]) {
  const noNc = tool === "nc" && !hasNcWithN();
  Deno.test({
    name:
      `${tool} in netcat mode chats: it is welcomed, sees others' lines, its lines reach them, and at the end of its input it leaves and exits 0${
        noNc ? " (skipped: no OpenBSD nc with -N here)" : ""
      }`,
    ignore: noNc,
    ...SANITIZE,
    async fn() {
      await using server = await startChat();
      const b = await ChatClient.join(server.port, 1);
      const command = tool === "nc"
        ? new Deno.Command("nc", {
          args: ["-N", "127.0.0.1", String(server.port)],
          stdin: "piped",
          stdout: "piped",
          stderr: "piped",
        })
        : commandFor("client.ts", ["--port", String(server.port)], {}, {
          stdin: "piped",
        });
      await using peer = spawnChild(command, tool, { stdin: true });
      try {
        const joined = await b.waitForLine(/^\* \S+ joined \(2 here\)$/);
        const name = joined.split(" ")[1];
        await peer.waitForLine(
          new RegExp(`^\\* you are ${escape(name)} \\(2 here\\)$`),
        );
        await b.send("hello from a socket\n");
        await peer.waitForLine(
          new RegExp(`^${escape(b.name)}: hello from a socket$`),
        );
        await peer.write(`hello from ${tool}\n`);
        await b.waitForLine(`${name}: hello from ${tool}`);
        await peer.closeStdin(); // its FIN: it leaves
        await b.waitForLine(`* ${name} left (1 here)`);
        const status = await withTimeout(
          peer.status,
          20_000,
          () => `${tool} did not exit after the server closed`,
        );
        assert.equal(status.code, 0, peer.stderr.text());
        await server.waitForLine(
          new RegExp(
            `^chat leave local \\S+ remote ${escape(name)} \\(#2\\) in ${
              bytesOf(`hello from ${tool}\n`)
            } bytes, out \\d+ bytes, 1 lines$`,
          ),
        );
      } finally {
        await b[Symbol.asyncDispose]();
      }
    },
  });
}

Deno.test({
  name:
    "a client that half-closes still gets every line queued for it before its FIN (its writer finishes), then the server closes",
  ...SANITIZE,
  async fn() {
    await using server = await startChat();
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    const late = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const lateName = `127.0.0.1:${late.localAddr.port}`;
    try {
      await a.waitForLine(`* ${lateName} joined (3 here)`);
      // late reads nothing until the kernel's buffers for it are full and
      // some lines wait in its queue; then it half-closes, and reads.
      const { lines } = await fillKernel(
        a,
        b,
        server.port,
        late.localAddr.port,
      );
      await late.closeWrite();
      await a.waitForLine(`* ${lateName} left (2 here)`);
      const got = await withTimeout(
        readAll(late),
        20_000,
        () => "late was not closed after its FIN",
      );
      const want = [
        `* you are ${lateName} (3 here)`,
        ...Array.from({ length: lines }, (_, i) => `${a.name}: ${bigLine(i)}`),
      ].map((l) => l + "\n").join("");
      assert.equal(got.length, utf8.encode(want).length, "bytes late got");
      assert.ok(new TextDecoder().decode(got) === want, "late's lines differ");
      await server.waitForLine(
        new RegExp(
          `^chat leave .* remote ${
            escape(lateName)
          } \\(#3\\) in 0 bytes, out ${got.length} bytes, 0 lines$`,
        ),
      );
    } finally {
      late.close();
      await closeAll([a, b]);
    }
  },
});

// --- limits, shutdown, flags ---------------------------------------------------

Deno.test({
  name:
    "SIGTERM with clients in the room: each is told, gets what was queued, sees the close; a summary line, exit 0",
  ...SANITIZE,
  async fn() {
    await using server = await startChat();
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    try {
      await a.send("one\ntwo\n");
      await b.waitForLine(`${a.name}: two`);
      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.stderr.text());
      await Promise.all([a.waitClosed(), b.waitClosed()]);
      assert.equal(a.lines.at(-1), "* the server is stopping");
      assert.equal(b.lines.at(-1), "* the server is stopping");
      const out = server.stdout.lines;
      assert.ok(
        out.includes("chat stopping: 2 here, up to 5 s to send what is queued"),
      );
      for (const c of [a, b]) {
        assert.ok(
          out.some((l) =>
            l.startsWith(`chat leave local `) &&
            l.includes(`remote ${c.name} `) &&
            l.endsWith(": the server stopped")
          ),
          `no leave line for ${c.name}: ${out}`,
        );
      }
      assert.match(
        out.at(-1)!,
        /^chat server stopped: 2 clients, 0 refused, 0 cut off, 2 lines, 8 bytes in, \d+ bytes out$/,
      );
      assert.equal(server.stderr.text(), "");
    } finally {
      await closeAll([a, b]);
    }
  },
});

Deno.test({
  name:
    "--max-connections 2: a third client is told the room is full and closed, the refusal is logged, the two go on",
  ...SANITIZE,
  async fn() {
    await using server = await startChat(["--max-connections", "2"]);
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    const c = await ChatClient.connect(server.port);
    try {
      await c.waitClosed();
      assert.deepEqual(c.lines, [
        "* the room is full (2 here, --max-connections 2)",
      ]);
      await server.waitForLine(
        new RegExp(
          `^chat refused local \\S+ remote ${
            escape(c.name)
          }: 2 here, --max-connections 2$`,
        ),
      );
      await a.send("still two\n");
      await b.waitForLine(`${a.name}: still two`);
      assert.ok(!a.lines.some((l) => l.includes(c.name)), "a heard of c");
    } finally {
      await closeAll([a, b, c]);
    }
  },
});

Deno.test({
  name:
    "--idle-timeout: a client that moves no bytes that long is closed, logged as idle, and the others are told",
  ...SANITIZE,
  async fn() {
    await using server = await startChat(["--idle-timeout", "0.5"]);
    const a = await ChatClient.join(server.port, 1);
    try {
      await a.waitClosed();
      await server.waitForLine(
        new RegExp(
          `^chat leave .* remote ${escape(a.name)} .*: idle for 0.5 s$`,
        ),
      );
    } finally {
      await a[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name:
    "--trace --hex: one line per read and per write with its size, the bytes under it as xxd shows them",
  ...SANITIZE,
  async fn() {
    await using server = await startChat(["--hex"]);
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    try {
      await a.send("hi\n");
      const got = `${a.name}: hi\n`;
      await b.waitForLine(`${a.name}: hi`);
      await server.waitForLine(
        new RegExp(`^chat #2 wrote ${bytesOf(got)} bytes$`),
      );
      const lines = server.stdout.lines;
      const read = lines.indexOf("chat #1 read 3 bytes");
      assert.ok(read > 0, lines.join("\n"));
      assert.equal(
        lines[read + 1],
        "00000000: 6869 0a                                  hi.",
      );
    } finally {
      await closeAll([a, b]);
    }
  },
});

Deno.test("chat --help prints the usage on stdout, with the limits, exit 0", async () => {
  const r = await runScript("chat.ts", ["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /^usage: deno run --allow-net=127.0.0.1 chat.ts/);
  assert.match(r.out, new RegExp(`at most ${MAX_LINE_BYTES} bytes`));
  assert.match(r.out, new RegExp(`falls ${SEND_QUEUE_BYTES} bytes behind`));
  assert.equal(r.stderr, "");
});

for (
  const args of [
    ["--port", "70000"],
    ["--bogus"],
    ["--hostname", "127.0.0.1:9000"],
    ["--idle-timeout", "soon"],
    ["--max-connections", "0"],
    ["words"],
  ]
) {
  Deno.test(`chat ${args.join(" ")} is a usage error: exit 2, one reason and the usage, nothing bound`, async () => {
    const r = await runScript("chat.ts", args);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.out, "");
    assert.match(r.stderr, /^error: .+\n\nusage: /);
    assert.ok(!hasStackTrace(r.stderr), r.stderr);
  });
}

Deno.test("chat on a port in use: exit 1, one error line that names it, no stack trace", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const r = await runScript("chat.ts", ["--port", String(taken.addr.port)]);
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  assert.match(
    r.stderr,
    new RegExp(
      `^error: tcp 127\\.0\\.0\\.1:${taken.addr.port} is already in use`,
    ),
  );
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.ok(!hasStackTrace(r.stderr), r.stderr);
});

// --- basics/chat.ts ------------------------------------------------------------

Deno.test({
  name:
    "basics/chat.ts, run as its header says: each line goes to every other client after the sender's address, never back to it",
  ...SANITIZE,
  async fn() {
    // As a learner who copied the one file runs it: no deno.json to lean on.
    await using server = await startScript("basics/chat.ts", ["--port", "0"], {
      denoFlags: ["--no-config", "--allow-net=127.0.0.1"],
    });
    assert.equal(
      server.stdout.lines[0],
      `tcp listening on 127.0.0.1:${server.port}`,
    );
    const clients: ChatClient[] = [];
    try {
      for (let k = 1; k <= 3; k++) {
        const c = await ChatClient.connect(server.port);
        clients.push(c);
        await server.waitForLine(
          new RegExp(`^join ${escape(c.name)} \\(${k} here\\)$`),
        );
      }
      const [a, b, c] = clients;
      await a.send("hel"); // half a line: it waits for the rest
      await a.send("lo — all\nand more\n");
      await b.send("hi from b\n");
      for (const x of [b, c]) await x.waitForLine(`${a.name}: and more`);
      for (const x of [a, c]) await x.waitForLine(`${b.name}: hi from b`);
      assert.deepEqual(a.lines, [`${b.name}: hi from b`]);
      assert.deepEqual(b.lines, [
        `${a.name}: hello — all`,
        `${a.name}: and more`,
      ]);
      assert.deepEqual(
        c.lines.filter((l) => l.startsWith(a.name)),
        [`${a.name}: hello — all`, `${a.name}: and more`],
      );
      await a.leave();
      await server.waitForLine(
        new RegExp(`^leave ${escape(a.name)} \\(2 here\\)$`),
      );
    } finally {
      await closeAll(clients);
    }
  },
});

Deno.test({
  name:
    "basics/chat.ts: a client that never reads does not stop the room (8 MiB of lines still reach the one that reads)",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("basics/chat.ts", ["--port", "0"], {
      denoFlags: ["--no-config", "--allow-net=127.0.0.1"],
    });
    const a = await ChatClient.connect(server.port);
    const b = await ChatClient.connect(server.port);
    const stuck = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    try {
      await server.waitForLine(/^join \S+ \(3 here\)$/);
      // Twice what the kernel holds for stuck here (about 4 MiB): a room
      // that awaited each write in turn would stop halfway.
      const lines = await flood(a, b, 8 * 1024 * 1024);
      assert.equal(b.said().length, lines);
    } finally {
      stuck.close();
      await closeAll([a, b]);
    }
  },
});

Deno.test({
  name:
    "--quiet: no join or leave lines, the room works the same; the listening line and the summary still print",
  ...SANITIZE,
  async fn() {
    await using server = await startChat(["--quiet"]);
    const a = await ChatClient.join(server.port, 1);
    const b = await ChatClient.join(server.port, 2);
    try {
      await a.send("hush\n");
      await b.waitForLine(`${a.name}: hush`);
      await a.leave();
      await b.waitForLine(`* ${a.name} left (1 here)`);
      // b leaves too, before the stop: else the server may still count it
      // in the room and send it the shutdown line.
      await b.leave();
    } finally {
      await closeAll([a, b]);
    }
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0);
    assert.deepEqual(server.stdout.lines, [
      `tcp listening on 127.0.0.1:${server.port}`,
      `chat server stopped: 2 clients, 0 refused, 0 cut off, 1 lines, 5 bytes in, ${
        bytesOf([...a.lines, ...b.lines].map((l) => l + "\n").join(""))
      } bytes out`,
    ]);
  },
});
