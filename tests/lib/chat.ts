/**
 * A chat client for tests: a real TCP connection whose every received line
 * is kept, with waits for lines (that fail after a deadline, not hang).
 * A client that must never read is a bare `Deno.connect` instead.
 */
import { writeAll } from "./net.ts";
import { withTimeout } from "./spawn.ts";

/** One connection to a chat room, reading all the time. */
export class ChatClient implements AsyncDisposable {
  /** Every complete line received, in order, without its newline. */
  readonly lines: string[] = [];
  /** Our end of the socket pair, `127.0.0.1:PORT`: our name in the room. */
  readonly name: string;
  /** Settles when the server closes (EOF) or the connection fails. */
  readonly closed: Promise<void>;
  /** Bytes of an unfinished last line, if the server closed mid-line. */
  partial = "";
  #waiters: (() => void)[] = [];
  #ended = false;

  private constructor(readonly conn: Deno.TcpConn) {
    const { hostname, port } = conn.localAddr;
    this.name = `${hostname}:${port}`;
    this.closed = this.#pump();
  }

  static async connect(port: number, hostname = "127.0.0.1") {
    return new ChatClient(await Deno.connect({ hostname, port }));
  }

  /** Connect and wait for the welcome, `* you are NAME (N here)`. */
  static async join(port: number, here: number): Promise<ChatClient> {
    const c = await ChatClient.connect(port);
    await c.waitForLine(`* you are ${c.name} (${here} here)`);
    return c;
  }

  async #pump(): Promise<void> {
    const decoder = new TextDecoder();
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.partial += decoder.decode(buf.subarray(0, n), { stream: true });
        const lines = this.partial.split("\n");
        this.partial = lines.pop()!;
        if (lines.length) {
          this.lines.push(...lines);
          this.#wake();
        }
      }
    } catch { /* reset, or closed by us */ }
    this.#ended = true;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Lines that are not the room's notes (`* ...`): what others said. */
  said(): string[] {
    return this.lines.filter((l) => !l.startsWith("* "));
  }

  /**
   * Wait until `done(lines)` holds; fail after `ms` (or if the server
   * closes first) with what was received.
   */
  async waitUntil(
    what: string,
    done: (lines: string[]) => boolean,
    ms = 20_000,
  ): Promise<void> {
    const wait = async () => {
      while (!done(this.lines)) {
        if (this.#ended) {
          throw new Error(
            `${this.name}: the server closed before ${what}; got ${this.tail()}`,
          );
        }
        await new Promise<void>((r) => this.#waiters.push(r));
      }
    };
    await withTimeout(
      wait(),
      ms,
      () => `${this.name}: no ${what} within ${ms} ms; got ${this.tail()}`,
    );
  }

  /** Wait for a line equal to `line` (or matching it), at index >= `from`. */
  async waitForLine(line: string | RegExp, ms = 20_000, from = 0) {
    const hit = (l: string) =>
      typeof line === "string" ? l === line : line.test(l);
    await this.waitUntil(
      `line ${line}`,
      (lines) => lines.slice(from).some(hit),
      ms,
    );
    return this.lines.slice(from).find(hit)!;
  }

  /** The last few lines received, for failure messages. */
  tail(): string {
    return JSON.stringify(this.lines.slice(-5).map((l) => l.slice(0, 120)));
  }

  /** Send text as it is (add the newline yourself). */
  async send(text: string | Uint8Array): Promise<void> {
    await writeAll(
      this.conn,
      typeof text === "string" ? new TextEncoder().encode(text) : text,
    );
  }

  /** Wait until the server has closed the connection. */
  async waitClosed(ms = 20_000): Promise<void> {
    await withTimeout(
      this.closed,
      ms,
      () => `${this.name}: still open after ${ms} ms; got ${this.tail()}`,
    );
  }

  /**
   * Leave as `nc -N` does at the end of its input: half-close (our FIN),
   * then read until the server closes too.
   */
  async leave(ms = 20_000): Promise<void> {
    await this.conn.closeWrite();
    await this.waitClosed(ms);
  }

  /** Close our end at once. */
  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }
}

// --- flooding the room --------------------------------------------------------

/** A line of about 4,000 bytes that names its number. */
export const bigLine = (n: number) => `${n} ${"x".repeat(4000)}`;
/** The bytes of one {@link bigLine}, newline included. */
export const LINE_BYTES = bigLine(0).length + 1;

/**
 * `from` sends big numbered lines, `perRound` at a time, and `reader`
 * reads each round before the next is sent (it keeps up); `afterRound`
 * runs after each. Stops once `bytes` are sent or `afterRound` says so
 * (true); returns how many lines went, numbered from `first`.
 */
export async function flood(
  from: ChatClient,
  reader: ChatClient,
  bytes: number,
  afterRound: (lines: number) => Promise<boolean | void> = async () => {},
  perRound = 32,
  first = 0,
): Promise<number> {
  let n = first;
  while ((n - first) * LINE_BYTES < bytes) {
    let round = "";
    for (let i = 0; i < perRound; i++) round += bigLine(n++) + "\n";
    await from.send(round);
    await reader.waitUntil(`line ${n - 1}`, () => reader.said().length >= n);
    if (await afterRound(n)) break;
  }
  return n - first;
}

/**
 * Bytes the kernel holds on the way from the server (port `server`) to the
 * client on port `client`: the server socket's Send-Q plus the client
 * socket's Recv-Q, as `ss -tn` shows them.
 */
export async function kernelHeld(
  server: number,
  client: number,
): Promise<number> {
  const filter =
    `( sport = :${server} and dport = :${client} ) or ( sport = :${client} and dport = :${server} )`;
  const { stdout } = await new Deno.Command("ss", {
    args: ["-tnH", filter],
    stdin: "null",
  }).output();
  const rows = new TextDecoder().decode(stdout).trim().split("\n");
  if (rows.length !== 2) throw new Error(`ss shows ${rows.length} sockets`);
  let held = 0;
  for (const row of rows) {
    const [, recvQ, sendQ, local] = row.split(/\s+/);
    held += local.endsWith(`:${server}`) ? Number(sendQ) : Number(recvQ);
  }
  return held;
}

/**
 * Flood the room from `from` (read by `reader`) until the kernel's buffers
 * for the client on port `stuck`, which does not read, are full: its
 * writer then waits on a write, and the last lines (at most 96 KiB, below
 * the queue's bound) wait in its queue. Returns the lines sent and the
 * bytes the kernel holds.
 */
export async function fillKernel(
  from: ChatClient,
  reader: ChatClient,
  serverPort: number,
  stuck: number,
): Promise<{ lines: number; held: number }> {
  // Rounds of 8 lines (32 KiB) until two rounds in a row add nothing to
  // what the kernel holds (one round that adds little may be a lag).
  let held = await kernelHeld(serverPort, stuck);
  let lines = 0;
  for (let still = 0; still < 2;) {
    if (lines * LINE_BYTES > 64 * 1024 * 1024) {
      throw new Error(`the kernel never stopped taking bytes (${held})`);
    }
    lines += await flood(from, reader, 1, undefined, 8, lines);
    const now = await kernelHeld(serverPort, stuck);
    still = now === held ? still + 1 : 0;
    held = now;
  }
  return { lines, held };
}
