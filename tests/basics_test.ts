/**
 * basics/*.ts, the first listings, run exactly as their headers say, and as
 * a learner who copied one file out of the repo would run it: the header's
 * own `deno run` flags plus `--no-config` (so deno.json's unstable flag does
 * not help), `--port 0`, the port read from the listening line.
 */
import assert from "node:assert/strict";
import { randomBytes, sha256 } from "./lib/bytes.ts";
import { parseResponse } from "./lib/http.ts";
import { readAll, readExactly, writeAll } from "./lib/net.ts";
import {
  hasStackTrace,
  projectPath,
  runScript,
  type SpawnOptions,
  startScript,
  withTimeout,
} from "./lib/spawn.ts";
import { waitUntil } from "./lib/time.ts";
import { hasPython3, resetClients } from "./lib/tools.ts";

const LISTINGS = [
  "tcp_server",
  "tcp_client",
  "udp_echo",
  "udp_send",
  "http_hello",
  "sockets_on_port",
  "chat",
];

/** The grant each listing's header shows: the network, or (watching) cat. */
const GRANT: Record<string, string> = { sockets_on_port: "--allow-run=cat" };

/** Longest a first listing may be: one screen and a bit (http: the head). */
const MAX_LINES: Record<string, number> = { http_hello: 90 };

/** A listing's source text. */
function source(name: string): string {
  return Deno.readTextFileSync(projectPath(`basics/${name}.ts`));
}

/** The flags of the `deno run ... basics/NAME.ts` command in its header. */
function headerFlags(name: string): string[] {
  const src = source(name);
  const header = src.slice(0, src.indexOf("*/"));
  const m = new RegExp(`deno run ((?:--\\S+ )+)basics/${name}\\.ts`).exec(
    header,
  );
  if (!m) throw new Error(`basics/${name}.ts: no deno run line in its header`);
  return m[1].trim().split(" ");
}

/** Spawn options: the header's command, with no deno.json to lean on. */
function asCopied(name: string): SpawnOptions {
  return { denoFlags: ["--no-config", ...headerFlags(name)] };
}

/** Start a listing that listens, on a free port. */
function start(name: string) {
  return startScript(`basics/${name}.ts`, ["--port", "0"], asCopied(name));
}

/** Run a listing that ends by itself, against `port`. */
function run(name: string, port: number) {
  return runScript(`basics/${name}.ts`, ["--port", String(port)], {
    ...asCopied(name),
    timeoutMs: 20_000,
  });
}

/** Every byte value, then random bytes: what "byte-exact" is checked with. */
function binary(size: number): Uint8Array<ArrayBuffer> {
  const out = randomBytes(size);
  for (let b = 0; b < 256 && b < size; b++) out[b] = b;
  return out;
}

/** A port where nothing listens now (bound by us a moment ago). */
function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

const SANITIZE = { sanitizeResources: true, sanitizeOps: true };
const utf8 = new TextEncoder();
const text = new TextDecoder();

// --- the listings themselves -------------------------------------------------

Deno.test("each first listing stands alone: no import, its deno run line in the header, one screen long", () => {
  const files = [...Deno.readDirSync(projectPath("basics/"))]
    .map((e) => e.name).filter((n) => n.endsWith(".ts")).sort();
  assert.deepEqual(files, LISTINGS.map((n) => `${n}.ts`).sort());
  for (const name of LISTINGS) {
    const src = source(name);
    assert.doesNotMatch(src, /^\s*import\b/m, `basics/${name}.ts imports`);
    const flags = headerFlags(name);
    const grant = GRANT[name] ?? "--allow-net=127.0.0.1";
    assert.ok(flags.includes(grant), `${name}: ${flags}`);
    assert.equal(
      flags.includes("--unstable-net"),
      name.startsWith("udp_"),
      `${name}: --unstable-net is for UDP (a copied file has no deno.json)`,
    );
    const lines = src.split("\n").length - 1; // what wc -l counts
    const max = MAX_LINES[name] ?? 60;
    assert.ok(
      lines <= max,
      `basics/${name}.ts has ${lines} lines (max ${max})`,
    );
  }
});

