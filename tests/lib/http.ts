/**
 * http.ts for tests: start it as the README does, and read its responses
 * as they came off the wire (status line, headers, the body's exact size).
 */
import { type RunningScript, startScript } from "./spawn.ts";

/** Every flag `http.ts --help` lists. */
export const HTTP_FLAGS = [
  "--hostname",
  "--port",
  "--max-connections",
  "--idle-timeout",
  "--head-timeout",
  "--quiet",
  "--trace",
  "--hex",
  "--help",
];

/** Start `http.ts --port 0` (plus `extra` flags), as the README runs it. */
export function startHttp(extra: string[] = []): Promise<RunningScript> {
  return startScript("http.ts", ["--port", "0", ...extra], {
    denoFlags: ["--allow-net=127.0.0.1"],
  });
}

/** A response split into its parts, as it came off the wire. */
export interface RawResponse {
  statusLine: string;
  /** The status code from the status line (0 if it has none). */
  status: number;
  /** Header names in lower case. */
  headers: Map<string, string>;
  body: string;
  /** The body's size in bytes (what Content-Length must say). */
  bodyBytes: number;
}

/** The parts of a raw response; throws saying why if it is not one. */
export function parseResponse(bytes: Uint8Array): RawResponse {
  const text = new TextDecoder().decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  if (end <= 0) {
    throw new Error(`no end of header block in ${JSON.stringify(text)}`);
  }
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`bad header line ${JSON.stringify(line)}`);
    headers.set(
      line.slice(0, colon).toLowerCase(),
      line.slice(colon + 1).trim(),
    );
  }
  const headBytes = new TextEncoder().encode(text.slice(0, end + 4)).length;
  return {
    statusLine,
    status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1] ?? 0),
    headers,
    body: text.slice(end + 4),
    bodyBytes: bytes.length - headBytes,
  };
}

/**
 * The status of a raw response, and what is wrong with its framing ("" if
 * nothing): a head, an HTTP/1.1 status line, `Connection: close`, and a
 * Content-Length that is exactly the body's size (0 body bytes for HEAD).
 */
export function framing(
  reply: Uint8Array,
  head: boolean,
): { status: number; problem: string } {
  let res: RawResponse;
  try {
    res = parseResponse(reply);
  } catch (err) {
    return { status: 0, problem: (err as Error).message.slice(0, 80) };
  }
  if (res.status === 0) {
    return { status: 0, problem: `status line ${res.statusLine.slice(0, 40)}` };
  }
  const length = res.headers.get("content-length");
  if (length === undefined || !/^\d+$/.test(length)) {
    return { status: 0, problem: "no Content-Length" };
  }
  if (res.headers.get("connection") !== "close") {
    return { status: 0, problem: "no Connection: close" };
  }
  const want = head ? 0 : Number(length);
  return {
    status: res.status,
    problem: res.bodyBytes === want
      ? ""
      : `body ${res.bodyBytes} bytes, want ${want}`,
  };
}
