/**
 * basics/udp_send.ts: send one datagram, `hello`, and wait for the answer.
 * UDP promises nothing: a datagram (or its answer) may be lost, and no one
 * tells a sender that nothing listens, so it gives up after 2 s.
 * Like nc, the answer goes to stdout and notes about it to stderr.
 *
 *   deno run --allow-net=127.0.0.1 --unstable-net basics/udp_send.ts
 *
 * (UDP is still unstable in Deno 2; in this repo deno.json sets the flag.)
 * It sends to port 9000 (`--port N` for another), where
 * basics/udp_echo.ts should be running in another terminal.
 * Try next: udp.ts send (stdin as one datagram, --chunk, --timeout).
 */
const i = Deno.args.indexOf("--port");
const port = i < 0 ? 9000 : Number(Deno.args[i + 1]);
if (!("listenDatagram" in Deno)) { // UDP is behind a flag in Deno 2
  console.error(
    "error: UDP needs --unstable-net: deno run --allow-net=127.0.0.1 --unstable-net basics/udp_send.ts",
  );
  Deno.exit(1);
}

// Our own socket on port 0: the OS picks a free port, where the answer comes.
const to = { transport: "udp", hostname: "127.0.0.1", port } as const;
const sock = Deno.listenDatagram({ ...to, port: 0 });
await sock.send(new TextEncoder().encode("hello"), to); // one datagram
const timer = setTimeout(() => {
  console.error(`error: no answer from udp 127.0.0.1:${port} within 2 s`);
  Deno.exit(1); // nothing listens there, or a datagram was lost
}, 2000);

// Anyone may send to our port: the answer names who sent it.
const [data, from] = await sock.receive(new Uint8Array(64 * 1024));
clearTimeout(timer);
const peer = from as Deno.NetAddr;
console.error(`${data.length} bytes from ${peer.hostname}:${peer.port}`);
// stdout's write, like a socket's, may take fewer bytes than it is given.
for (let w = 0; w < data.length;) {
  w += await Deno.stdout.write(data.subarray(w));
}
sock.close(); // a DatagramConn has no `using`: close it by hand