// --- tcp_server.ts -----------------------------------------------------------

Deno.test("tcp_server echoes binary bytes exactly, keeps echoing after the client's half-close, and logs both ends on open and close", async () => {
  await using server = await start("tcp_server");
  assert.equal(server.host, "127.0.0.1");
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const me = `127.0.0.1:${conn.localAddr.port}`;
  const pair = `local 127.0.0.1:${server.port} remote ${me}`;
  assert.equal(await server.waitForLine(/^open /), `open ${pair}`);

  // First an exchange on the open connection...
  const first = binary(1000);
  await writeAll(conn, first);
  assert.deepEqual(await readExactly(conn, first.length), first);
  // ...then a big send, our FIN, and only then do we read: the server has
  // to go on sending after it has seen the end of our data.
  const rest = binary(1024 * 1024);
  const sending = writeAll(conn, rest).then(() => conn.closeWrite());
  const echoed = await readAll(conn);
  await sending;
  assert.equal(echoed.length, rest.length);
  assert.equal(await sha256(echoed), await sha256(rest));
  assert.equal(await server.waitForLine(/^close /), `close ${pair}`);
});

Deno.test("tcp_server serves two clients at once on one port, each with its own port", async () => {
  await using server = await start("tcp_server");
  using a = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  using b = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  // b is answered while a is still open and silent.
  await writeAll(b, utf8.encode("from b"));
  const echoB = await withTimeout(
    readExactly(b, 6),
    20_000,
    () => "b got no echo within 20 s while a was open and silent",
  );
  assert.equal(text.decode(echoB), "from b");
  await writeAll(a, utf8.encode("from a"));
  assert.equal(text.decode(await readExactly(a, 6)), "from a");
  for (const conn of [a, b]) {
    await server.waitForLine(
      new RegExp(
        `^open local 127\\.0\\.0\\.1:${server.port} remote 127\\.0\\.0\\.1:${conn.localAddr.port}$`,
      ),
    );
  }
});

