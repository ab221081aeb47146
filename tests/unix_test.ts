/**
 * server.ts and client.ts on a Unix socket (`--unix PATH`), run as a user
 * runs them, with the narrowest grants: the echo byte-exact with many
 * clients and half-close, outside clients (nc -U, Python's AF_UNIX), the
 * log naming the path, a stale socket file replaced, a live one or a file
 * that is not a socket left alone, bad paths and permissions as one
 * `error:` line, and the socket file gone after SIGTERM.
 */
import assert from "node:assert/strict";
import {
  assertOneErrorLine,
  runScript,
  spawnChild,
  withTimeout,
} from "./lib/spawn.ts";
import { hasPython3, runsOk, runTool } from "./lib/tools.ts";
import {
  asNobody,
  fileType,
  scratchDir,
  sh,
  startUnixServer,
  unixGrants,
} from "./lib/unix.ts";
import { commandFor } from "./lib/spawn.ts";

/** client.ts on the socket `path`, with its grants. */
function client(
  path: string,
  args: string[],
  options: { stdin?: Uint8Array; wrapper?: string[] } = {},
) {
  return runScript("client.ts", ["--unix", path, ...args], {
    denoFlags: unixGrants(path),
    ...options,
  });
}

Deno.test("--unix: 20 clients at once, each sending 200 KB in uneven writes and half-closing, get exactly their bytes back", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  await using server = await startUnixServer(path, ["--quiet"]);
  const r = await runScript(
    "tests/lib/unix_clients.ts",
    [path, "20", "200000"],
    { denoFlags: unixGrants(path) },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "ok 20\n");
  assert.equal((await server.stop("SIGTERM")).code, 0);
  assert.match(
    server.stdout.text(),
    /^unix server stopped: 20 connections, 0 refused, 4000000 bytes in, 4000000 bytes out$/m,
  );
});

Deno.test("--unix: log lines name the path where the address:port was, and the client's end as (unnamed); --trace says unix #N", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  await using server = await startUnixServer(path, ["--trace"]);
  const r = await client(path, ["hello"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "hello");
  assert.equal(r.stderr, "sent 5 bytes\n");
  await server.waitForLine(/^unix close /);
  const out = server.stdout.text();
  assert.match(
    out,
    new RegExp(
      `^unix open local ${path} remote \\(unnamed\\) \\(#1, 1 open\\)$`,
      "m",
    ),
  );
  assert.match(out, /^unix #1 read 5 bytes$/m);
  assert.match(out, /^unix #1 wrote 5 bytes$/m);
  assert.match(
    out,
    new RegExp(
      `^unix close local ${path} remote \\(unnamed\\) \\(#1\\) in 5 bytes, out 5 bytes$`,
      "m",
    ),
  );
});

Deno.test("--unix: client.ts netcat mode copies 1 MiB of stdin there and back exactly", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  await using _server = await startUnixServer(path, ["--quiet"]);
  const payload = crypto.getRandomValues(new Uint8Array(65536));
  const big = new Uint8Array(1 << 20);
  for (let i = 0; i < 16; i++) big.set(payload, i * 65536);
  const r = await client(path, [], { stdin: big });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout, big);
  assert.equal(r.stderr, "");
});

Deno.test({
  name:
    "--unix: outside clients, nc -U and Python's AF_UNIX socket, get their echo",
  ignore: !runsOk("nc", ["-h"]) && !hasPython3(),
  async fn(t) {
    await using dir = await scratchDir();
    const path = `${dir.path}/echo.sock`;
    await using _server = await startUnixServer(path, ["--quiet"]);
    await t.step({
      name: "nc -U -N",
      ignore: !runsOk("nc", ["-h"]),
      async fn() {
        const nc = spawnChild(
          new Deno.Command("nc", {
            args: ["-U", "-N", path],
            stdin: "piped",
            stdout: "piped",
            stderr: "piped",
          }),
          "nc -U",
          { stdin: true },
        );
        await nc.write("hello from nc\n");
        await nc.closeStdin(); // -N: half-close at the end of stdin
        assert.equal((await nc.status).code, 0, nc.stderr.text());
        await nc.stdout.done;
        assert.equal(nc.stdout.text(), "hello from nc");
      },
    });
    await t.step({
      name: "python3 AF_UNIX, half-closing",
      ignore: !hasPython3(),
      async fn() {
        const r = await runTool("python3", [
          "-c",
          `import socket
s = socket.socket(socket.AF_UNIX)
s.connect(${JSON.stringify(path)})
s.sendall(b"hello from python")
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(4096): data += chunk
print(data.decode(), end="")`,
        ]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, "hello from python");
      },
    });
  },
});

