/**
 * basics/tcp_server.ts: a TCP echo server, the whole idea on one screen.
 * The kernel completes each client's handshake and queues the connection
 * until accept() takes it. A connection is named by its socket pair, our
 * address:port and the client's: all clients share our port, each has its
 * own. Each connection gets its own handler, and every byte comes back.
 *
 *   deno run --allow-net=127.0.0.1 basics/tcp_server.ts
 *
 * Port 9000; `--port N` picks another (0: any free one). In a second
 * terminal: basics/tcp_client.ts, or `nc -N 127.0.0.1 9000`.
 * Try next: server.ts, the full server (--trace shows where reads fall).
 */
const i = Deno.args.indexOf("--port"); // --port 0: any free port
const port = i < 0 ? 9000 : Number(Deno.args[i + 1]);

let listener: Deno.TcpListener;
try { // socket(), bind() and listen() in one call; loopback only
  listener = Deno.listen({ hostname: "127.0.0.1", port });
} catch (err) { // AddrInUse: another server has this port; try --port 0
  console.error(`error: cannot listen on tcp 127.0.0.1:${port}: ${err}`);
  Deno.exit(1);
}
console.log(`tcp listening on ${listener.addr.hostname}:${listener.addr.port}`);

while (true) { // one accept() is one client whose handshake is done
  try {
    echo(await listener.accept()); // not awaited: serve many at once
  } catch (err) { // a client that reset while queued fails alone
    console.log(`accept failed: ${err}`);
  }
}

async function echo(conn: Deno.TcpConn) {
  const { localAddr: me, remoteAddr: you } = conn;
  const pair =
    `local ${me.hostname}:${me.port} remote ${you.hostname}:${you.port}`;
  console.log(`open ${pair}`);
  const buf = new Uint8Array(16 * 1024);
  try {
    // A read returns what has arrived so far, maybe fewer bytes than were
    // sent: TCP is a stream, not messages. null is the client's FIN.
    for (let n; (n = await conn.read(buf)) !== null;) {
      // A write may take fewer bytes than it was given: loop until all went.
      for (let w = 0; w < n;) w += await conn.write(buf.subarray(w, n));
    }
  } catch (err) { // a reset ends this connection, never the server
    console.log(`error ${pair}: ${err}`);
  } finally {
    conn.close(); // all echoed (or the client is gone): our FIN
    console.log(`close ${pair}`);
  }
}