Deno.test("tcp_server survives a client reset mid-transfer: the next client is echoed", async () => {
  await using server = await start("tcp_server");
  const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const rudePort = rude.localAddr.port;
  const sending = writeAll(rude, randomBytes(4 * 1024 * 1024)).catch(() => {});
  await readExactly(rude, 1000); // the echo is flowing
  // Close with unread bytes in our receive buffer: the kernel sends RST.
  rude.close();
  await sending;
  await server.waitForLine(
    new RegExp(`^close .* remote 127\\.0\\.0\\.1:${rudePort}$`),
  );
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const payload = binary(100_000);
  const [, back] = await Promise.all([
    writeAll(conn, payload).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  assert.equal(await sha256(back), await sha256(payload));
});

Deno.test({
  name:
    "tcp_server survives clients that reset before accept(): the next client is echoed" +
    (hasPython3() ? "" : " (skipped: needs python3 for SO_LINGER)"),
  ignore: !hasPython3(),
  fn: async () => {
    await using server = await start("tcp_server");
    // Frozen, the server cannot accept: the kernel queues each handshake and
    // the reset arrives in the queue; accept() then fails for each of them.
    server.child.kill("SIGSTOP");
    try {
      await resetClients(server.port, 5);
    } finally {
      server.child.kill("SIGCONT");
    }
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    await writeAll(conn, utf8.encode("after the resets"));
    const back = await withTimeout(
      readExactly(conn, 16),
      20_000,
      () =>
        `no echo after the resets; stdout:\n${server.stdout.text()}\nstderr:\n${server.stderr.text()}`,
    );
    assert.equal(text.decode(back), "after the resets");
  },
});

Deno.test("tcp_server on a port in use: exit 1, one error line, no stack trace", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const r = await runScript("basics/tcp_server.ts", [
    "--port",
    String(taken.addr.port),
  ], asCopied("tcp_server"));
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  assert.match(
    r.stderr,
    new RegExp(
      `^error: cannot listen on tcp 127\\.0\\.0\\.1:${taken.addr.port}: AddrInUse[^\\n]*\\n$`,
    ),
  );
  assert.ok(!hasStackTrace(r.stderr), r.stderr);
});

// --- tcp_client.ts -----------------------------------------------------------

Deno.test({
  name:
    "tcp_client sends 1234 (write() reports 4), half-closes, and prints every byte the server sends back",
  ...SANITIZE,
  fn: async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const client = run("tcp_client", listener.addr.port);
    const reply = binary(70_000);
    let clientPort = 0;
    const serve = async () => {
      using conn = await listener.accept();
      clientPort = conn.remoteAddr.port;
      // Read to the end before answering: without its half-close the client
      // and this server would wait for each other until the deadline.
      const got = await readAll(conn);
      assert.equal(text.decode(got), "1234");
      // The answer in two writes: the client must print both.
      await writeAll(conn, reply.subarray(0, 5));
      await writeAll(conn, reply.subarray(5));
    };
    const [r] = await Promise.all([client, serve()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256(r.stdout.slice()), await sha256(reply));
    assert.equal(r.stdout.length, reply.length);
    assert.match(r.stderr, /^write\(\) reported 4$/m);
    assert.match(
      r.stderr,
      new RegExp(
        `^connected local 127\\.0\\.0\\.1:${clientPort} remote 127\\.0\\.0\\.1:${listener.addr.port}$`,
        "m",
      ),
    );
    assert.ok(!hasStackTrace(r.stderr), r.stderr);
  },
});

Deno.test("tcp_client against basics/tcp_server.ts: 1234 comes back on stdout, and the server logs the client's port", async () => {
  await using server = await start("tcp_server");
  const r = await run("tcp_client", server.port);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "1234");
  const m = /^connected local 127\.0\.0\.1:(\d+) remote /m.exec(r.stderr);
  assert.ok(m, r.stderr);
  const pair = `local 127.0.0.1:${server.port} remote 127.0.0.1:${m[1]}`;
  await server.waitForLine(new RegExp(`^open ${pair.replaceAll(".", "\\.")}$`));
  await server.waitForLine(
    new RegExp(`^close ${pair.replaceAll(".", "\\.")}$`),
  );
});

Deno.test("tcp_client where nothing listens: exit 1, one error line, no stack trace", async () => {
  const port = freeTcpPort();
  const r = await run("tcp_client", port);
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  assert.match(
    r.stderr,
    new RegExp(
      `^error: cannot connect to tcp 127\\.0\\.0\\.1:${port}: ConnectionRefused[^\\n]*\\n$`,
    ),
  );
  assert.ok(!hasStackTrace(r.stderr), r.stderr);
});

// --- udp_echo.ts and udp_send.ts --------------------------------------------

/** Receive one datagram on `sock`, or fail after 20 s. */
function receive(sock: Deno.DatagramConn, what: string) {
  return withTimeout(
    sock.receive(new Uint8Array(65_536)),
    20_000,
    () => `no datagram ${what} within 20 s`,
  );
}

Deno.test({
  name:
    "udp_echo sends each datagram back whole and unchanged (0 B, 256 B, 65,507 B) and logs its sender and size",
  ...SANITIZE,
  fn: async () => {
    await using server = await start("udp_echo");
    assert.match(server.stdout.lines[0], /^udp listening on 127\.0\.0\.1:\d+$/);
    const sock = Deno.listenDatagram({
      transport: "udp",
      hostname: "127.0.0.1",
      port: 0,
    });
    try {
      const me = (sock.addr as Deno.NetAddr).port;
      const to = {
        transport: "udp",
        hostname: "127.0.0.1",
        port: server.port,
      } as const;
      // One at a time: UDP may drop a datagram, loopback does not when the
      // receiver keeps up, and each echo must be the one we sent.
      for (const size of [256, 0, 65_507]) {
        const payload = binary(size);
        await sock.send(payload, to);
        const [back, from] = await receive(
          sock,
          `back from udp_echo (${size} B)`,
        );
        assert.equal((from as Deno.NetAddr).port, server.port);
        assert.equal(back.length, size);
        assert.equal(await sha256(back), await sha256(payload));
        await server.waitForLine(
          new RegExp(`^datagram from 127\\.0\\.0\\.1:${me}, ${size} bytes$`),
        );
      }
    } finally {
      sock.close();
    }
  },
});

