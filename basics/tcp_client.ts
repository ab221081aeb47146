/**
 * basics/tcp_client.ts: the classic first client: connect, send `1234`,
 * say "done sending" (half-close), read the answer to the end.
 * Like nc, the data goes to stdout and notes about it to stderr.
 *
 *   deno run --allow-net=127.0.0.1 basics/tcp_client.ts
 *
 * It connects to port 9000 (`--port N` for another), where
 * basics/tcp_server.ts should be running in another terminal.
 * Try next: client.ts, the full client (netcat mode, --http, --trace).
 */
const i = Deno.args.indexOf("--port");
const port = i < 0 ? 9000 : Number(Deno.args[i + 1]);

// connect() is the whole handshake (SYN, SYN-ACK, ACK); the OS picks our port.
const conn = await Deno.connect({ hostname: "127.0.0.1", port }).catch((e) => {
  console.error(`error: cannot connect to tcp 127.0.0.1:${port}: ${e}`);
  Deno.exit(1); // ConnectionRefused: nothing listens there (yet?)
});
const { localAddr: me, remoteAddr: you } = conn;
console.error(
  `connected local ${me.hostname}:${me.port} remote ${you.hostname}:${you.port}`,
);

// write() says how many bytes the kernel took, as Python's send(b'1234') does.
// Four fit at once; for bigger sends loop, as basics/tcp_server.ts does.
const sent = await conn.write(new TextEncoder().encode("1234"));
console.error(`write() reported ${sent}`);

// Half-close: our FIN says "no more data from me"; we can still read.
await conn.closeWrite();

// The answer may come in pieces (TCP is a stream); null is the server's FIN.
const buf = new Uint8Array(16 * 1024);
for (let n; (n = await conn.read(buf)) !== null;) {
  // stdout is a file descriptor too: its write may also take fewer bytes.
  for (let w = 0; w < n;) w += await Deno.stdout.write(buf.subarray(w, n));
}
conn.close();
