/**
 * tests/lib/unix_clients.ts: COUNT clients at once on the Unix socket PATH,
 * each sending its own random SIZE bytes in uneven writes while it reads
 * the echo, then half-closing and reading to the end. Prints one line:
 * `ok COUNT` if every client got exactly its bytes back, else what
 * differed. Run as a child process (the test has no --allow-write):
 *
 *   deno run --allow-read=PATH --allow-write=PATH --allow-net=unix:PATH \
 *     tests/lib/unix_clients.ts PATH COUNT SIZE
 */
import { randomBytes, sha256 } from "./bytes.ts";
import { readAll, writeAll } from "./net.ts";

async function one(path: string, size: number, i: number): Promise<string> {
  const payload = randomBytes(size);
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const sizes = [1, 7, 1000, 4096, 65_537, 3];
    const send = async () => {
      for (let at = 0, k = i; at < size; k++) {
        const n = sizes[k % sizes.length];
        await writeAll(conn, payload.subarray(at, at + n));
        at += n;
      }
      await conn.closeWrite(); // half-close: the echo still comes back
    };
    const [, echoed] = await Promise.all([send(), readAll(conn)]);
    if (echoed.length !== size) {
      return `client ${i}: ${echoed.length} of ${size} bytes back`;
    }
    return await sha256(echoed) === await sha256(payload)
      ? ""
      : `client ${i}: different bytes back`;
  } finally {
    conn.close();
  }
}

if (import.meta.main) {
  const [path, count, size] = Deno.args;
  const results = await Promise.all(
    Array.from({ length: Number(count) }, (_, i) => one(path, Number(size), i)),
  );
  const bad = results.filter((r) => r !== "");
  console.log(bad.length === 0 ? `ok ${count}` : bad.join("; "));
}
