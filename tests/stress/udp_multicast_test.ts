/**
 * udp.ts one to many, in network namespaces this file makes (root and
 * `ip`; skipped, saying why, elsewhere): hosts on one switch (a bridge in a
 * namespace of its own, as in `deno task lab --one-to-many`). What the lab
 * test (tests/stress/lab_one_to_many_test.ts) does not cover: an IPv6
 * group, the loopback flag on the sender and on the receiver of the same
 * host, --ttl 0, and the broadcast address of a subnet that does not end
 * in .255. Addresses: 198.18.0.0/15 (RFC 2544's benchmarking block) and,
 * for IPv6, 2001:2::/48 (its IPv6 twin, RFC 5180); groups 239.255.0.1 and
 * ff15::1. Every namespace is removed at the end, also when a test fails.
 */
import assert from "node:assert/strict";
import { assertNothingLeft, needsLab, snapshot } from "../lib/lab.ts";
import { type RunningScript, runScript, startScript } from "../lib/spawn.ts";
import { runTool as sh } from "../lib/tools.ts";
import { waitUntil } from "../lib/time.ts";

const PORT = 9000;
const GROUP4 = "239.255.0.1";
const GROUP6 = "ff15::1";
/** How long a send collects replies: a datagram on a veth takes microseconds. */
const COLLECT_MS = 1000;

/** One host: its namespace, its end of the cable, its addresses. */
interface Host {
  label: string;
  netns: string;
  dev: string;
  v4: string;
  v6: string;
}

/**
 * Hosts A, B, ... on one switch, in subnet 198.18.`net`.0/`prefix` and
 * 2001:2:0:`net`::/64. Each host has a route to 224.0.0.0/4 on its cable
 * (a real host's default route covers it; these have none); IPv6 puts
 * ff00::/8 there by itself.
 */
class Switched {
  readonly hosts: Host[];
  readonly netns: string[];
  #sw: string;
  #servers: RunningScript[] = [];

