/**
 * watch.ts under a UDP flood: a udp.ts server that is stopped (SIGSTOP)
 * cannot read, its receive buffer fills, and the kernel drops the rest:
 * watch.ts shows the socket's drops and the UdpRcvbufErrors counter rise.
 */
import assert from "node:assert/strict";
import { commandFor, spawnChild, startScript } from "../lib/spawn.ts";

const DATAGRAMS = 3000; // of 1 KiB: over ten times a default receive buffer

Deno.test({
  name:
    "watch.ts shows a stopped UDP server's receive buffer overflow: socket drops and UdpRcvbufErrors",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    await using server = await startScript("udp.ts", [
      "--port",
      "0",
      "--quiet",
    ]);
    await using watch = spawnChild(
      commandFor(
        "watch.ts",
        ["--port", String(server.port), "--interval", "10"],
        { denoFlags: ["--allow-run=cat"] },
        { stdin: "null" },
      ),
      "watch.ts",
    );
    await watch.waitForLine(/UNCONN/, 20_000);
    Deno.kill(server.pid, "SIGSTOP");
    try {
      const sender = Deno.listenDatagram({
        transport: "udp",
        hostname: "127.0.0.1",
        port: 0,
      });
      try {
        const payload = new Uint8Array(1024);
        const to: Deno.NetAddr = {
          transport: "udp",
          hostname: "127.0.0.1",
          port: server.port,
        };
        for (let i = 0; i < DATAGRAMS; i++) await sender.send(payload, to);
      } finally {
        sender.close();
      }
      await watch.waitForLine(/ UNCONN recv-q \d+ send-q 0 drops \d+$/, 20_000);
      await watch.waitForLine(
        /counter UdpRcvbufErrors \+\d+ \(UDP datagrams dropped: a receive buffer was full\)$/,
        20_000,
      );
    } finally {
      Deno.kill(server.pid, "SIGCONT");
    }
    assert.equal((await watch.stop("SIGINT")).code, 0);
  },
});
