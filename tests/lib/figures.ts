/**
 * Figures the stress tests print for the READMEs (memory, descriptors,
 * times): one line each, `TOPIC: text`. They are reports, never assertions.
 */

/** A printer of figure lines under `topic`: `figures("faults")("...")`. */
export function figures(topic: string): (text: string) => void {
  return (text) => console.log(`${topic}: ${text}`);
}
