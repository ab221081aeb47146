/**
 * TCP and UDP on the same port: server.ts and udp.ts run side by side on one
 * port number, each answers its own protocol, and each log names that port.
 */
import assert from "node:assert/strict";
import { hasIpv6Loopback } from "./lib/net.ts";
import {
  hasStackTrace,
  type RunningScript,
  runScript,
  startScript,
} from "./lib/spawn.ts";
import { exchange } from "../client.ts";
import { listenSharedPort } from "../demo.ts";
import { sendDatagram, serveUdp } from "../udp.ts";
import { serveTcp } from "../server.ts";

/**
 * Start `server.ts --port 0`, then `udp.ts` on the port it got. The OS only
 * promised that the TCP port was free, so if another program holds that UDP
 * port, stop and try again (rare).
 */
async function startBoth(): Promise<
  { tcp: RunningScript; udp: RunningScript }
> {
  for (let attempt = 1;; attempt++) {
    const tcp = await startScript("server.ts", ["--port", "0"]);
    try {
      const udp = await startScript("udp.ts", ["--port", String(tcp.port)]);
      return { tcp, udp };
    } catch (err) {
      await tcp.stop("SIGKILL");
      if (attempt >= 5 || !/in use/.test(String(err))) throw err;
    }
  }
}

Deno.test("server.ts and udp.ts on the same port both answer, each its own protocol, and both logs name that port", async () => {
  const both = await startBoth();
  await using tcp = both.tcp;
  await using udp = both.udp;
  const port = tcp.port;
  assert.equal(udp.port, port);
  assert.equal(tcp.stdout.lines[0], `tcp listening on 127.0.0.1:${port}`);
  assert.equal(udp.stdout.lines[0], `udp listening on 127.0.0.1:${port}`);

  // A client for each, as a user would type them.
  const t = await runScript("client.ts", [
    "--port",
    String(port),
    "hello",
    "tcp",
  ]);
  assert.equal(t.code, 0, t.stderr);
  assert.equal(t.out, "hello tcp");
  const u = await runScript("udp.ts", [
    "send",
    "--port",
    String(port),
    "hello",
    "udp!",
  ]);
  assert.equal(u.code, 0, u.stderr);
  assert.equal(u.out, "hello udp!");

  // The TCP connection log and the UDP datagram log name the same local port.
  const closed = await tcp.waitForLine(/^tcp close /);
  assert.match(
    closed,
    new RegExp(
      `^tcp close local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:\\d+ \\(#1\\) in 9 bytes, out 9 bytes$`,
    ),
  );
  const datagram = await udp.waitForLine(/^udp datagram /);
  assert.match(
    datagram,
    new RegExp(
      `^udp datagram local 127\\.0\\.0\\.1:${port} remote 127\\.0\\.0\\.1:\\d+ 10 bytes$`,
    ),
  );

  // Each server saw only its own protocol: one connection, one datagram.
  await tcp.stop("SIGTERM");
  await udp.stop("SIGTERM");
  assert.equal(
    tcp.stdout.lines.filter((l) => l.startsWith("tcp open ")).length,
    1,
  );
  assert.equal(
    udp.stdout.lines.filter((l) => l.startsWith("udp datagram ")).length,
    1,
  );
  assert.match(
    tcp.stdout.lines.at(-1) ?? "",
    /^tcp server stopped: 1 connections/,
  );
  assert.equal(
    udp.stdout.lines.at(-1),
    "udp server stopped: 1 datagrams, 10 bytes in, 10 bytes out",
  );
});

Deno.test("with TCP and UDP both on a port, a second server.ts and a second udp.ts there each fail: address in use", async () => {
  const both = await startBoth();
  await using tcp = both.tcp;
  await using udp = both.udp;
  assert.equal(udp.port, tcp.port);
  const port = String(tcp.port);
  for (const script of ["server.ts", "udp.ts"]) {
    const r = await runScript(script, ["--port", port]);
    assert.equal(r.code, 1, `${script}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `^error: .*${
          script === "udp.ts" ? "udp" : "tcp"
        } 127\\.0\\.0\\.1:${port}.*in use`,
      ),
    );
    assert.ok(!hasStackTrace(r.stderr));
  }
  // And the two that hold the port still answer.
  const u = await runScript("udp.ts", ["send", "--port", port, "still here"]);
  assert.equal(u.out, "still here");
  const t = await runScript("client.ts", ["--port", port, "still here"]);
  assert.equal(t.out, "still here");
});

for (const hostname of ["127.0.0.1", "::1"]) {
  const ipv6Missing = hostname === "::1" && !hasIpv6Loopback();
  Deno.test({
    name:
      `in-process: one TCP listener and one UDP socket on the same ${hostname} port answer their own protocol` +
      (ipv6Missing ? " (skipped: no IPv6 loopback ::1)" : ""),
    ignore: ipv6Missing,
    sanitizeResources: true,
    sanitizeOps: true,
    fn: async () => {
      const { tcp, udp, port } = listenSharedPort(hostname);
      assert.equal(tcp.addr.port, port);
      assert.equal((udp.addr as Deno.NetAddr).port, port);
      const stop = new AbortController();
      const lines: string[] = [];
      const tcpServer = serveTcp(tcp, {
        signal: stop.signal,
        log: (l) => lines.push(l),
      });
      const udpServer = serveUdp(udp, {
        signal: stop.signal,
        log: (l) => lines.push(l),
      });
      try {
        const payload = new TextEncoder().encode("same port");
        const t = await exchange(hostname, port, payload);
        assert.deepEqual(t.reply, payload);
        assert.equal(t.remote.port, port);
        assert.equal(t.remote.transport, "tcp");
        const u = await sendDatagram(hostname, port, payload, 5000);
        assert.deepEqual(u.reply, payload);
        assert.equal(u.remote.port, port);
        assert.equal(u.remote.transport, "udp");
      } finally {
        stop.abort();
      }
      const [ts, us] = await Promise.all([tcpServer, udpServer]);
      assert.equal(ts.connections, 1);
      assert.equal(ts.bytesIn, 9);
      assert.deepEqual(us, {
        datagrams: 1,
        bytesIn: 9,
        bytesOut: 9,
        forbidden: 0,
        failed: 0,
      });
    },
  });
}
