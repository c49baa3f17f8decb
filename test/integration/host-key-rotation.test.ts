/**
 * The host key rotation (templates/host.ts, renderHostKeyRotationScript)
 * against a real sshd, run over SSH as the program runs it.
 *
 * The "vps" host is a network namespace of this test (TestNet: its address
 * on the test's own bridge) with a mount namespace of its own, in which
 * /etc/ssh is a directory of this test (bind-mounted) and /run a fresh
 * tmpfs. There, sshd runs as on a Debian server after cloud-init: Debian's
 * layout (sshd_config that includes sshd_config.d/*.conf and names no
 * HostKey) and one key at /etc/ssh/ssh_host_ed25519_key, the one cloud-init
 * installs from the user data. The script runs with the defaults the
 * program uses on Hetzner (HETZNER_HOST_KEY_ROTATION) except the reload:
 * there is no systemd here, so it sends SIGHUP itself, which is what
 * Debian's ssh.service ExecReload does after `sshd -t`.
 *
 * The client is this machine's ssh with host key checking on and only a
 * known_hosts file of the test: the way the program pins a key.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { HETZNER_HOST_KEY_ROTATION, renderHostKeyRotationScript } from "../../templates/host";
import { sh } from "../../lib/shell";

let net: TestNet;
let vps: Host;
let dir: string;
let etcSsh: string;
let operatorKey: string;
let oldKey: string;

const MARK = "synaxic-test-etc-ssh";

const script = renderHostKeyRotationScript({ ...HETZNER_HOST_KEY_ROTATION, reloadArgv: ["sh", "-c", 'kill -HUP "$(cat /run/sshd.pid)"'] });

function keygen(path: string): string {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path]);
  return readFileSync(`${path}.pub`, "utf8").trim().split(/\s+/).slice(0, 2).join(" ");
}

/** ssh to the vps as root, with `pinned` as the only key it trusts. */
function ssh(pinned: string, argv: string[], input = ""): Promise<{ code: number; stdout: string; stderr: string }> {
  const knownHosts = join(dir, `known_hosts-${Math.random().toString(36).slice(2)}`);
  writeFileSync(knownHosts, `${vps.ip} ${pinned}\n`);
  const args = [
    "-F", "/dev/null",
    "-i", operatorKey,
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", `UserKnownHostsFile=${knownHosts}`,
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5",
    `root@${vps.ip}`,
    sh(argv),
  ];
  return new Promise((resolve, reject) => {
    const p = spawn("ssh", args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    p.stdin.on("error", () => undefined);
    p.stdin.end(input);
  });
}

beforeAll(async () => {
  net = await TestNet.create(["vps"]);
  vps = net.host("vps");
  dir = net.mkdir("hostkey");
  etcSsh = join(dir, "etc-ssh");
  mkdirSync(join(etcSsh, "sshd_config.d"), { recursive: true, mode: 0o755 });
  writeFileSync(join(etcSsh, MARK), "");
  operatorKey = join(dir, "operator");
  writeFileSync(join(dir, "authorized_keys"), `${keygen(operatorKey)}\n`, { mode: 0o600 });
  oldKey = keygen(join(etcSsh, "ssh_host_ed25519_key"));
  writeFileSync(
    join(etcSsh, "sshd_config"),
    [
      // Debian's sshd_config: the drop-ins first, HostKey lines commented out.
      "Include /etc/ssh/sshd_config.d/*.conf",
      "#HostKey /etc/ssh/ssh_host_ed25519_key",
      `ListenAddress ${vps.ip}`,
      "Port 22",
      "PidFile /run/sshd.pid",
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "",
    ].join("\n"),
  );
  // sshd starts only once /etc/ssh is this test's directory (its mark is
  // there): nothing of this machine's /etc/ssh is read or changed.
  const boot = [
    "set -e",
    "mount --make-rprivate /",
    `mount --bind ${sh([etcSsh])} /etc/ssh`,
    `test -e /etc/ssh/${MARK}`,
    "mount -t tmpfs -o mode=0755 tmpfs /run",
    "mkdir -p /run/sshd",
    "exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config",
  ].join("\n");
  vps.spawnDaemon("sshd", ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", boot]);
  await waitFor("sshd with the cloud-init key", async () => (await ssh(oldKey, ["true"])).code === 0, 20_000, 200);
}, 60_000);

afterAll(async () => {
  await net?.destroy();
});

describe("host key rotation against a real sshd", () => {
  let rotated = "";

  it("runs over SSH with the cloud-init key pinned and prints only the new public key", async () => {
    const r = await ssh(oldKey, ["bash", "-s"], script);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+={0,3}\n$/);
    rotated = r.stdout.trim();
    expect(rotated).not.toBe(oldKey);
    expect(r.stdout).not.toContain("PRIVATE KEY");
    // The key was made on the host: its private half is in the host's /etc/ssh only.
    expect(readFileSync(join(etcSsh, "synaxic_host_ed25519_key"), "utf8")).toContain("OPENSSH PRIVATE KEY");
    expect(readFileSync(join(etcSsh, "synaxic_host_ed25519_key.pub"), "utf8").trim()).toBe(rotated);
    expect(readFileSync(join(etcSsh, "sshd_config.d", "00-synaxic-host-key.conf"), "utf8")).toBe("HostKey /etc/ssh/synaxic_host_ed25519_key\n");
  }, 90_000);

  it("after the reload a client pinning the old key is refused, and one pinning the printed key connects", async () => {
    expect(rotated).not.toBe("");
    // sshd re-executes itself on SIGHUP: wait until it answers with the new key.
    await waitFor("sshd with the rotated key", async () => (await ssh(rotated, ["true"])).code === 0, 20_000, 200);
    const old = await ssh(oldKey, ["true"]);
    expect(old.code).not.toBe(0);
    expect(old.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    const now = await ssh(rotated, ["cat", "/etc/ssh/synaxic_host_ed25519_key.pub"]);
    expect(now.code, now.stderr).toBe(0);
    expect(now.stdout.trim()).toBe(rotated);
  }, 60_000);

  it("offers no other host key: a client that accepts any key sees only the rotated one", async () => {
    const scan = execFileSync("ssh-keyscan", ["-T", "5", vps.ip], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    const keys = scan.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(/\s+/).slice(1, 3).join(" "));
    expect(keys).toEqual([rotated]);
  }, 30_000);

  it("a second run is a no-op that prints the same key (no new key, no reload)", async () => {
    const before = readFileSync(join(etcSsh, "synaxic_host_ed25519_key"), "utf8");
    const r = await ssh(rotated, ["bash", "-s"], script);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${rotated}\n`);
    expect(r.stderr).toContain("already rotated");
    expect(readFileSync(join(etcSsh, "synaxic_host_ed25519_key"), "utf8")).toBe(before);
    // Still the same key afterwards.
    expect((await ssh(rotated, ["true"])).code).toBe(0);
  }, 60_000);

  it("reloads nothing when sshd -t refuses the configuration, and takes its new drop-in out again", async () => {
    const dropIn = join(etcSsh, "sshd_config.d", "00-synaxic-host-key.conf");
    const broken = renderHostKeyRotationScript({ ...HETZNER_HOST_KEY_ROTATION, dropInPath: "/etc/ssh/sshd_config.d/10-other.conf", reloadArgv: ["sh", "-c", "echo reloaded-anyway >&2; exit 1"] });
    // An option sshd does not know makes `sshd -t` fail (another drop-in, as an operator's mistake would be).
    writeFileSync(join(etcSsh, "sshd_config.d", "20-bad.conf"), "NoSuchOption yes\n");
    const r = await ssh(rotated, ["bash", "-s"], broken);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("sshd -t refused");
    expect(r.stderr).not.toContain("reloaded-anyway");
    expect(existsSync(join(etcSsh, "sshd_config.d", "10-other.conf"))).toBe(false);
    expect(readFileSync(dropIn, "utf8")).toBe("HostKey /etc/ssh/synaxic_host_ed25519_key\n");
    // The running sshd still offers the rotated key.
    rmSync(join(etcSsh, "sshd_config.d", "20-bad.conf"), { force: true });
    expect((await ssh(rotated, ["true"])).code).toBe(0);
  }, 60_000);
});