Deno.test("udp_send gets the reply from udp_echo: hello on stdout, who sent it on stderr", async () => {
  await using server = await start("udp_echo");
  const r = await run("udp_send", server.port);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "hello");
  assert.equal(r.stderr, `5 bytes from 127.0.0.1:${server.port}\n`);
  await server.waitForLine(/^datagram from 127\.0\.0\.1:\d+, 5 bytes$/);
});

Deno.test({
  name:
    "udp_send sends one datagram, hello, and prints whatever answer comes back, byte for byte",
  ...SANITIZE,
  fn: async () => {
    const sock = Deno.listenDatagram({
      transport: "udp",
      hostname: "127.0.0.1",
      port: 0,
    });
    try {
      const port = (sock.addr as Deno.NetAddr).port;
      const sender = run("udp_send", port);
      const [got, from] = await receive(sock, "from udp_send");
      assert.equal(text.decode(got), "hello");
      const answer = binary(1200);
      await sock.send(answer, from);
      const r = await sender;
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout, answer);
      assert.equal(r.stderr, `1200 bytes from 127.0.0.1:${port}\n`);
    } finally {
      sock.close();
    }
  },
});

Deno.test({
  name:
    "udp_send with no answer gives up: exit 1, one error line, no stack trace",
  ...SANITIZE,
  fn: async () => {
    // A socket that hears the datagram and never answers (so nothing else
    // can take the port meanwhile).
    const sock = Deno.listenDatagram({
      transport: "udp",
      hostname: "127.0.0.1",
      port: 0,
    });
    try {
      const port = (sock.addr as Deno.NetAddr).port;
      const sender = run("udp_send", port);
      const [got] = await receive(sock, "from udp_send");
      assert.equal(text.decode(got), "hello");
      const r = await sender;
      assert.equal(r.code, 1);
      assert.equal(r.out, "");
      assert.equal(
        r.stderr,
        `error: no answer from udp 127.0.0.1:${port} within 2 s\n`,
      );
    } finally {
      sock.close();
    }
  },
});

Deno.test("the UDP listings without --unstable-net: one error line naming the flag, no stack trace", async () => {
  for (const name of ["udp_echo", "udp_send"]) {
    const r = await runScript(`basics/${name}.ts`, ["--port", "9"], {
      denoFlags: ["--no-config", "--allow-net=127.0.0.1"],
      timeoutMs: 20_000,
    });
    assert.equal(r.code, 1, name);
    assert.equal(r.out, "");
    assert.match(r.stderr, /^error: UDP needs --unstable-net: [^\n]*\n$/, name);
    assert.ok(!hasStackTrace(r.stderr), r.stderr);
  }
});

// --- http_hello.ts -----------------------------------------------------------

Deno.test("http_hello answers fetch(): 200, text/plain, the exact Content-Length, a page with the socket pair and the request line", async () => {
  await using server = await start("http_hello");
  const res = await fetch(`http://127.0.0.1:${server.port}/some/path?x=1`);
  const body = new Uint8Array(await res.arrayBuffer());
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(res.headers.get("content-length"), String(body.length));
  const page = text.decode(body);
  assert.match(page, /^your end {3}127\.0\.0\.1:\d+$/m);
  assert.match(
    page,
    new RegExp(`^my end {5}127\\.0\\.0\\.1:${server.port}$`, "m"),
  );
  assert.match(page, /^you asked {2}GET \/some\/path\?x=1 HTTP\/1\.1$/m);
  await server.waitForLine(
    /^200 OK for GET \/some\/path\?x=1 HTTP\/1\.1 from 127\.0\.0\.1:\d+$/,
  );
});