  constructor(labels: string[], readonly net: number, readonly prefix = 24) {
    const id = `udpmc-${Deno.pid}-${net}`;
    this.#sw = `${id}-s`;
    this.hosts = labels.map((label, i) => ({
      label,
      netns: `${id}-${label.toLowerCase()}`,
      dev: `eth${label.toLowerCase()}`,
      v4: `198.18.${net}.${i + 1}`,
      v6: `2001:2:0:${net}::${i + 1}`,
    }));
    this.netns = [this.#sw, ...this.hosts.map((h) => h.netns)];
  }

  async build(): Promise<void> {
    await ip("netns", "add", this.#sw);
    await ip("-n", this.#sw, "link", "add", "br0", "type", "bridge");
    await ip("-n", this.#sw, "link", "set", "br0", "up");
    for (const h of this.hosts) {
      const port = `port-${h.label.toLowerCase()}`;
      await ip("netns", "add", h.netns);
      // The cable is made in the switch, its other end put straight into
      // the host: nothing appears in this machine's own namespace.
      await ip(
        ...["-n", this.#sw, "link", "add", port, "type", "veth"],
        ...["peer", "name", h.dev, "netns", h.netns],
      );
      await ip("-n", this.#sw, "link", "set", port, "master", "br0");
      await ip("-n", this.#sw, "link", "set", port, "up");
      await ip("-n", h.netns, "link", "set", "lo", "up");
      await ip(
        "-n",
        h.netns,
        "addr",
        "add",
        `${h.v4}/${this.prefix}`,
        "dev",
        h.dev,
      );
      await ip(
        ...["-n", h.netns, "-6", "addr", "add", `${h.v6}/64`],
        ...["dev", h.dev, "nodad"],
      );
      await ip("-n", h.netns, "link", "set", h.dev, "up");
      await ip("-n", h.netns, "route", "add", "224.0.0.0/4", "dev", h.dev);
    }
    // IPv6 adds its multicast route when the link comes up: wait for it.
    for (const h of this.hosts) {
      await waitUntil(
        async () =>
          (await sh("ip", [
            "-n",
            h.netns,
            "-6",
            "route",
            "show",
            "table",
            "local",
          ]))
            .out.includes(`ff00::/8 dev ${h.dev}`),
        10_000,
        () => `no IPv6 multicast route in ${h.netns}`,
      );
    }
  }

  /** udp.ts serve in `host`, stopped by {@link remove}. */
  async serve(host: Host, args: string[]): Promise<RunningScript> {
    const server = await startScript("udp.ts", ["serve", ...args], {
      wrapper: ["ip", "netns", "exec", host.netns],
    });
    this.#servers.push(server);
    return server;
  }

  /** udp.ts send in `host`: its exit code, reply lines and summary. */
  async send(host: Host, args: string[], denoFlags?: string[]) {
    const r = await runScript(
      "udp.ts",
      ["send", ...args, "--timeout", `${COLLECT_MS}`, "hello"],
      {
        wrapper: ["ip", "netns", "exec", host.netns],
        denoFlags,
        timeoutMs: 30_000,
      },
    );
    return {
      code: r.code,
      stderr: r.stderr,
      /** Who answered, in the order printed ("198.18.1.2:9000"). */
      from: r.out.split("\n").filter((l) => l).map((l) => {
        const m = /^from (\S+): hello$/.exec(l);
        assert.ok(m, `not a reply line: ${JSON.stringify(l)}`);
        return m[1];
      }),
    };
  }

  /** Stop every server, remove every namespace (the switch's last). */
  async remove(): Promise<void> {
    await Promise.all(this.#servers.map((s) => s.stop("SIGTERM")));
    for (const ns of [...this.netns].reverse()) {
      await sh("ip", ["netns", "del", ns]);
    }
  }
}

async function ip(...args: string[]): Promise<void> {
  const r = await sh("ip", args);
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")}: ${r.err.trim()}`);
}

/** Build hosts on a switch, run `fn`, and leave nothing behind. */
async function withHosts(
  labels: string[],
  net: number,
  fn: (s: Switched) => Promise<void>,
  prefix = 24,
): Promise<void> {
  const before = await snapshot();
  const s = new Switched(labels, net, prefix);
  try {
    await s.build();
    await fn(s);
  } finally {
    await s.remove();
    await assertNothingLeft(before, { netns: s.netns, links: [] });
  }
}

/**
 * The datagrams a server logged, by the sender's address (no port), once
 * it has logged `count` (a log line may trail the reply it was written
 * before); more than `count` fails the comparison that follows.
 */
async function loggedFrom(
  server: RunningScript,
  count: number,
): Promise<string[]> {
  const from = () =>
    server.stdout.lines
      .map((l) => /^udp datagram .* remote (\S+):\d+ \d+ bytes/.exec(l)?.[1])
      .filter((x) => x !== undefined)
      .map((x) => x.replace(/^\[|\]$/g, ""));
  await waitUntil(
    () => from().length >= count,
    10_000,
    () => `${server.label} logged ${from().length} datagrams, not ${count}`,
  );
  return from();
}

Deno.test({
  ...needsLab(
    "udp.ts to an IPv6 group (ff15::1): one datagram from A reaches B and C, which joined, and not D; each reply comes from its member's address",
  ),
  async fn() {
    await withHosts(["A", "B", "C", "D"], 1, async (s) => {
      const [a, b, c, d] = s.hosts;
      const port = ["--port", `${PORT}`];
      const servers = await Promise.all([
        s.serve(b, ["--hostname", "::", ...port, "--join", GROUP6]),
        s.serve(c, ["--hostname", "::", ...port, "--join", GROUP6]),
        s.serve(d, ["--hostname", "::", ...port]),
      ]);
      // Joined before the listening line; the line saying so comes next.
      assert.equal(
        await servers[0].waitForLine(/^udp joined/),
        `udp joined group ${GROUP6}: datagrams to [${GROUP6}]:${PORT} come here`,
      );
      const r = await s.send(a, ["--hostname", GROUP6, ...port]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        r.from.toSorted(),
        [`[${b.v6}]:${PORT}`, `[${c.v6}]:${PORT}`],
      );
      assert.equal(
        r.stderr,
        `2 replies from 2 hosts within ${COLLECT_MS} ms (to the group udp [${GROUP6}]:${PORT})\n`,
      );
      assert.deepEqual(await loggedFrom(servers[0], 1), [a.v6]);
      assert.deepEqual(await loggedFrom(servers[1], 1), [a.v6]);
      assert.deepEqual(await loggedFrom(servers[2], 0), [], "D never joined");
    });
  },
});

Deno.test({
  ...needsLab(
    "udp.ts on Linux: the sender's --multicast-loopback alone decides whether its own host's members get the group's datagram, IPv4 and IPv6; serve's --multicast-loopback changes nothing here and says so",
  ),
  async fn() {
    await withHosts(["A", "B"], 2, async (s) => {
      const [a, b] = s.hosts;
      // In A two members, on two ports: one with serve --multicast-loopback,
      // one without; in B one on each port (the datagram did go out).
      const members = async (wildcard: string, group: string) => {
        const flagged = await s.serve(a, [
          ...["--hostname", wildcard, "--port", "0", "--join", group],
          "--multicast-loopback",
        ]);
        const plain = await s.serve(a, [
          ...["--hostname", wildcard, "--port", "0", "--join", group],
        ]);
        for (const m of [flagged, plain]) {
          await s.serve(b, [
            ...["--hostname", wildcard, "--port", `${m.port}`, "--join", group],
          ]);
        }
        return { flagged, plain };
      };
      for (
        const [wildcard, group, own, other] of [
          ["0.0.0.0", GROUP4, a.v4, b.v4],
          ["::", GROUP6, `[${a.v6}]`, `[${b.v6}]`],
        ]
      ) {
        const { flagged, plain } = await members(wildcard, group);
        assert.equal(
          await flagged.waitForLine(/^udp multicast loopback/),
          "udp multicast loopback on, which on Linux changes nothing here: " +
            "the sender's option decides whether its datagrams to the group " +
            "reach this host's members (udp.ts send --multicast-loopback)",
        );
        for (const server of [flagged, plain]) {
          const to = ["--hostname", group, "--port", `${server.port}`];
          const without = await s.send(a, to);
          assert.equal(without.code, 0, without.stderr);
          assert.deepEqual(
            without.from,
            [`${other}:${server.port}`],
            `send without --multicast-loopback: B only (${group})`,
          );
          const looped = await s.send(a, [...to, "--multicast-loopback"]);
          assert.equal(looped.code, 0, looped.stderr);
          assert.deepEqual(
            looped.from.toSorted(),
            [`${other}:${server.port}`, `${own}:${server.port}`].toSorted(),
            `send --multicast-loopback: A's member too (${group})`,
          );
        }
        // The member without the flag logged its datagram, and no loopback line.
        await plain.waitForLine(/^udp datagram /);
        assert.ok(
          !plain.stdout.text().includes("loopback"),
          plain.stdout.text(),
        );
      }
    });
  },
});

Deno.test({
  ...needsLab(
    "udp.ts send --ttl 0 keeps a group datagram on its host: with --multicast-loopback only the host's own member answers, without it nobody; --ttl 1 reaches the link",
  ),
  async fn() {
    await withHosts(["A", "B"], 3, async (s) => {
      const [a, b] = s.hosts;
      const join = [
        "--hostname",
        "0.0.0.0",
        "--port",
        `${PORT}`,
        "--join",
        GROUP4,
      ];
      const [inA, inB] = [await s.serve(a, join), await s.serve(b, join)];
      const to = ["--hostname", GROUP4, "--port", `${PORT}`];
      const here = await s.send(a, [
        ...to,
        "--ttl",
        "0",
        "--multicast-loopback",
      ]);
      assert.equal(here.code, 0, here.stderr);
      assert.deepEqual(here.from, [`${a.v4}:${PORT}`]);
      const none = await s.send(a, [...to, "--ttl", "0"]);
      assert.equal(none.code, 1);
      assert.equal(
        none.stderr,
        `error: no reply from udp ${GROUP4}:${PORT} within ${COLLECT_MS} ms\n`,
      );
      const link = await s.send(a, [
        ...to,
        "--ttl",
        "1",
        "--multicast-loopback",
      ]);
      assert.equal(link.code, 0, link.stderr);
      assert.deepEqual(
        link.from.toSorted(),
        [`${a.v4}:${PORT}`, `${b.v4}:${PORT}`],
      );
      assert.deepEqual(await loggedFrom(inA, 2), [a.v4, a.v4]);
      assert.deepEqual(await loggedFrom(inB, 1), [a.v4], "TTL 0 never left A");
    });
  },
});

Deno.test({
  ...needsLab(
    "udp.ts send to a /25's broadcast address (198.18.4.127) reaches every host on the subnet, the sender's own too, with --allow-sys=networkInterfaces; without it that address is taken for one host and the replies are not its",
  ),
  async fn() {
    await withHosts(["A", "B", "C"], 4, async (s) => {
      const [a, b, c] = s.hosts;
      const servers = await Promise.all(
        s.hosts.map((h) =>
          s.serve(h, ["--hostname", "0.0.0.0", "--port", `${PORT}`])
        ),
      );
      const to = ["--hostname", "198.18.4.127", "--port", `${PORT}`];
      const flags = ["--allow-net", "--unstable-net"];
      const all = await s.send(a, to, [
        ...flags,
        "--allow-sys=networkInterfaces",
      ]);
      assert.equal(all.code, 0, all.stderr);
      assert.deepEqual(
        all.from.toSorted(),
        [a, b, c].map((h) => `${h.v4}:${PORT}`),
      );
      assert.equal(
        all.stderr,
        `3 replies from 3 hosts within ${COLLECT_MS} ms (to the broadcast address udp 198.18.4.127:${PORT})\n`,
      );
      // Without the grant udp.ts cannot read the prefix: 198.18.4.127 looks
      // like one host's address, and replies from others are not taken.
      const one = await s.send(a, to, flags);
      assert.equal(one.code, 1);
      assert.match(one.stderr, /^error: no reply from udp 198\.18\.4\.127:/);
      for (const server of servers) {
        assert.deepEqual(await loggedFrom(server, 2), [a.v4, a.v4]);
      }
    }, 25);
  },
});