Deno.test("--unix: SIGTERM stops the server with a summary and removes its socket file", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  const server = await startUnixServer(path);
  assert.equal(fileType(path), "socket");
  const status = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr.text());
  assert.match(server.stdout.text(), /^unix server stopped: 0 connections/m);
  assert.equal(fileType(path), "none");
});

Deno.test("--unix: a stale socket file (its server was killed) is replaced with a note, and the new server echoes", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  const killed = await startUnixServer(path);
  await killed.stop("SIGKILL"); // no clean-up: the file stays
  assert.equal(fileType(path), "socket");
  await using server = await startUnixServer(path);
  await server.stderr.waitFor(/^note: /);
  assert.equal(
    server.stderr.text(),
    `note: removed stale socket file ${path} (nobody listened)`,
  );
  const r = await client(path, ["still", "here"]);
  assert.equal(r.out, "still here", r.stderr);
});

Deno.test("--unix: a socket someone listens on is never removed: the second server fails 'in use', the first still echoes", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  await using _first = await startUnixServer(path, ["--quiet"]);
  const second = await runScript("server.ts", ["--unix", path], {
    denoFlags: unixGrants(path),
  });
  assert.equal(second.code, 1);
  assertOneErrorLine(
    second.stderr,
    new RegExp(
      `^error: cannot listen on unix ${path}: it is in use: a program is bound to it`,
    ),
  );
  assert.equal(second.out, "");
  const r = await client(path, ["first"]);
  assert.equal(r.out, "first", r.stderr);
});

Deno.test("--unix: a regular file or a folder in the way is named and left alone, exit 1", async () => {
  await using dir = await scratchDir();
  const file = `${dir.path}/notes.txt`;
  await sh("sh", "-c", `printf precious > '${file}'`);
  for (const [path, kind] of [[file, "a file"], [dir.path, "a directory"]]) {
    const r = await runScript("server.ts", ["--unix", path], {
      denoFlags: unixGrants(path),
    });
    assert.equal(r.code, 1, r.stderr);
    assertOneErrorLine(
      r.stderr,
      new RegExp(
        `^error: cannot listen on unix ${path}: ${kind} is there, not a socket`,
      ),
    );
  }
  assert.equal(await Deno.readTextFile(file), "precious");
  assert.equal(fileType(dir.path), "directory");
});

