/** Waiting in tests: pacing a client, and polling until a condition holds. */

/** Resolve after `ms` (pacing a slow client, never synchronisation). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Poll `condition` every `everyMs` until it holds; fail after `timeoutMs`.
 * Used instead of sleeping: it returns as soon as the server has caught up.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  message: () => string,
  everyMs = 50,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(message());
    await delay(everyMs);
  }
}
