/**
 * basics/chat.ts: a TCP chat room, one to many. Each line a client sends
 * goes to every other client, after the sender's address:port. TCP cannot
 * copy for us: the server keeps every connection and writes to each one.
 *
 *   deno run --allow-net=127.0.0.1 basics/chat.ts
 *
 * Port 9000 (`--port N`: another; 0: any free one). In more terminals, type
 * lines into `nc 127.0.0.1 9000`. Try next: chat.ts, with bounds and --trace.
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

// Each client's writes are chained: a line joins each chain, the broadcast
// goes on (awaiting each write in turn, one stuck client would stop the room).
const room = new Map<Deno.TcpConn, Promise<void>>();
function broadcast(from: Deno.TcpConn, text: string) {
  const msg = new TextEncoder().encode(text); // encoded once, for all
  for (const [conn, writes] of room) {
    if (conn === from) continue; // not back to its sender
    const write = async () => { // a write may take only part: loop
      for (let w = 0; w < msg.length;) w += await conn.write(msg.subarray(w));
    };
    room.set(conn, writes.then(write).catch(() => {})); // reset: it leaves
  }
}

while (true) { // one accept() is one client whose handshake is done
  const conn = await listener.accept().catch(() => null); // reset: skip it
  if (conn) chat(conn); // not awaited: serve many at once
}

async function chat(conn: Deno.TcpConn) {
  const name = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
  room.set(conn, Promise.resolve());
  console.log(`join ${name} (${room.size} here)`);
  let partial = ""; // TCP is a stream: a read may end mid-line or hold several
  const text = new TextDecoder(); // stream: a character may be split too
  const buf = new Uint8Array(4096);
  // null is the client's FIN; a reset (caught) ends its stay the same way.
  for (let n; (n = await conn.read(buf).catch(() => null)) !== null;) {
    partial += text.decode(buf.subarray(0, n), { stream: true });
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const line of lines) broadcast(conn, `${name}: ${line}\n`);
  }
  await room.get(conn); // what was queued for it goes out first
  room.delete(conn);
  console.log(`leave ${name} (${room.size} here)`);
  conn.close();
}
