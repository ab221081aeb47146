/** Socket helpers for tests: read to the end, read exactly N bytes. */
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
