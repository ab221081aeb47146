/**
 * TCP in time, measured: Nagle's algorithm meeting a delayed ACK, as a
 * ratio in one run (a line in two writes to server.ts --lines, with and
 * without client.ts --nodelay); the same on the server's side of an echo;
 * http.ts, one exchange per connection, where a request in two writes is
 * never held; and the two Deno behaviours the README leans on, seen with
 * strace: Deno.serve sets TCP_NODELAY, and conn.close() sends a FIN
 * (shutdown) before it closes, so a reset follows an end of stream.
 * Figures print as `timing: ...` lines.
 */
import assert from "node:assert/strict";
import { roundsOf } from "../lib/rounds.ts";
import { figures } from "../lib/figures.ts";
import { readAll, writeAll } from "../lib/net.ts";
import { runScript, startScript } from "../lib/spawn.ts";
import { runsOk, runTool } from "../lib/tools.ts";

/** In-process sockets in these tests must all be closed by the end. */
const SANITIZE = { sanitizeResources: true, sanitizeOps: true };

const figure = figures("timing");
const encode = (text: string) => new TextEncoder().encode(text);

/** `client.ts --port PORT --rounds K ...ARGS MESSAGE`: its --rounds line. */
async function rounds(port: number, k: number, args: string[], msg: string) {
  const r = await runScript("client.ts", [
    "--port",
    `${port}`,
    "--rounds",
    `${k}`,
    ...args,
    msg,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, msg.repeat(k), "every answer, byte for byte");
  return roundsOf(r.stderr);
}

Deno.test({
  name:
    "Nagle's stall: a line in two writes to server.ts --lines waits for a delayed ACK every round (median >= 30 ms), 10 times and more as long as with client.ts --nodelay, in one run; in one write it never waits",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("server.ts", [
      "--port",
      "0",
      "--lines",
      "--quiet",
    ]);
    const msg = "hello world\n";
    const nagle = await rounds(server.port, 20, ["--chunk", "6"], msg);
    const nodelay = await rounds(server.port, 20, [
      "--chunk",
      "6",
      "--nodelay",
    ], msg);
    const whole = await rounds(server.port, 20, [], msg);
    figure(`two writes, Nagle on: ${nagle.line}`);
    figure(`two writes, --nodelay: ${nodelay.line}`);
    figure(`one write, Nagle on: ${whole.line}`);
    figure(
      `ratio of the medians, Nagle on / --nodelay: ${
        (nagle.median / nodelay.median).toFixed(0)
      }`,
    );
    assert.ok(nagle.median >= 30, nagle.line);
    assert.ok(
      nagle.median >= 10 * nodelay.median,
      `${nagle.line}\n${nodelay.line}`,
    );
    assert.ok(whole.median < nagle.median / 10, whole.line);
  },
});

Deno.test({
  name:
    "the echo's side of Nagle: with client.ts --nodelay a message in two writes may reach server.ts in two reads, and its second echo waits for the client's delayed ACK unless server.ts --nodelay (figures only: how often is a race)",
  ...SANITIZE,
  async fn() {
    for (const flags of [[], ["--nodelay"]]) {
      await using server = await startScript("server.ts", [
        "--port",
        "0",
        "--quiet",
        ...flags,
      ]);
      const t = await rounds(server.port, 200, [
        "--chunk",
        "6",
        "--nodelay",
      ], "hello-world-12");
      figure(`echo, server.ts ${flags.join(" ") || "(Nagle on)"}: ${t.line}`);
    }
  },
});

Deno.test({
  name:
    "http.ts: a request head in two writes on a new connection is never held (the kernel ACKs a new connection's first segments at once), so one reply in one write needs no TCP_NODELAY: 20 connections, median under 20 ms",
  ...SANITIZE,
  async fn() {
    await using server = await startScript("http.ts", [
      "--port",
      "0",
      "--quiet",
    ], { denoFlags: ["--allow-net=127.0.0.1"] });
    const head = encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      using conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      const started = performance.now();
      await writeAll(conn, head.subarray(0, 16)); // the request line
      await writeAll(conn, head.subarray(16)); // the headers
      const reply = await readAll(conn); // one write, then its FIN
      times.push(performance.now() - started);
      assert.match(new TextDecoder().decode(reply), /^HTTP\/1\.1 200 OK/);
    }
    times.sort((a, b) => a - b);
    const ms = (t: number) => t.toFixed(2);
    figure(
      `http.ts, request in two writes, 20 new connections: median ${
        ms(times[10])
      } ms, slowest ${ms(times[19])} ms`,
    );
    assert.ok(times[10] < 20, `median ${ms(times[10])} ms`);
  },
});

const HAS_STRACE = runsOk("strace", ["-V"]);

/** Run `deno eval CODE` under strace; the lines of the syscalls in `trace`. */
async function straced(code: string, trace: string): Promise<string[]> {
  const r = await runTool("strace", [
    "-f",
    "-qq",
    "-e",
    `trace=${trace}`,
    Deno.execPath(),
    "eval",
    code,
  ]);
  assert.equal(r.code, 0, r.err);
  return r.err.split("\n").filter((l) =>
    /\b(setsockopt|shutdown|close)\(/.test(l)
  );
}

Deno.test({
  name:
    "Deno behaviours the timing chapter leans on (strace): Deno.serve sets TCP_NODELAY on each connection, Deno.connect does not; conn.close() sends shutdown(SHUT_WR), a FIN, before close(), so a peer reads the end before any reset" +
    (HAS_STRACE ? "" : " (skipped: no strace)"),
  ignore: !HAS_STRACE,
  async fn() {
    const serve = await straced(
      `const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
      const r = await fetch("http://127.0.0.1:" + s.addr.port + "/"); await r.text(); await s.shutdown();`,
      "setsockopt",
    );
    assert.ok(
      serve.some((l) => /TCP_NODELAY, \[1\]/.test(l)),
      `no TCP_NODELAY in:\n${serve.join("\n")}`,
    );
    const plain = await straced(
      `const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const c = await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port });
      const s = await l.accept();
      await c.write(new Uint8Array(3)); // s never reads them
      s.close(); c.close(); l.close();`,
      "setsockopt,shutdown,close",
    );
    assert.ok(
      !plain.some((l) => /TCP_NODELAY/.test(l)),
      `TCP_NODELAY without asking:\n${plain.join("\n")}`,
    );
    // s.close() is a shutdown (our FIN), then a close of that descriptor.
    const calls = plain.map((l) => l.replace(/^\[pid +\d+\] /, ""));
    const shut = calls.findIndex((l) => /^shutdown\(\d+, SHUT_WR\)/.test(l));
    assert.ok(shut >= 0, `no shutdown(SHUT_WR) in:\n${calls.join("\n")}`);
    const fd = /^shutdown\((\d+)/.exec(calls[shut])![1];
    const closed = calls.slice(shut + 1).find((l) =>
      l.startsWith(`close(${fd})`)
    );
    assert.ok(closed, `no close(${fd}) after:\n${calls.join("\n")}`);
    const squeeze = (l: string) => l.replace(/\s+/g, " ");
    figure(
      `Deno's conn.close(): ${squeeze(calls[shut])}, then ${squeeze(closed)}`,
    );
  },
});
