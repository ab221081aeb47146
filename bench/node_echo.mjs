/**
 * bench/node_echo.mjs: the plain Node.js echo servers the benchmark compares
 * ours with (`deno task bench --compare node`). Nothing clever on purpose:
 * this is the TCP and UDP echo anyone would write with `net` and `dgram`.
 *
 *   node bench/node_echo.mjs tcp --port 0
 *   node bench/node_echo.mjs udp --port 0
 *
 * The first line of stdout is `tcp listening on HOST:PORT` (or `udp ...`),
 * like server.ts and udp.ts. SIGTERM or SIGINT stops it.
 */
import dgram from "node:dgram";
import net from "node:net";
import process from "node:process";

const [protocol, ...rest] = process.argv.slice(2);
let port = 0;
let hostname = "127.0.0.1";
for (let i = 0; i < rest.length; i++) {
  if (rest[i] === "--port") port = Number(rest[++i]);
  else if (rest[i] === "--hostname") hostname = rest[++i];
  else {
    console.error(`error: unknown argument ${rest[i]}`);
    process.exit(2);
  }
}

const stop = (close) => {
  process.on("SIGTERM", close);
  process.on("SIGINT", close);
};

if (protocol === "tcp") {
  // Echo: pipe the socket into itself. pipe() handles backpressure and,
  // when the client half-closes, ends our side after the last byte.
  const server = net.createServer((socket) => {
    socket.on("error", () => {}); // a reset client is not our failure
    socket.pipe(socket);
  });
  server.listen({ host: hostname, port, backlog: 511 }, () => {
    const a = server.address();
    console.log(`tcp listening on ${a.address}:${a.port}`);
  });
  stop(() => process.exit(0));
} else if (protocol === "udp") {
  // One datagram back to its sender for each datagram in.
  const socket = dgram.createSocket("udp4");
  socket.on("message", (msg, rinfo) => {
    socket.send(msg, rinfo.port, rinfo.address);
  });
  socket.bind(port, hostname, () => {
    const a = socket.address();
    console.log(`udp listening on ${a.address}:${a.port}`);
  });
  stop(() => process.exit(0));
} else {
  console.error("usage: node bench/node_echo.mjs tcp|udp [--port N]");
  process.exit(2);
}
