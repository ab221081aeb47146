/**
 * client.ts's `--rounds` line, parsed: `20 rounds of 12 bytes on one
 * connection: median 0.262 ms per round trip (fastest 0.117, slowest 4.2)`.
 */
import assert from "node:assert/strict";

const ROUNDS_LINE =
  /^(\d+) rounds of (\d+) bytes on one connection: median (\d+\.\d+) ms per round trip \(fastest (\d+\.\d+), slowest (\d+\.\d+)\)$/;

/** The figures of stderr's one `--rounds` line (fails the test if not). */
export function roundsOf(stderr: string): {
  count: number;
  bytes: number;
  median: number;
  fastest: number;
  slowest: number;
  line: string;
} {
  const m = ROUNDS_LINE.exec(stderr.replace(/\n$/, ""));
  assert.ok(m, `not one --rounds line on stderr: ${JSON.stringify(stderr)}`);
  const [count, bytes, median, fastest, slowest] = m.slice(1).map(Number);
  return { count, bytes, median, fastest, slowest, line: stderr.trim() };
}
