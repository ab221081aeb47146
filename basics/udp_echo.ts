/**
 * basics/udp_echo.ts: a UDP echo server. No connection, no accept: bind a
 * port and datagrams arrive, each whole, each with its sender's address and
 * port; the answer is a new datagram sent back to that address.
 *
 *   deno run --allow-net=127.0.0.1 --unstable-net basics/udp_echo.ts
 *
 * (UDP is still unstable in Deno 2; in this repo deno.json sets the flag.)
 * Port 9000; `--port N` picks another (0: any free one). In a second
 * terminal: basics/udp_send.ts, or `nc -u 127.0.0.1 9000`.
 * Try next: udp.ts, the full script (it also refuses echo loops).
 */
const i = Deno.args.indexOf("--port");
const port = i < 0 ? 9000 : Number(Deno.args[i + 1]);
if (!("listenDatagram" in Deno)) { // UDP is behind a flag in Deno 2
  console.error(
    "error: UDP needs --unstable-net: deno run --allow-net=127.0.0.1 --unstable-net basics/udp_echo.ts",
  );
  Deno.exit(1);
}

let sock: Deno.DatagramConn;
try { // socket() and bind(): that is all a UDP server needs
  sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port });
} catch (err) { // AddrInUse: another UDP server has this port
  console.error(`error: cannot listen on udp 127.0.0.1:${port}: ${err}`);
  Deno.exit(1);
}
const { hostname, port: bound } = sock.addr as Deno.NetAddr;
console.log(`udp listening on ${hostname}:${bound}`);

// Our own 64 KiB buffer, reused: receive() without one allocates 65,507
// bytes (the largest IPv4 datagram) each time; a smaller one would cut a
// big datagram short without a word.
const buf = new Uint8Array(64 * 1024);
while (true) {
  const [data, from] = await sock.receive(buf); // one send = one receive
  const peer = from as Deno.NetAddr;
  console.log(
    `datagram from ${peer.hostname}:${peer.port}, ${data.length} bytes`,
  );
  // The same bytes go back as one datagram. Nothing says it arrives.
  await sock.send(data, peer).catch((e) => console.log(`send failed: ${e}`));
}
