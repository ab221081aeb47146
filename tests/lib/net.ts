/**
 * Socket helpers for tests: read to the end, read exactly N bytes, a
 * one-connection server.
 */
import { concat } from "./bytes.ts";

/** Write all of `data`, however many calls `write()` needs (client.ts's own). */
export { writeAll } from "../../client.ts";

/** Read from `conn` until the peer closes (EOF); returns all bytes. */
export async function readAll(
  conn: Deno.Conn,
): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  return concat(chunks);
}

/** Read exactly `size` bytes (or fewer if the peer closes first). */
export async function readExactly(
  conn: Deno.Conn,
  size: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(size);
  let got = 0;
  while (got < size) {
    const n = await conn.read(out.subarray(got));
    if (n === null) return out.slice(0, got);
    got += n;
  }
  return out;
}

/** Whether this machine can bind the IPv6 loopback `::1`. */
export function hasIpv6Loopback(): boolean {
  try {
    const l = Deno.listen({ hostname: "::1", port: 0 });
    l.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * An in-process server for one connection: `handle` gets it, and the
 * connection is closed after. `released` settles when the test disposes of
 * the server (a handler that must hold the connection open awaits it).
 * `done` settles when the handler is over; dispose closes the listener and
 * waits for it.
 */
export function serveOne(
  handle: (conn: Deno.TcpConn, released: Promise<void>) => Promise<void>,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const release = Promise.withResolvers<void>();
  const done = (async () => {
    const conn = await listener.accept();
    try {
      await handle(conn, release.promise);
    } finally {
      conn.close();
    }
  })();
  return {
    port: listener.addr.port,
    done,
    async [Symbol.asyncDispose]() {
      release.resolve();
      listener.close();
      await done.catch(() => {});
    },
  };
}

/**
 * What the kernel knows about the TCP connection `conn` (`ss -tin`):
 * counters such as `data_segs_in` (data segments received) and
 * `bytes_received`, as numbers. These count what happened on the wire,
 * whenever the program gets to run.
 */
export async function tcpInfo(
  conn: Deno.Conn,
): Promise<Record<string, number>> {
  const local = conn.localAddr as Deno.NetAddr;
  const remote = conn.remoteAddr as Deno.NetAddr;
  const { code, stdout, stderr } = await new Deno.Command("ss", {
    args: ["-tinH", `sport = :${local.port}`, `dport = :${remote.port}`],
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(stdout);
  if (code !== 0 || !text.trim()) {
    throw new Error(
      `ss shows no connection ${local.port} -> ${remote.port}: ${
        new TextDecoder().decode(stderr)
      }`,
    );
  }
  return Object.fromEntries(
    [...text.matchAll(/\b([a-z_]+):(\d+(?:\.\d+)?)\b(?![:/,])/g)].map((m) => [
      m[1],
      Number(m[2]),
    ]),
  );
}

/**
 * `ss -ltn` for the listener on `port`: Recv-Q (connections waiting in the
 * queue) and Send-Q (the queue's length, the backlog).
 */
export async function listenQueue(
  port: number,
): Promise<{ waiting: number; backlog: number; line: string }> {
  const { code, stdout, stderr } = await new Deno.Command("ss", {
    args: ["-ltnH", `sport = :${port}`],
    stdin: "null",
  }).output();
  const line = new TextDecoder().decode(stdout).trim();
  if (code !== 0) throw new Error(`ss: ${new TextDecoder().decode(stderr)}`);
  const fields = line.split(/\s+/);
  if (fields[0] !== "LISTEN") {
    throw new Error(`no listener on port ${port}: ${line}`);
  }
  return { waiting: Number(fields[1]), backlog: Number(fields[2]), line };
}

/**
 * A listener on 127.0.0.1 that never accepts, backlog 1, with its queue
 * filled: the kernel completes backlog + 1 = 2 handshakes by itself, into
 * the queue, then drops further SYNs, as a firewall would. `queue` is what
 * ss says then (no deadline decides that the queue is full). Dispose
 * closes the connections and the listener.
 */
export async function fullListenQueue(): Promise<
  {
    port: number;
    queue: Awaited<ReturnType<typeof listenQueue>>;
  } & Disposable
> {
  const listener = Deno.listen({
    hostname: "127.0.0.1",
    port: 0,
    tcpBacklog: 1,
  });
  const { port } = listener.addr;
  const queued: Deno.TcpConn[] = [];
  const close = () => {
    for (const conn of queued) conn.close();
    listener.close();
  };
  try {
    for (let i = 0; i < 2; i++) {
      queued.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    return { port, queue: await listenQueue(port), [Symbol.dispose]: close };
  } catch (err) {
    close();
    throw err;
  }
}
