// The smallest Deno TCP echo server: the reproduction for bench/README.md.
// deno run --allow-net=127.0.0.1 bench/plain_echo.ts [PORT]   (default 9000)
const port = Number(Deno.args[0] ?? 9000);
const listener = Deno.listen({ hostname: "127.0.0.1", port });
console.log(`tcp listening on 127.0.0.1:${listener.addr.port}`);
for await (const conn of listener) {
  (async () => {
    const buf = new Uint8Array(1024);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (let w = 0; w < n; w += await conn.write(buf.subarray(w, n)));
      }
    } catch { /* the client reset */ }
    conn.close(); // our FIN (a reset left the socket open too)
  })();
}