Deno.test("--unix: a path over 107 bytes is one error line, for the server and the client", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/${"a".repeat(108 - dir.path.length)}.sock`;
  assert.ok(new TextEncoder().encode(path).length > 107);
  const server = await runScript("server.ts", ["--unix", path], {
    denoFlags: unixGrants(path),
  });
  assert.equal(server.code, 1);
  assertOneErrorLine(
    server.stderr,
    /^error: cannot listen on unix .*: the path is \d+ bytes, and a Unix socket's holds at most 107 on Linux/,
  );
  const c = await client(path, ["hi"]);
  assert.equal(c.code, 1);
  assertOneErrorLine(
    c.stderr,
    /^error: cannot connect to unix .*: the path is \d+ bytes, and a Unix socket's holds at most 107/,
  );
});

Deno.test("--unix without the grants: one error line naming all three, with the absolute path for unix:", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  for (const script of ["server.ts", "client.ts"]) {
    const r = await runScript(
      script,
      ["--unix", path, "hi"].slice(0, script === "server.ts" ? 2 : 3),
      {
        denoFlags: ["--no-prompt", "--allow-net=127.0.0.1"],
      },
    );
    assert.equal(r.code, 1, r.stderr);
    assertOneErrorLine(
      r.stderr,
      new RegExp(
        `Deno has no permission for it; run again with --allow-read=${path} --allow-write=${path} --allow-net=unix:${path}$`,
      ),
    );
  }
});

Deno.test("client.ts --unix: no file there, or a stale socket file, is refused in words that say which", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  const none = await client(path, ["hi"]);
  assert.equal(none.code, 1);
  assertOneErrorLine(none.stderr, /no such file: no server listens there/);
  const killed = await startUnixServer(path);
  await killed.stop("SIGKILL");
  const stale = await client(path, ["hi"]);
  assert.equal(stale.code, 1);
  assertOneErrorLine(
    stale.stderr,
    /^error: connection refused by unix .*: nobody listens on it \(a stale socket file/,
  );
});

Deno.test({
  name:
    "--unix permissions: nobody may not connect to root's socket file of mode 0600, nor create one in a folder it cannot write",
  ignore: asNobody() === undefined,
  async fn() {
    const nobody = asNobody()!;
    await using dir = await scratchDir();
    await sh("chmod", "755", dir.path); // nobody may look in, not write
    const path = `${dir.path}/echo.sock`;
    await using _server = await startUnixServer(path, ["--quiet"]);
    await sh("chmod", "600", path);
    const denied = await client(path, ["hi"], { wrapper: nobody });
    assert.equal(denied.code, 1, denied.stderr);
    assertOneErrorLine(
      denied.stderr,
      new RegExp(
        `^error: permission denied connecting to unix ${path}: this user may not write to the socket file`,
      ),
    );
    // root may (the mode is its own), and the server never noticed.
    assert.equal((await client(path, ["root"])).out, "root");
    const other = `${dir.path}/nobody.sock`;
    const create = await runScript("server.ts", ["--unix", other], {
      denoFlags: unixGrants(other),
      wrapper: nobody,
    });
    assert.equal(create.code, 1, create.stderr);
    assertOneErrorLine(
      create.stderr,
      new RegExp(`^error: cannot listen on unix ${other}: permission denied`),
    );
  },
});

Deno.test("--unix: --max-connections and --idle-timeout behave as over TCP", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  await using server = await startUnixServer(path, [
    "--max-connections",
    "1",
    "--idle-timeout",
    "0.5",
  ]);
  // The first client holds its slot (stdin open, nothing sent) ...
  const held = spawnChild(
    commandFor("client.ts", ["--unix", path], {
      denoFlags: unixGrants(path),
    }, { stdin: "piped" }),
    "held client",
    { stdin: true },
  );
  await server.waitForLine(/^unix open /);
  // ... so the second is refused at once ...
  await client(path, ["second"]);
  await server.waitForLine(
    /^unix refused local .* remote \(unnamed\): 1 open, --max-connections 1$/,
  );
  // ... and the first, idle, is closed by the server; its client, once its
  // stdin ends too, exits 0.
  await server.waitForLine(/^unix close .*: idle for 0\.5 s$/);
  await held.closeStdin();
  assert.equal((await held.status).code, 0, held.stderr.text());
  await held.stop();
});

Deno.test({
  name:
    "client.ts --http --unix sends Host: localhost and prints the response (a Python AF_UNIX web server)",
  ignore: !hasPython3(),
  async fn() {
    await using dir = await scratchDir();
    const path = `${dir.path}/web.sock`;
    const py = spawnChild(
      new Deno.Command("python3", {
        args: [
          "-c",
          `import socket, sys
l = socket.socket(socket.AF_UNIX); l.bind(${JSON.stringify(path)}); l.listen()
print("ready", flush=True)
c, _ = l.accept(); head = b""
while b"\\r\\n\\r\\n" not in head: head += c.recv(4096)
print(head.decode().split("\\r\\n")[1], flush=True)
c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"); c.close()`,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }),
      "python web server",
    );
    try {
      await py.waitForLine(/^ready$/);
      const r = await client(path, ["--http"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      assert.equal(await py.waitForLine(/^Host: /), "Host: localhost");
    } finally {
      await py.stop("SIGKILL");
    }
  },
});

