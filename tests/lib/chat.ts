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
