/**
 * The first-boot host key rotation on Hetzner hosts (components/Host.ts,
 * rotateHostKey): which connection each command and the Docker provider pin,
 * what the stack exports, and what the rotation command may never re-run on.
 * The mocks (harness.ts) make the rotation command print
 * "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5Rotated<tag>", as the real script prints
 * the key it generated on the host.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { findLeaks, type RunResult } from "./harness";
import { runLocal, runMain, runReplica } from "./fixtures";
import { HOST_KEY_ROTATION_IGNORED, parseRotatedHostKey } from "../../components/Host";
import { HETZNER_HOST_KEY_ROTATION, renderHostKeyRotationScript } from "../../templates/host";

const REMOTE = "command:remote:Command";
const ROTATED = /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5Rotated[0-9a-f]{16}$/;

type AnyRun = RunResult<Record<string, unknown>>;

function knownHostsKey(sshOpts: string[]): string {
  const opt = sshOpts.find((o) => o.startsWith("KnownHostsCommand="));
  if (!opt) throw new Error("no KnownHostsCommand in the Docker SSH options");
  return opt.split(" ").slice(2).join(" ");
}

describe("a Hetzner main host", () => {
  let run: AnyRun;
  let cloudInitKey: string;
  let rotated: string;
  beforeAll(async () => {
    run = (await runMain(1)) as unknown as AnyRun;
    const server = run.one("hcloud:index/server:Server", "main-server");
    const m = /ed25519_public: (ssh-ed25519 \S+)/.exec(String(server.inputs.userData));
    cloudInitKey = m![1]!;
    rotated = String(run.values.hostKey);
  }, 120_000);

  it("has one rotation command, which connects to the server as root with the cloud-init key pinned", () => {
    const rotations = run.of(REMOTE).filter((r) => r.name.endsWith("-host-key-rotate"));
    expect(rotations.map((r) => r.name)).toEqual(["main-host-key-rotate"]);
    const conn = rotations[0]!.inputs.connection as Record<string, unknown>;
    expect(conn).toMatchObject({ host: "203.0.113.11", port: 22, user: "root", hostKey: cloudInitKey, dialErrorLimit: 40, perDialTimeout: 10 });
    expect(cloudInitKey).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[0-9a-f]{16}$/);
    // The connection (it holds the operator's key) stays encrypted in state.
    expect(rotations[0]!.raw.connection).toHaveProperty("value");
  });

  it("runs the rendered script on stdin, is replaced only with the server, and never updates (no delete command either)", () => {
    const r = run.one(REMOTE, "main-host-key-rotate");
    expect(r.inputs.stdin).toBe(renderHostKeyRotationScript(HETZNER_HOST_KEY_ROTATION));
    expect(r.inputs.create).toMatch(/^timeout --kill-after=10 \d+ bash -s$/);
    expect(r.inputs.delete).toBeUndefined();
    expect(r.inputs.triggers).toEqual(["3001"]);
    expect(r.opts.ignoreChanges).toEqual(HOST_KEY_ROTATION_IGNORED);
    // Everything but the server's address and the triggers.
    for (const p of ["create", "update", "stdin", "connection.privateKey", "connection.hostKey"]) expect(r.opts.ignoreChanges).toContain(p);
    expect(r.opts.ignoreChanges).not.toContain("connection");
    expect(r.opts.ignoreChanges).not.toContain("connection.host");
    expect(r.opts.ignoreChanges).not.toContain("triggers");
  });

  it("every other command and the Docker provider pin the rotated key, never the cloud-init key", () => {
    expect(rotated).toMatch(ROTATED);
    expect(rotated).not.toBe(cloudInitKey);
    const others = run.of(REMOTE).filter((r) => r.name !== "main-host-key-rotate");
    expect(others.length).toBeGreaterThan(10);
    for (const r of others) expect((r.inputs.connection as { hostKey: string }).hostKey, r.name).toBe(rotated);
    const providers = run.of("pulumi:providers:docker");
    expect(providers.length).toBeGreaterThan(0);
    for (const p of providers) {
      // Provider inputs reach the engine as JSON text.
      const opts = (typeof p.inputs.sshOpts === "string" ? JSON.parse(p.inputs.sshOpts) : p.inputs.sshOpts) as string[];
      expect(knownHostsKey(opts), p.name).toBe(rotated);
      expect(opts.join(" ")).not.toContain(cloudInitKey.split(" ")[1]);
    }
  });

  it("exports the rotated key as the stack's hostKey (the status CLI and fences pin it)", () => {
    expect(run.values.hostKey).toBe(rotated);
  });

  it("puts nothing secret in the rotation's command line, script or printed key", () => {
    const r = run.one(REMOTE, "main-host-key-rotate");
    const printed = `${rotated}\n`;
    expect(findLeaks({ create: r.inputs.create, stdin: r.inputs.stdin, stdout: printed }, run.secretValues)).toEqual([]);
    expect(String(r.inputs.stdin)).not.toMatch(/PRIVATE KEY/);
    expect(printed).not.toMatch(/PRIVATE KEY/);
    // Its output is a public key and is logged as such (the connection, which holds the operator's key, stays secret).
    expect(r.opts.additionalSecretOutputs).not.toContain("stdout");
    expect(r.inputs.logging).toBe("stdoutAndStderr");
  });

  it("the readiness gate, the first command on the host, waits for the rotation", () => {
    // Its connection is built from the rotation's stdout: Pulumi orders it after the rotation.
    expect((run.one(REMOTE, "main-ready").inputs.connection as { hostKey: string }).hostKey).toBe(rotated);
  });
});

describe("a Hetzner replica host", () => {
  it("rotates its own key and pins it; main's hosts pin main's", async () => {
    const { main, replica } = await runReplica("replica-1", "10.10.0.3");
    const r = replica as unknown as AnyRun;
    expect(r.of(REMOTE).filter((c) => c.name.endsWith("-host-key-rotate")).map((c) => c.name)).toEqual(["replica-1-host-key-rotate"]);
    expect(r.values.hostKey).toMatch(ROTATED);
    expect(r.values.hostKey).not.toBe((main as unknown as AnyRun).values.hostKey);
    for (const c of r.of(REMOTE).filter((x) => !x.name.endsWith("-host-key-rotate"))) expect((c.inputs.connection as { hostKey: string }).hostKey, c.name).toBe(r.values.hostKey);
  }, 120_000);
});

describe("hosts without the rotation", () => {
  it("an existing host pins the configured key and has no rotation command", async () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExistingHostKey deploy@main";
    const run = (await runMain(1, {
      "synaxic:hostProvider": "existing",
      "synaxic:sshHost": "203.0.113.10",
      "synaxic:sshUser": "deploy",
      "synaxic:sshHostKey": key,
      "synaxic:cpus": "8",
      "synaxic:memoryMiB": "32768",
    })) as unknown as AnyRun;
    expect(run.of(REMOTE).filter((r) => r.name.includes("host-key-rotate"))).toEqual([]);
    expect(run.values.hostKey).toBe(key);
    for (const r of run.of(REMOTE)) expect((r.inputs.connection as { hostKey: string }).hostKey, r.name).toBe(key);
  }, 120_000);

  it("a local stack has no remote command at all", async () => {
    const run = (await runLocal(1)) as unknown as AnyRun;
    expect(run.of(REMOTE)).toEqual([]);
    expect(run.of("command:local:Command").filter((r) => r.name.includes("host-key-rotate"))).toEqual([]);
  }, 120_000);
});

describe("parseRotatedHostKey", () => {
  it("takes one ed25519 public key line", () => {
    expect(parseRotatedHostKey("h", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc+/=\n")).toBe("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc+/=");
  });
  it.each([
    ["empty", ""],
    ["two keys", "ssh-ed25519 AAAA\nssh-ed25519 BBBB\n"],
    ["another type", "ssh-rsa AAAAB3NzaC1yc2E\n"],
    ["a comment", "ssh-ed25519 AAAA root@host\n"],
    ["a private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"],
  ])("refuses %s", (_, out) => {
    expect(() => parseRotatedHostKey("h", out)).toThrow(/not one ssh-ed25519 public key/);
  });
});
