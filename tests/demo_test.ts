/**
 * `deno task demo`: the one command a newcomer runs first. It must exit 0
 * and show one port number serving both protocols.
 */
import assert from "node:assert/strict";
import { hasStackTrace, runTask } from "./lib/spawn.ts";
import { runDemo, sequenceDiagram } from "../demo.ts";

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

/** The lines of the one ```mermaid block in `out`; fails when there is none. */
function mermaidBlock(out: string): string[] {
  const m = /^```mermaid\n([\s\S]*?)^```$/m.exec(out);
  assert.ok(m, `no \`\`\`mermaid block in:\n${out}`);
  return m[1].split("\n").filter((line) => line !== "");
}

/** The numbers in `lines` that match `re`'s first group, in order. */
function sizes(lines: string[], re: RegExp): number[] {
  return lines.flatMap((line) => {
    const m = re.exec(line);
    return m ? [Number(m[1])] : [];
  });
}

Deno.test("deno task demo --diagram prints a Mermaid sequence diagram with the real ports and read sizes", async () => {
  const { code, out, stderr: err } = await runTask("demo", ["--diagram"], {
    timeoutMs: 30_000,
  });
  assert.equal(code, 0, `stdout:\n${out}\nstderr:\n${err}`);
  assert.ok(!hasStackTrace(err), err);
  const block = mermaidBlock(out);
  assert.equal(block[0], "sequenceDiagram");

  // The lifelines are labelled with the ports the trace shows.
  const port = /^tcp server \| tcp listening on 127\.0\.0\.1:(\d+)$/m.exec(out)
    ?.[1];
  assert.ok(port, out);
  const clients = [
    ...out.matchAll(
      /^tcp server \| tcp open local \S+ remote 127\.0\.0\.1:(\d+) \(#(\d)/gm,
    ),
  ].map((m) => m[1]);
  const senders = [
    ...new Set(
      [...out.matchAll(
        /^udp server \| udp datagram local \S+ remote 127\.0\.0\.1:(\d+) /gm,
      )]
        .map((m) => m[1]),
    ),
  ];
  assert.equal(clients.length, 2, out);
  assert.equal(senders.length, 2, out);
  const participant = (id: string) =>
    block.find((line) => line.trim().startsWith(`participant ${id} as `));
  assert.match(
    participant("tcpServer") ?? "",
    new RegExp(`127\\.0\\.0\\.1:${port}$`),
  );
  assert.match(
    participant("udpServer") ?? "",
    new RegExp(`127\\.0\\.0\\.1:${port}$`),
  );
  assert.match(participant("tcpClient1") ?? "", new RegExp(`:${clients[0]}$`));
  assert.match(participant("tcpClient2") ?? "", new RegExp(`:${clients[1]}$`));
  assert.match(participant("udpSender1") ?? "", new RegExp(`:${senders[0]}$`));
  assert.match(participant("udpSender2") ?? "", new RegExp(`:${senders[1]}$`));

  // Every read the server traced is in the diagram, at its size, in order;
  // so is every write, and every datagram the UDP server received.
  const traced = (re: RegExp) => sizes(out.split("\n"), re);
  assert.deepEqual(
    sizes(block, /^\s*Note over tcpServer: read\(\) (\d+) bytes$/),
    traced(/^tcp server \| tcp #\d+ read (\d+) bytes$/),
  );
  assert.deepEqual(
    sizes(block, /^\s*tcpServer->>tcpClient\d: write\(\) (\d+) bytes$/),
    traced(/^tcp server \| tcp #\d+ wrote (\d+) bytes$/),
  );
  assert.deepEqual(
    sizes(block, /^\s*Note over udpServer: receive\(\) (\d+) bytes$/),
    traced(/^udp server \| udp datagram .* (\d+) bytes$/),
  );
  // The second client wrote 1 byte five times; the first 14 bytes once.
  assert.deepEqual(
    sizes(block, /^\s*tcpClient2->>tcpServer: write\(\) (\d+) bytes$/),
    [1, 1, 1, 1, 1],
  );
  assert.deepEqual(
    sizes(block, /^\s*tcpClient1->>tcpServer: write\(\) (\d+) bytes$/),
    [14],
  );
  // Each TCP connection ends with a FIN each way, the client's first.
  for (const client of ["tcpClient1", "tcpClient2"]) {
    const fin = block.findIndex((l) =>
      l.includes(`${client}->>tcpServer: FIN`)
    );
    const back = block.findIndex((l) =>
      l.includes(`tcpServer->>${client}: FIN`)
    );
    assert.ok(fin > 0 && back > fin, block.join("\n"));
  }
  // Mermaid reads ; and # specially: none may reach the diagram.
  assert.ok(block.every((line) => !/[;#]/.test(line)), block.join("\n"));
});

Deno.test({
  name:
    "sequenceDiagram draws what runDemo saw: every server read at its size, one receive per datagram",
  sanitizeResources: true,
  sanitizeOps: true,
  fn: async () => {
    const result = await runDemo(() => {});
    const block = sequenceDiagram(result);
    assert.equal(block[0], "```mermaid");
    assert.equal(block.at(-1), "```");
    const reads = sizes(
      block,
      /^\s*Note over tcpServer: read\(\) (\d+) bytes$/,
    );
    // Part 1 is one 14-byte message, read in one or more reads; part 4's
    // reads are the ones runDemo reported.
    assert.equal(
      reads.reduce((a, b) => a + b, 0),
      14 + 5,
    );
    assert.deepEqual(
      reads.slice(reads.length - result.stream.tcpReads.length),
      result.stream.tcpReads,
    );
    assert.deepEqual(
      sizes(block, /^\s*Note over udpServer: receive\(\) (\d+) bytes$/),
      [14, ...result.stream.udpReceived],
    );
    assert.deepEqual(
      sizes(block, /^\s*Note over udpSender2: receive\(\) (\d+) bytes$/),
      [1, 1, 1, 1, 1],
    );
    assert.ok(
      block.some((l) => l.endsWith(`tcp server<br/>127.0.0.1:${result.port}`)),
      block.join("\n"),
    );
  },
});

Deno.test("demo.ts refuses an unknown flag or an argument with exit 2 and the usage", async () => {
  for (const args of [["--bogus"], ["extra"], ["--diagram=yes"]]) {
    const { code, out, stderr: err } = await runTask("demo", args);
    assert.equal(code, 2, `${args}: ${err}`);
    assert.match(err, /^error: .+\n\nusage: /, `${args}: ${err}`);
    assert.ok(!hasStackTrace(err), err);
    assert.equal(out, "", "nothing runs");
  }
});
