/**
 * basics/sockets_on_port.ts: the kernel's list of TCP sockets, read once.
 * Linux keeps one line per socket in /proc/net/tcp (tcp6 for IPv6), and
 * any user may read it: `ss` and `netstat` print the same table. A
 * listening socket is there as LISTEN, and each connection it made is a
 * line of its own, with its own socket pair.
 *
 *   deno run --allow-run=cat basics/sockets_on_port.ts
 *
 * Port 9000; `--port N` picks another. Deno 2.9 reads /proc only with
 * --allow-all, so this asks `cat` for the file. Run it while
 * basics/tcp_server.ts serves a client (nc 127.0.0.1 9000) to see LISTEN
 * and ESTABLISHED; right after the client ends, TIME_WAIT on its side.
 * Try next: watch.ts, which looks every 50 ms and prints what changed.
 */
const i = Deno.args.indexOf("--port");
const port = i < 0 ? 9000 : Number(Deno.args[i + 1]);

// The states, as the kernel numbers them (01 is ESTABLISHED, 0A LISTEN).
const STATES = [
  "",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "FIN_WAIT1",
  "FIN_WAIT2",
  "TIME_WAIT",
  "CLOSE",
  "CLOSE_WAIT",
  "LAST_ACK",
  "LISTEN",
];

const { stdout } = await new Deno.Command("cat", { args: ["/proc/net/tcp"] })
  .output();
for (const line of new TextDecoder().decode(stdout).split("\n").slice(1)) {
  // sl local_address rem_address st tx_queue:rx_queue ...
  const [, local, remote, st, queues] = line.trim().split(/\s+/);
  if (!queues) continue;
  const [me, you] = [address(local), address(remote)];
  if (me.port !== port && you.port !== port) continue;
  const [sendQ, recvQ] = queues.split(":").map((h) => parseInt(h, 16));
  console.log(
    `${STATES[parseInt(st, 16)]} local ${me.text} remote ${you.text}` +
      ` recv-q ${recvQ} send-q ${sendQ}`,
  );
}

// "0100007F:2328" is 127.0.0.1:9000: the address in the machine's byte
// order (reversed on x86), the port in network order.
function address(hex: string) {
  const [a, p] = hex.split(":");
  const bytes = a.match(/../g)!.map((b) => parseInt(b, 16)).reverse();
  return {
    port: parseInt(p, 16),
    text: `${bytes.join(".")}:${parseInt(p, 16)}`,
  };
}
