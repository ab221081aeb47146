/**
 * lab.ts's command line, the fast part: help, a bad flag, and the refusals
 * where the lab cannot work (not root; lab.ts copied away from the scripts
 * it runs). Each refusal is one `error:` line, exit 1, and makes nothing.
 * The lab itself (root, namespaces) is tests/stress/lab_test.ts.
 */
import assert from "node:assert/strict";
import {
  assertOneErrorLine,
  LAB_FLAGS,
  projectPath,
  runScript,
} from "./lib/spawn.ts";
import { runTool as run } from "./lib/tools.ts";

async function netnsList(): Promise<string> {
  return (await run("ip", ["netns", "list"]).catch(() => ({ out: "" }))).out;
}

Deno.test("lab.ts --help prints the usage on stdout and exits 0", async () => {
  const r = await runScript("lab.ts", ["--help"], { denoFlags: LAB_FLAGS });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.out, /^usage: deno task lab/);
  assert.match(r.out, /198\.18\.0\.0\/15/);
  assert.equal(r.stderr, "");
});

Deno.test("lab.ts with an unknown flag is a usage error, exit 2", async () => {
  const r = await runScript("lab.ts", ["--bogus"], { denoFlags: LAB_FLAGS });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^error: unknown flag "--bogus"\n\nusage: /);
  assert.equal(r.out, "");
});

Deno.test("lab.ts without root refuses with the reason and the command to run, exit 1, and makes no namespace", async () => {
  const before = await netnsList();
  // As root, drop to nobody for this run; as anyone else, run it as is.
  const isRoot = (await run("id", ["-u"])).out.trim() === "0";
  for (const part of [[], ["--dead-peer"]]) {
    const deno = [
      Deno.execPath(),
      "run",
      ...LAB_FLAGS,
      projectPath("lab.ts"),
      ...part,
    ];
    const r = isRoot
      ? await run("setpriv", [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        ...deno,
      ])
      : await run(deno[0], deno.slice(1));
    assert.equal(r.code, 1, r.err);
    // The advice repeats the part asked for: `task lab --dead-peer`.
    const again = `task lab${part.map((p) => ` ${p}`).join("")}$`;
    assertOneErrorLine(
      r.err,
      new RegExp(`needs root.*user id \\d+.*run it as root: .*${again}`),
    );
    assert.equal(r.out, "");
  }
  assert.equal(await netnsList(), before);
});

Deno.test("lab.ts copied away from server.ts, client.ts and udp.ts says so, exit 1", async () => {
  const dir = (await run("mktemp", ["-d"])).out.trim();
  try {
    await run("cp", [projectPath("lab.ts"), dir]);
    const r = await runScript(`${dir}/lab.ts`, [], { denoFlags: LAB_FLAGS });
    assert.equal(r.code, 1, r.stderr);
    assertOneErrorLine(r.stderr, /server\.ts is not beside lab\.ts/);
  } finally {
    await run("rm", ["-rf", dir]);
  }
});

Deno.test("lab.ts in a folder whose path has a space and a non-ASCII letter finds its scripts", async () => {
  // The scripts' paths come from a file URL, where "My Projects" is
  // "My%20Projects": the lab must decode it. Then, not being root (or run
  // as nobody), the first refusal is "needs root", not "not beside".
  const top = (await run("mktemp", ["-d"])).out.trim();
  const dir = `${top}/My Projects/Übung`;
  try {
    // mkdir and cp, not Deno.mkdir: the test tasks grant no --allow-write.
    await run("mkdir", ["-p", dir]);
    await run("cp", [
      ...["lab.ts", "server.ts", "client.ts", "udp.ts"].map(projectPath),
      dir,
    ]);
    await run("chmod", ["-R", "a+rX", top]);
    const isRoot = (await run("id", ["-u"])).out.trim() === "0";
    const deno = [Deno.execPath(), "run", ...LAB_FLAGS, `${dir}/lab.ts`];
    const r = isRoot
      ? await run("setpriv", [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        ...deno,
      ])
      : await run(deno[0], deno.slice(1));
    assert.equal(r.code, 1, r.err);
    assertOneErrorLine(r.err, /needs root/);
  } finally {
    await run("rm", ["-rf", top]);
  }
});

Deno.test("lab.ts --help names the dead-peer and one-to-many runs", async () => {
  const r = await runScript("lab.ts", ["--help"], { denoFlags: LAB_FLAGS });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.out, /^usage: deno task lab \[--dead-peer \| --one-to-many\]/);
  assert.match(r.out, /^ {2}--dead-peer {2,}/m);
  assert.match(r.out, /^ {2}--one-to-many {2,}/m);
  assert.match(r.out, /239\.255\.0\.0\/16/);
});

Deno.test("lab.ts --dead-peer --one-to-many is a usage error (two runs), exit 2, and makes no namespace", async () => {
  const before = await netnsList();
  const r = await runScript("lab.ts", ["--dead-peer", "--one-to-many"], {
    denoFlags: LAB_FLAGS,
  });
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /^error: --dead-peer and --one-to-many are two separate runs: give one of them\n\nusage: /,
  );
  assert.equal(r.out, "");
  assert.equal(await netnsList(), before);
});

Deno.test("lab.ts --one-to-many beside server.ts, client.ts and udp.ts only says chat.ts is not beside it, exit 1", async () => {
  const dir = (await run("mktemp", ["-d"])).out.trim();
  try {
    await run("cp", [
      ...["lab.ts", "server.ts", "client.ts", "udp.ts"].map(projectPath),
      dir,
    ]);
    const before = await netnsList();
    const r = await runScript(`${dir}/lab.ts`, ["--one-to-many"], {
      denoFlags: LAB_FLAGS,
    });
    assert.equal(r.code, 1, r.stderr);
    assertOneErrorLine(r.stderr, /chat\.ts is not beside lab\.ts/);
    assert.equal(await netnsList(), before);
  } finally {
    await run("rm", ["-rf", dir]);
  }
});
