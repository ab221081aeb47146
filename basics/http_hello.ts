/**
 * basics/http_hello.ts: a web server by hand on a TCP socket, no HTTP
 * library. HTTP is only what the two ends write on the socket: the browser
 * sends a head (a request line, header lines, an empty line, each line ending
 * in CR LF), we send a status line, headers, an empty line and the page.
 * The page shows the socket pair and the request line you sent.
 *
 *   deno run --allow-net=127.0.0.1 basics/http_hello.ts
 *
 * Port 9000; `--port N` picks another (0: any free one). Open
 * http://127.0.0.1:9000/ in a browser, or `curl -v` it; reload and watch
 * your end's port change while the server's stays.
 * Try next: http.ts, the full server (--hex shows every byte sent to it).
 */
const i = Deno.args.indexOf("--port");
const port = i < 0 ? 9000 : Number(Deno.args[i + 1]);

let listener: Deno.TcpListener;
try { // a web server is a TCP server: listen, accept, one handler each
  listener = Deno.listen({ hostname: "127.0.0.1", port });
} catch (err) { // AddrInUse: another server has this port; try --port 0
  console.error(`error: cannot listen on tcp 127.0.0.1:${port}: ${err}`);
  Deno.exit(1);
}
console.log(`tcp listening on ${listener.addr.hostname}:${listener.addr.port}`);

// A head longer than this is not a request we will read to its end.
const MAX_HEAD = 16 * 1024;

while (true) {
  try {
    answer(await listener.accept()); // not awaited: serve many at once
  } catch (err) { // a client that reset while queued fails alone
    console.log(`accept failed: ${err}`);
  }
}

async function answer(conn: Deno.TcpConn) {
  const { localAddr: me, remoteAddr: you } = conn;
  try {
    // The head arrives in pieces of any size (TCP is a stream): read until
    // the empty line that ends it (CR LF CR LF), the limit, or the end.
    const head = new Uint8Array(MAX_HEAD);
    let got = 0;
    let text = "";
    while (!text.includes("\r\n\r\n") && got < MAX_HEAD) {
      const n = await conn.read(head.subarray(got));
      if (n === null) break; // the client closed before the head was done
      got += n;
      text = new TextDecoder().decode(head.subarray(0, got));
    }
    if (got === 0) return; // nothing asked (browsers open spare connections)
    const requestLine = text.split("\r\n")[0]; // e.g. GET / HTTP/1.1
    const status = text.includes("\r\n\r\n") ? "200 OK" : "400 Bad Request";
    console.log(
      `${status} for ${requestLine} from ${you.hostname}:${you.port}`,
    );

    // text/plain: the browser shows the request line as it is, no escaping.
    const page = `your end   ${you.hostname}:${you.port}\n` +
      `my end     ${me.hostname}:${me.port}\nyou asked  ${requestLine}\n`;
    // Content-Length counts bytes, not characters (é is two in UTF-8): it
    // tells the client where the page ends. Then we close: one request only.
    const reply = new TextEncoder().encode(
      `HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        `Content-Length: ${new TextEncoder().encode(page).length}\r\n` +
        `Connection: close\r\n\r\n${page}`,
    );
    // A write may take fewer bytes than it was given: loop until all went.
    for (let w = 0; w < reply.length;) w += await conn.write(reply.subarray(w));
  } catch (err) { // a client that resets ends its own connection only
    console.log(`error from ${you.hostname}:${you.port}: ${err}`);
  } finally {
    conn.close();
  }
}
