/**
 * tests/lib/unix_datagrams.ts: a Unix datagram peer for the tests, run as
 * a child process (the test has no --allow-write):
 *
 *   deno run --allow-read=DIR --allow-write=DIR \
 *     --allow-net=unix:SERVER,unix:OWN tests/lib/unix_datagrams.ts \
 *     SERVER OWN SIZE...
 *
 * binds OWN, sends one datagram of each SIZE (random bytes) to SERVER, all
 * of them before reading any reply, then receives as many replies. Prints
 * `ok N` if reply i is exactly datagram i, for every i, else what differed.
 *
 *   deno run ... tests/lib/unix_datagrams.ts --silent OWN
 *
 * binds OWN, prints `bound OWN` and never answers (until its stdin ends).
 */
import { randomBytes } from "./bytes.ts";

async function exchange(
  server: string,
  own: string,
  sizes: number[],
): Promise<string> {
  const socket = Deno.listenDatagram({ transport: "unixpacket", path: own });
  try {
    const sent = sizes.map((n) => randomBytes(n));
    const to: Deno.UnixAddr = { transport: "unixpacket", path: server };
    // All out first: if the boundaries were lost on the way, the replies
    // would come back merged or split, not one per datagram.
    for (const d of sent) await socket.send(d, to);
    const problems: string[] = [];
    const buffer = new Uint8Array(1 << 17);
    for (let i = 0; i < sent.length; i++) {
      const [data] = await socket.receive(buffer);
      const same = data.length === sent[i].length &&
        data.every((b, k) => b === sent[i][k]);
      if (!same) {
        problems.push(`reply ${i}: ${data.length} bytes, sent ${sizes[i]}`);
      }
    }
    return problems.length === 0 ? `ok ${sizes.length}` : problems.join("; ");
  } finally {
    socket.close();
    Deno.removeSync(own); // Deno leaves a datagram socket's file behind
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "--silent") {
    const path = Deno.args[1];
    const socket = Deno.listenDatagram({ transport: "unixpacket", path });
    console.log(`bound ${path}`);
    for await (const _ of Deno.stdin.readable) { /* until stdin ends */ }
    socket.close();
    Deno.removeSync(path);
  } else {
    const [server, own, ...sizes] = Deno.args;
    console.log(await exchange(server, own, sizes.map(Number)));
  }
}
