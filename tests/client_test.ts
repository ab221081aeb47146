/**
 * client.ts, run as a user runs it, against a real server.ts.
 */
import assert from "node:assert/strict";
import { exchange, parseClientArgs } from "../client.ts";
import { listenTcp, serveTcp } from "../server.ts";
import { randomBytes, sha256 } from "./lib/bytes.ts";
import { readAll, readExactly, writeAll } from "./lib/net.ts";
import { hasStackTrace, runScript, startScript } from "./lib/spawn.ts";

/** A port where nothing listens: bind a free one, then let it go. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("client --help prints usage and exits 0", async () => {
  const r = await runScript("client.ts", ["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /^usage: deno run --allow-net=127\.0\.0\.1 client\.ts/);
  assert.equal(r.stderr, "");
});

for (
  const [args, reason] of [
    [["--bogus"], /unknown flag "--bogus"/],
    [["--port", "70000"], /--port must be a whole number from 0 to 65535/],
    [["--port", "-1"], /--port must be a whole number from 0 to 65535/],
    [["--port", "abc"], /--port must be a whole number from 0 to 65535/],
    [["--http", "hello"], /--http sends its own request/],
    [["--path", "/x"], /--path goes with --http/],
    [["--port", "0", "hi"], /a client must name the server's port/],
  ] as const
) {
  Deno.test(`client ${args.join(" ")} is a usage error: exit 2 and a one-line reason`, async () => {
    const r = await runScript("client.ts", [...args]);
    assert.equal(r.code, 2);
    assert.equal(r.out, "");
    assert.match(r.stderr.split("\n")[0], reason);
    assert.match(r.stderr, /\n\nusage: /);
    assert.ok(!hasStackTrace(r.stderr));
  });
}

Deno.test("MESSAGE words are joined by single spaces and sent exactly, no newline added", () => {
  const options = parseClientArgs(["--port", "9", "hello", "big", "world"]);
  assert.notEqual(options, "help");
  if (options !== "help") assert.equal(options.message, "hello big world");
  const dashes = parseClientArgs(["--", "--not-a-flag", "x"]);
  if (dashes !== "help") assert.equal(dashes.message, "--not-a-flag x");
});

Deno.test("MESSAGE mode: the server's echo is on stdout, 'sent N bytes' on stderr, exit 0", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const r = await runScript("client.ts", [
    "--port",
    String(server.port),
    "héllo",
    "wörld",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "héllo wörld");
  assert.equal(r.stderr, "sent 13 bytes\n");
  await server.waitForLine(/^tcp close .* in 13 bytes, out 13 bytes$/);
});

Deno.test("netcat mode: 1 MiB of random binary through stdin comes back byte-exact on stdout", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const payload = randomBytes(1024 * 1024);
  const r = await runScript("client.ts", ["--port", String(server.port)], {
    stdin: payload,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, payload.length);
  assert.equal(
    await sha256(r.stdout as Uint8Array<ArrayBuffer>),
    await sha256(payload),
  );
  assert.equal(r.stderr, "");
});

Deno.test("netcat mode with empty stdin half-closes at once and exits 0", async () => {
  await using server = await startScript("server.ts", ["--port", "0"]);
  const r = await runScript("client.ts", ["--port", String(server.port)], {
    stdin: new Uint8Array(0),
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 0);
});

Deno.test("connection refused: exit 1, one 'error:' line naming the address, no stack trace", async () => {
  const port = freePort();
  const r = await runScript("client.ts", ["--port", String(port), "hello"]);
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(
    lines[0],
    new RegExp(`^error: connection refused by tcp 127\\.0\\.0\\.1:${port}: `),
  );
  assert.ok(!hasStackTrace(r.stderr));
});

Deno.test("a name that does not resolve: exit 1 and a plain 'error:' line", async () => {
  const r = await runScript("client.ts", [
    "--hostname",
    "no-such-host.invalid",
    "--port",
    "80",
    "x",
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: cannot connect to tcp no-such-host\.invalid:80: the name "no-such-host\.invalid" does not resolve/,
  );
  assert.ok(!hasStackTrace(r.stderr));
});

Deno.test("connecting outside the --allow-net grant: exit 1, the error names the grant to add", async () => {
  const r = await runScript("client.ts", [
    "--hostname",
    "127.0.0.2",
    "--port",
    "80",
    "x",
  ], {
    denoFlags: ["--allow-net=127.0.0.1"],
  });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: Deno has no permission to connect to tcp 127\.0\.0\.2:80; run again with --allow-net=127\.0\.0\.2\n$/,
  );
});

Deno.test({
  name:
    "in-process: exchange() sends, half-closes and collects the echo without leaking",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const listener = listenTcp({ hostname: "127.0.0.1", port: 0 });
    const stop = new AbortController();
    const serving = serveTcp(listener, { signal: stop.signal, log: () => {} });
    const payload = randomBytes(3 * 1024 * 1024);
    const { reply, local, remote } = await exchange(
      "127.0.0.1",
      listener.addr.port,
      payload,
    );
    assert.equal(
      await sha256(reply as Uint8Array<ArrayBuffer>),
      await sha256(payload),
    );
    assert.equal(remote.port, listener.addr.port);
    assert.notEqual(local.port, remote.port);
    stop.abort();
    await serving;
  },
});

Deno.test({
  name:
    "netcat mode keeps sending stdin after the server half-closes first, like nc -N",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    // A server that says its piece, half-closes, and then counts what it
    // still receives: nothing of stdin may be lost because it spoke first.
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const payload = randomBytes(5 * 1024 * 1024);
    const served = (async () => {
      using conn = await listener.accept();
      await writeAll(conn, new TextEncoder().encode("banner\n"));
      await conn.closeWrite();
      return await readAll(conn);
    })();
    const r = await runScript("client.ts", [
      "--port",
      String(listener.addr.port),
    ], {
      stdin: payload,
    });
    const received = await served;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "banner\n");
    assert.equal(received.length, payload.length);
    assert.equal(await sha256(received), await sha256(payload));
  },
});

Deno.test({
  name:
    "netcat mode against a server that resets mid-upload: no stack trace, at most one error line",
  sanitizeResources: true,
  sanitizeOps: true,
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
