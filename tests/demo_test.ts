/**
 * `deno task demo`: the one command a newcomer runs first. It must exit 0
 * and show one port number serving both protocols.
 */
import assert from "node:assert/strict";
import { hasStackTrace, runTask } from "./lib/spawn.ts";
import { runDemo } from "../demo.ts";

Deno.test("deno task demo exits 0 and its output names one port for both TCP and UDP", async () => {
  const { code, out, stderr: err } = await runTask("demo", [], {
    timeoutMs: 30_000,
  });
  assert.equal(code, 0, `stdout:\n${out}\nstderr:\n${err}`);
  assert.ok(!hasStackTrace(err), err);
  assert.doesNotMatch(err, /error:/);

  const port = (re: RegExp) => {
    const m = re.exec(out);
    assert.ok(m, `no line matching ${re} in:\n${out}`);
    return Number(m[1]);
  };
  const tcpListen = port(
    /^tcp server \| tcp listening on 127\.0\.0\.1:(\d+)$/m,
  );
  const udpListen = port(
    /^udp server \| udp listening on 127\.0\.0\.1:(\d+)$/m,
  );
  const tcpOpen = port(
    /^tcp server \| tcp open local 127\.0\.0\.1:(\d+) remote /m,
  );
  const udpDatagram = port(
    /^udp server \| udp datagram local 127\.0\.0\.1:(\d+) remote /m,
  );
  assert.ok(tcpListen > 0);
  assert.deepEqual([udpListen, tcpOpen, udpDatagram], [
    tcpListen,
    tcpListen,
    tcpListen,
  ]);
  // The bytes each way are shown, and both servers stopped.
  assert.match(out, /client -> server 14 bytes "hello over TCP"/);
  assert.match(out, /server -> client 14 bytes "hello over TCP"/);
  assert.match(out, /server -> client 1 datagram, 14 bytes "hello over UDP"/);
  // Part 4: five 1-byte datagrams are five datagrams at the server.
  assert.match(
    out,
    /udp sender \| 5 datagrams of 1 byte; the server received 5 datagrams \(1 \+ 1 \+ 1 \+ 1 \+ 1 bytes\)/,
  );
  assert.match(
    out,
    /tcp client \| 5 writes of 1 byte; the server read them in [1-5] reads?/,
  );
  assert.match(out, /tcp server stopped: 2 connections/);
  assert.match(
    out,
    /udp server stopped: 6 datagrams, 19 bytes in, 19 bytes out/,
  );
});

Deno.test({
  name:
    "runDemo in-process: both servers on one port, replies equal to requests, everything closed",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const lines: string[] = [];
    const result = await runDemo((l) => lines.push(l));
    assert.ok(result.port > 0);
    assert.equal(result.tcp.remote, `127.0.0.1:${result.port}`);
    assert.equal(result.udp.remote, `127.0.0.1:${result.port}`);
    assert.equal(result.tcp.bytesIn, result.tcp.bytesOut);
    assert.equal(result.udp.bytesIn, result.udp.bytesOut);
    // Stream vs datagram: the five bytes arrive whole over TCP in one to
    // five reads, and as exactly five 1-byte datagrams over UDP.
    assert.equal(result.stream.tcpWrites, 5);
    assert.ok(result.stream.tcpReads.length >= 1);
    assert.equal(result.stream.tcpReads.reduce((a, b) => a + b, 0), 5);
    assert.deepEqual(result.stream.udpReceived, [1, 1, 1, 1, 1]);
    assert.match(
      lines.at(-1) ?? "",
      /^udp server \| udp server stopped: 6 datagrams/,
    );
  },
});
