/**
 * lib/plumbing.ts, the one source of the plumbing `deno task sync` copies
 * into the scripts, tested once, in-process: the flag parsing every script
 * shares (unknown flags, missing and bad values, host and port in one),
 * addresses as the log lines print them, and which accept() failures
 * belong to one client. Each script's own tests keep one bad flag run as a
 * user runs it (exit 2, usage on stderr); shared_block_test.ts checks that
 * the copies in the scripts are this code.
 */
import assert from "node:assert/strict";
import {
  allowNetHost,
  explainListenError,
  formatAddr,
  isOneClientsFailure,
  MAX_TIMER_SECONDS,
  parseFlags,
  parseHostname,
  parseInteger,
  parseSeconds,
  UsageError,
} from "../lib/plumbing.ts";

/** The flags of a typical script: a value flag and a boolean one. */
const FLAGS = {
  port: { type: "string" },
  trace: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * `fn` throws a {@link UsageError} whose one-line message is `want` (or
 * matches it).
 */
function assertUsageError(fn: () => unknown, want: string | RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof UsageError, `not a UsageError: ${err}`);
    if (typeof want === "string") assert.equal(err.message, want);
    else assert.match(err.message, want);
    assert.doesNotMatch(err.message, /\n/, "one line");
    return true;
  });
}

Deno.test("parseFlags: --port N, --port=N, -h and a boolean flag parse", () => {
  const { values } = parseFlags(["--port", "80", "--trace", "-h"], FLAGS);
  assert.deepEqual({ ...values }, { port: "80", trace: true, help: true });
  assert.equal(parseFlags(["--port=-1"], FLAGS).values.port, "-1");
  assert.deepEqual(
    parseFlags(["hello", "world"], FLAGS, true).positionals,
    ["hello", "world"],
  );
});

Deno.test("parseFlags: each bad command line is a one-line usage error that says what is wrong", () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^unknown flag "--bogus"$/],
    [["--http"], /^unknown flag "--http"$/],
    [["--port"], /^--port needs a value$/],
    [["--trace=yes"], /^--trace takes no value$/],
    [
      ["--port", "-1"],
      /^--port does not take "-1" \(a value that starts with "-" is written --port=-1\)$/,
    ],
    [["stray"], /^unexpected argument "stray"$/],
  ];
  for (const [args, re] of cases) {
    assertUsageError(() => parseFlags(args, FLAGS), re);
  }
});

Deno.test("parseInteger: whole numbers in range only; the message names the flag, the range and the value", () => {
  assert.equal(parseInteger("--port", "0", 0, 65535), 0);
  assert.equal(parseInteger("--port", "65535", 0, 65535), 65535);
  assert.equal(parseInteger("--port", "08080", 0, 65535), 8080);
  for (
    const bad of ["70000", "-1", "abc", "", " 1", "+1", "1.5", "1e3", "0x50"]
  ) {
    assertUsageError(
      () => parseInteger("--port", bad, 0, 65535),
      `--port must be a whole number from 0 to 65535, not ${
        JSON.stringify(bad)
      }`,
    );
  }
  assertUsageError(
    () => parseInteger("--max-connections", "0", 1, 100_000),
    /^--max-connections must be a whole number from 1 to 100000, not "0"$/,
  );
  assertUsageError(
    () => parseInteger("--port", "99999999999999999999", 0, 65535),
    /must be a whole number/,
  );
});

Deno.test("parseSeconds: 0 up to the longest timer, fractions allowed; anything else is a usage error", () => {
  assert.equal(parseSeconds("--grace", "0"), 0);
  assert.equal(parseSeconds("--grace", "0.5"), 0.5);
  assert.equal(
    parseSeconds("--grace", String(MAX_TIMER_SECONDS)),
    MAX_TIMER_SECONDS,
  );
  for (
    const bad of ["abc", "-1", "", "1e3", ".5", String(MAX_TIMER_SECONDS + 1)]
  ) {
    assertUsageError(
      () => parseSeconds("--head-timeout", bad),
      /^--head-timeout must be a number of seconds from 0 to \d+ .*, not "/,
    );
  }
});

Deno.test("parseHostname: addresses and names pass, brackets come off; host and port in one says use --port", () => {
  assert.equal(parseHostname("127.0.0.1"), "127.0.0.1");
  assert.equal(parseHostname("::1"), "::1");
  assert.equal(parseHostname("[::1]"), "::1");
  assert.equal(parseHostname("localhost"), "localhost");
  assert.equal(parseHostname("fe80::1%lo"), "fe80::1%lo");
  for (const bad of ["127.0.0.1:8080", "[::1]:8080", "localhost:80"]) {
    assertUsageError(
      () => parseHostname(bad),
      `--hostname takes no port (${JSON.stringify(bad)}); use --port`,
    );
  }
  for (const bad of ["", "a b", "日本語", "$(true)", "[::1"]) {
    assertUsageError(
      () => parseHostname(bad),
      /^--hostname: not an address or name: /,
    );
  }
});

Deno.test("formatAddr and allowNetHost put IPv6 in brackets, IPv4 and names as they are", () => {
  assert.equal(
    formatAddr({ transport: "tcp", hostname: "127.0.0.1", port: 80 }),
    "127.0.0.1:80",
  );
  assert.equal(
    formatAddr({ transport: "udp", hostname: "::1", port: 9 }),
    "[::1]:9",
  );
  assert.equal(formatAddr({ hostname: "localhost", port: 0 }), "localhost:0");
  assert.equal(allowNetHost("::"), "[::]");
  assert.equal(allowNetHost("0.0.0.0"), "0.0.0.0");
});

Deno.test("explainListenError names the address and what to try for each kind of failure", () => {
  const where = "tcp 127.0.0.1:80";
  const cases: [unknown, RegExp][] = [
    [new Deno.errors.AddrInUse("x"), /already in use.*--port 0/],
    [new Deno.errors.NotCapable("x"), /--allow-net=127\.0\.0\.1$/],
    [new Deno.errors.PermissionDenied("x"), /below 1024/],
    [new Deno.errors.AddrNotAvailable("x"), /does not belong to this machine/],
    [
      new Error(
        "failed to lookup address information: Name or service not known",
      ),
      /"127\.0\.0\.1" does not resolve/,
    ],
  ];
  for (const [err, re] of cases) {
    const text = explainListenError(err, where, "127.0.0.1");
    assert.ok(text.includes(where), text);
    assert.match(text, re);
  }
});

Deno.test("isOneClientsFailure: a client's reset or abort before accept() is; a shortage of descriptors is not", () => {
  assert.ok(isOneClientsFailure(new Deno.errors.NotConnected("x")));
  assert.ok(isOneClientsFailure(new Deno.errors.ConnectionReset("x")));
  assert.ok(isOneClientsFailure(new Deno.errors.ConnectionAborted("x")));
  assert.ok(
    isOneClientsFailure(Object.assign(new Error("x"), { code: "ENOTCONN" })),
  );
  assert.ok(
    isOneClientsFailure(
      new Error("Transport endpoint is not connected (os error 107)"),
    ),
  );
  assert.ok(
    !isOneClientsFailure(new Error("Too many open files (os error 24)")),
  );
  assert.ok(
    !isOneClientsFailure(Object.assign(new Error("x"), { code: "EMFILE" })),
  );
  assert.ok(!isOneClientsFailure(undefined));
});