// ----- http.ts --unix -----

Deno.test("http.ts --unix: curl --unix-socket and client.ts --http get the page (200), and the log line names the path", async (t) => {
  await using dir = await scratchDir();
  const path = `${dir.path}/web.sock`;
  await using server = await startUnixServer(path, [], { script: "http.ts" });
  const logLine = (n: number) =>
    new RegExp(
      `^http local ${path} remote \\(unnamed\\) \\(#${n}\\) 200 "GET / HTTP/1\\.1", in \\d+ bytes, out \\d+ bytes$`,
    );
  await t.step({
    name: "curl --unix-socket",
    ignore: !runsOk("curl", ["--version"]),
    async fn() {
      const r = await runTool("curl", [
        "-sS",
        "-i",
        "--unix-socket",
        path,
        "http://localhost/",
      ]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(r.out, /<h1>Hello from a socket<\/h1>/);
      assert.match(await server.waitForLine(/^http local /), logLine(1));
    },
  });
  await t.step("client.ts --http --unix", async () => {
    const before = server.stdout.lines.length;
    const r = await client(path, ["--http"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.out, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.out, /Unix socket/);
    const line = await server.waitForLine(/^http local /, 10_000, before);
    assert.match(line, /^http local .* 200 "GET \/ HTTP\/1\.1"/);
    assert.match(line, new RegExp(`^http local ${path} remote \\(unnamed\\)`));
  });
});

// ----- udp.ts --unix: datagrams over a path -----

/**
 * The grants for udp.ts (or a datagram peer) in `dir`: read and write on
 * the folder; net: the exact paths, or all (a sender's reply path is
 * random, and an exact unix: grant cannot name it).
 */
function dgramGrants(dir: string, ...paths: string[]): string[] {
  return [
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    paths.length === 0
      ? "--allow-net"
      : `--allow-net=${paths.map((p) => `unix:${p}`).join(",")}`,
  ];
}

/** udp.ts serving the datagram socket `path` in `dir`. */
function startUdpUnix(dir: string, path: string, args: string[] = []) {
  return startUnixServer(path, args, {
    script: "udp.ts",
    denoFlags: dgramGrants(dir),
  });
}

Deno.test("udp.ts --unix: datagrams of 0, 1, 5, 1000, 65000 and 3 bytes, all sent before any reply is read, come back one for one, whole and in order", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  const own = `${dir.path}/me.sock`;
  await using server = await startUnixServer(path, [], {
    script: "udp.ts",
    denoFlags: dgramGrants(dir.path, path, own), // it answers only me.sock
  });
  const sizes = [0, 1, 5, 1000, 65000, 3];
  const r = await runScript(
    "tests/lib/unix_datagrams.ts",
    [path, own, ...sizes.map(String)],
    { denoFlags: dgramGrants(dir.path, path, own) },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, `ok ${sizes.length}\n`);
  // The server got six datagrams too, each whole, from the path we bound.
  await server.waitForLine(/ 3 bytes$/);
  const prefix = `unixgram datagram local ${path} remote ${own} `;
  assert.deepEqual(
    server.stdout.lines.filter((l) => l.startsWith("unixgram datagram ")),
    sizes.map((n) => `${prefix}${n} bytes`),
  );
});

Deno.test("udp.ts --unix: a stale socket file is replaced with a note, a datagram gets its echo, and SIGTERM removes the file", async () => {
  await using dir = await scratchDir();
  const path = `${dir.path}/echo.sock`;
  const killed = await startUdpUnix(dir.path, path);
  await killed.stop("SIGKILL"); // no clean-up: the file stays
  assert.equal(fileType(path), "socket");
  const server = await startUdpUnix(dir.path, path);
  try {
    await server.stderr.waitFor(/^note: /);
    assert.equal(
      server.stderr.text(),
      `note: removed stale socket file ${path} (nobody listened)`,
    );
    const r = await runScript(
      "udp.ts",
      ["send", "--unix", path, "still here"],
      {
        denoFlags: dgramGrants(dir.path),
        env: { TMPDIR: dir.path },
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, "still here");
    assert.equal((await server.stop("SIGTERM")).code, 0);
    assert.match(
      server.stdout.text(),
      /^unixgram server stopped: 1 datagrams, /m,
    );
    assert.equal(fileType(path), "none");
  } finally {
    await server.stop("SIGKILL");
  }
});

Deno.test("udp.ts send --unix: its reply socket lives in a private folder (0700) that is gone after a reply, a timeout, Ctrl-C and a refused send", async () => {
  await using dir = await scratchDir();
  const tmp = `${dir.path}/tmp`; // the sender's $TMPDIR
  await sh("mkdir", tmp);
  const left = () => [...Deno.readDirSync(tmp)].map((e) => e.name);
  const send = (to: string, args: string[]) =>
    runScript("udp.ts", ["send", "--unix", to, ...args], {
      denoFlags: dgramGrants(dir.path),
      env: { TMPDIR: tmp },
    });
  const path = `${dir.path}/echo.sock`;
  const server = await startUdpUnix(dir.path, path, ["--quiet"]);
  try {
    // A reply: printed; and the folder gone.
    const ok = await send(path, ["hello"]);
    assert.equal(ok.out, "hello", ok.stderr);
    assert.deepEqual(left(), []);
    // A peer that never answers: the timeout, and the folder gone.
    const silentPath = `${dir.path}/silent.sock`;
    await using silent = spawnChild(
      commandFor("tests/lib/unix_datagrams.ts", ["--silent", silentPath], {
        denoFlags: dgramGrants(dir.path, silentPath),
      }, { stdin: "piped" }),
      "silent peer",
      { stdin: true },
    );
    await silent.waitForLine(/^bound /);
    const quiet = await send(silentPath, ["--timeout", "200", "hi"]);
    assert.equal(quiet.code, 1);
    assertOneErrorLine(
      quiet.stderr,
      new RegExp(`^error: no reply from unixgram ${silentPath} within 200 ms$`),
    );
    assert.deepEqual(left(), []);
    // Ctrl-C while it waits: the folder, with its socket, is removed too.
    const waiting = spawnChild(
      commandFor(
        "udp.ts",
        [
          "send",
          "--unix",
          silentPath,
          "--trace",
          "--timeout",
          "60000",
          "hi",
        ],
        { denoFlags: dgramGrants(dir.path), env: { TMPDIR: tmp } },
        {
          stdin: "null",
        },
      ),
      "waiting sender",
    );
    try {
      await withTimeout(
        waiting.stderr.waitFor(/^sent 2 bytes/),
        10_000,
        () => `the sender did not send: ${waiting.stderr.text()}`,
      );
      const [folder] = left();
      assert.match(folder, /^udp-send-/);
      assert.equal(Deno.statSync(`${tmp}/${folder}`).mode! & 0o777, 0o700);
      assert.equal(fileType(`${tmp}/${folder}/reply.sock`), "socket");
      const status = await waiting.stop("SIGINT");
      assert.equal(status.code, 130, waiting.stderr.text());
      assert.deepEqual(left(), []);
    } finally {
      await waiting.stop("SIGKILL");
    }
    // A stale file (its server killed): refused, and the folder gone.
    await server.stop("SIGKILL");
    const refused = await send(path, ["hi"]);
    assert.equal(refused.code, 1);
    assertOneErrorLine(refused.stderr, /nobody is bound to it \(a stale/);
    assert.deepEqual(left(), []);
  } finally {
    await server.stop("SIGKILL");
  }
});

// ----- outside tools: socat, ss -----

Deno.test({
  name:
    "--unix: socat is an outside client for both, UNIX-CONNECT to server.ts and UNIX-SENDTO (bound) to udp.ts (needs socat)",
  ignore: !runsOk("socat", ["-V"]),
  async fn() {
    await using dir = await scratchDir();
    const stream = `${dir.path}/echo.sock`;
    await using _server = await startUnixServer(stream, ["--quiet"]);
    const r = await runTool("socat", ["-", `UNIX-CONNECT:${stream}`]);
    assert.equal(r.code, 0, r.err); // stdin empty: connect, half-close, end
    const piped = spawnChild(
      new Deno.Command("socat", {
        // At the end of stdin socat half-closes, and waits (at most 10 s)
        // for the server's end: the echo comes first.
        args: ["-t", "10", "-", `UNIX-CONNECT:${stream}`],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }),
      "socat UNIX-CONNECT",
      { stdin: true },
    );
    await piped.write("hello from socat\n");
    await piped.closeStdin();
    assert.equal((await piped.status).code, 0, piped.stderr.text());
    await piped.stdout.done;
    assert.equal(piped.stdout.text(), "hello from socat"); // one line

    const dgram = `${dir.path}/dgram.sock`;
    const own = `${dir.path}/socat.sock`;
    await using _udp = await startUdpUnix(dir.path, dgram, ["--quiet"]);
    const sender = spawnChild(
      new Deno.Command("socat", {
        // A datagram has no end: socat stops when its stdin ends (-t 0),
        // so stdin stays open until the reply is in.
        args: ["-t", "0", "-", `UNIX-SENDTO:${dgram},bind=${own}`],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }),
      "socat UNIX-SENDTO",
      { stdin: true },
    );
    try {
      await sender.write("one datagram\n");
      await withTimeout(
        sender.stdout.waitFor(/^one datagram$/),
        10_000,
        () => `no echo for socat: ${sender.stderr.text()}`,
      );
      assert.equal(sender.stdout.text(), "one datagram");
    } finally {
      await sender.closeStdin();
      await sender.stop();
    }
    assert.equal(fileType(own), "none"); // socat removes what it bound
  },
});

Deno.test({
  name:
    "--unix: ss -xa shows the listening socket at its path and, while a client is connected, both ends, tied by inode",
  ignore: !runsOk("ss", ["-V"]),
  async fn() {
    await using dir = await scratchDir();
    const path = `${dir.path}/echo.sock`;
    await using server = await startUnixServer(path);
    await using held = spawnChild(
      commandFor("client.ts", ["--unix", path], {
        denoFlags: unixGrants(path),
      }, { stdin: "piped" }),
      "held client",
      { stdin: true },
    );
    await server.waitForLine(/^unix open /);
    const ss = await runTool("ss", ["-xa"]);
    assert.equal(ss.code, 0, ss.err);
    const rows = ss.out.split("\n").map((l) => l.trim().split(/\s+/));
    // Netid State Recv-Q Send-Q Local Port(inode) Peer PeerPort(inode)
    const mine = rows.filter((r) => r[4] === path);
    const listening = mine.find((r) => r[1] === "LISTEN");
    const accepted = mine.find((r) => r[1] === "ESTAB");
    assert.ok(listening && listening[0] === "u_str", ss.out);
    assert.ok(accepted, ss.out);
    // The client's end has no name ("*"); its peer is the accepted socket.
    const clientEnd = rows.find((r) => r[5] === accepted[7]);
    assert.ok(clientEnd, ss.out);
    assert.deepEqual(
      [clientEnd[1], clientEnd[4], clientEnd[7]],
      ["ESTAB", "*", accepted[5]],
    );
    await held.closeStdin();
    assert.equal((await held.status).code, 0, held.stderr.text());
  },
});
