/**
 * A listening script whose stdout nobody reads after its first line, as
 * under `| less` at a screenful, a suspended `| grep`, or a terminal paused
 * with Ctrl-S: the pipe (64 KiB on Linux) fills and stays full. Logging is
 * best effort, so the script must go on serving all the same.
 */
import {
  commandFor,
  LISTENING_LINE,
  OutputCollector,
  type SpawnOptions,
  withTimeout,
} from "./spawn.ts";

/** A script started by {@link startUnread}; `await using` kills it. */
export class UnreadScript implements AsyncDisposable {
  constructor(
    readonly child: Deno.ChildProcess,
    /** The port of the listening line, the one line we read. */
    readonly port: number,
    readonly stderr: OutputCollector,
    readonly stdout: ReadableStreamDefaultReader<Uint8Array>,
  ) {}

  /**
   * Send `signal` and wait for the exit, at most `timeoutMs` (then the
   * test fails: the script did not stop). stdout is still unread.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutMs = 20_000,
  ): Promise<Deno.CommandStatus> {
    this.child.kill(signal);
    return await withTimeout(
      this.child.status,
      timeoutMs,
      () =>
        `no exit within ${timeoutMs} ms of ${signal}; stderr:\n${this.stderr.text()}`,
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.child.status;
    await this.stdout.cancel().catch(() => {});
    await this.stderr.done;
  }
}

/**
 * Start `script` with stdout on a pipe, read its first line (the listening
 * line, for the port), and never read stdout again.
 */
export async function startUnread(
  script: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<UnreadScript> {
  const child = commandFor(script, args, options, { stdin: "null" }).spawn();
  const stderr = new OutputCollector(child.stderr);
  const reader = child.stdout.getReader();
  const unread = (port: number) =>
    new UnreadScript(child, port, stderr, reader);
  let text = "";
  try {
    const decoder = new TextDecoder();
    await withTimeout(
      (async () => {
        while (!text.includes("\n")) {
          const { value, done } = await reader.read();
          if (done) break;
          text += decoder.decode(value, { stream: true });
        }
      })(),
      20_000,
      () => `${script} printed no listening line within 20 s`,
    );
    const m = LISTENING_LINE.exec(text.split("\n")[0]);
    if (!m) {
      throw new Error(
        `${script}: expected a listening line, got ${
          JSON.stringify(text)
        }; stderr: ${stderr.text()}`,
      );
    }
    return unread(Number(m[3]));
  } catch (err) {
    await unread(0)[Symbol.asyncDispose]();
    throw err;
  }
}