/** Whether `ss` (iproute2) is there to show a socket's queues. */
function hasSs(): boolean {
  try {
    return new Deno.Command("ss", { args: ["-V"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * Whether the server's end of the connection from `clientPort` has taken
 * `total` bytes out of the kernel: ss shows them received and its
 * receive queue (Recv-Q) empty.
 */
async function serverHasRead(
  serverPort: number,
  clientPort: number,
  total: number,
): Promise<boolean> {
  const filter = `( sport = :${serverPort} and dport = :${clientPort} )`;
  const { stdout } = await new Deno.Command("ss", {
    args: ["-Htni", "state", "established", filter],
    stdin: "null",
  }).output();
  const out = text.decode(stdout);
  if (out.trim() === "") {
    throw new Error(
      `the server closed the connection while we waited for it to read ${total} bytes`,
    );
  }
  const recvQ = /^\s*(\d+)\s/.exec(out)?.[1];
  const received = /bytes_received:(\d+)/.exec(out)?.[1] ?? "0";
  return recvQ === "0" && Number(received) === total;
}

Deno.test({
  name:
    "http_hello reads a head that arrives in pieces (its CR LF CR LF split too), counts Content-Length in bytes (a UTF-8 path), and closes" +
    (hasSs() ? "" : " (pieces may merge: no ss to see the server read each)"),
  ...SANITIZE,
  fn: async () => {
    await using server = await start("http_hello");
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const head = utf8.encode(
      "GET /café/ü HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n",
    );
    const cuts = [0, 2, 9, head.length - 1, head.length];
    for (let k = 1; k < cuts.length; k++) {
      await writeAll(conn, head.subarray(cuts[k - 1], cuts[k]));
      // Each piece is read by the server before the next is sent, so the
      // server sees the head in four reads, the last one a lone "\n".
      if (hasSs() && k < cuts.length - 1) {
        await waitUntil(
          () => serverHasRead(server.port, conn.localAddr.port, cuts[k]),
          20_000,
          () =>
            `the server did not read the first ${
              cuts[k]
            } bytes; stdout:\n${server.stdout.text()}`,
        );
      }
    }
    // No half-close: the server must answer on the empty line alone, and
    // then close (Connection: close), which ends our read.
    const reply = await withTimeout(
      readAll(conn),
      20_000,
      () => "no complete reply within 20 s",
    );
    const res = parseResponse(reply);
    assert.equal(res.statusLine, "HTTP/1.1 200 OK");
    assert.equal(res.headers.get("connection"), "close");
    assert.equal(res.headers.get("content-length"), String(res.bodyBytes));
    assert.ok(res.bodyBytes > res.body.length, "é and ü are two bytes each");
    assert.equal(
      res.body,
      `your end   127.0.0.1:${conn.localAddr.port}\n` +
        `my end     127.0.0.1:${server.port}\n` +
        "you asked  GET /café/ü HTTP/1.1\n",
    );
  },
});

Deno.test({
  name:
    "http_hello answers 400 when the client ends before the head's empty line",
  ...SANITIZE,
  fn: async () => {
    await using server = await start("http_hello");
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    await writeAll(conn, utf8.encode("GET / HTTP/1.1\r\nHost: x\r\n"));
    await conn.closeWrite();
    const res = parseResponse(await readAll(conn));
    assert.equal(res.statusLine, "HTTP/1.1 400 Bad Request");
    assert.equal(res.headers.get("content-length"), String(res.bodyBytes));
    assert.match(res.body, /^you asked {2}GET \/ HTTP\/1\.1$/m);
  },
});

// --- sockets_on_port.ts --------------------------------------------------------

Deno.test("sockets_on_port lists the listening socket and both ends of a connection, as the kernel has them", async () => {
  await using server = await start("tcp_server");
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await server.waitForLine(/^open /);
  const me = `127.0.0.1:${conn.localAddr.port}`;
  const it = `127.0.0.1:${server.port}`;
  const r = await run("sockets_on_port", server.port);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.out.trim().split("\n").sort();
  assert.deepEqual(
    lines,
    [
      `ESTABLISHED local ${it} remote ${me} recv-q 0 send-q 0`,
      `ESTABLISHED local ${me} remote ${it} recv-q 0 send-q 0`,
      `LISTEN local ${it} remote 0.0.0.0:0 recv-q 0 send-q 0`,
    ].sort(),
  );
});
