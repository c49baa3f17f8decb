/**
 * The host scripts run for real here: bash executes the rendered text. They
 * run with a PATH that holds only a directory this test builds: a few
 * coreutils linked in, and small recording stand-ins for the package
 * manager, the Docker daemon, cloud-init, sudo and the user tools. Nothing
 * on this machine's PATH (a real cloud-init, fuser or docker) can change
 * what a test sees, and each test can check what a script asked for.
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { defaultDaemonConfig, HETZNER_HOST_KEY_ROTATION, renderCloudInit, renderDockerInstallScript, renderHostKeyRotationScript, renderWaitReadyScript, type DockerInstallParams } from "../../../templates/host";

const PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
const PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey";

/** The only real programs the scripts and the stand-ins get: what a minimal Debian image has. */
const TOOLS = ["bash", "cat", "cmp", "date", "dirname", "basename", "env", "grep", "install", "mkdir", "mktemp", "rm", "sleep", "touch", "uname", "cp", "chmod"];
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BASH = which("bash");

function which(tool: string): string {
  const r = spawnSync("bash", ["-c", `command -v ${tool}`], { env: { PATH: SYSTEM_PATH }, encoding: "utf8" });
  const path = r.stdout.trim();
  if (r.status !== 0 || !path.startsWith("/")) throw new Error(`test setup: ${tool} not found on ${SYSTEM_PATH}`);
  return path;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Shims {
  bin: string;
  state: string;
  /** Adds or replaces a stand-in command. */
  add(name: string, body: string): void;
}

function shims(commands: Record<string, string>): Shims {
  const dir = mkdtempSync(join(tmpdir(), "synaxic-host-"));
  dirs.push(dir);
  const bin = join(dir, "bin");
  const state = join(dir, "state");
  mkdirSync(bin);
  mkdirSync(state);
  for (const t of TOOLS) symlinkSync(which(t), join(bin, t));
  const add = (name: string, body: string) => {
    const f = join(bin, name);
    writeFileSync(f, `#!${BASH}\nSTATE=${state}\nBIN=${bin}\necho "${name} $*" >> "$STATE/calls"\n${body}\n`);
    chmodSync(f, 0o755);
  };
  for (const [name, body] of Object.entries(commands)) add(name, body);
  return { bin, state, add };
}

/** Runs a script on stdin with only the shims' PATH; async, so that the tests of a describe.concurrent block wait side by side. */
function runScript(script: string, s: Shims, timeoutMs = 30_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(BASH, ["-s"], { env: { PATH: s.bin, TMPDIR: s.state, LC_ALL: "C" }, timeout: timeoutMs });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out, err }));
    child.stdin.end(script);
  });
}

const calls = (state: string) => (existsSync(join(state, "calls")) ? readFileSync(join(state, "calls"), "utf8").trim().split("\n").filter(Boolean) : []);
const resetCalls = (state: string) => writeFileSync(join(state, "calls"), "");

describe("cloud-init user data", () => {
  it("installs our host key (so it can be pinned) and turns password login off", () => {
    const text = renderCloudInit({ hostKeyPrivateOpenssh: PRIV, hostKeyPublicOpenssh: PUB });
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    const doc = parse(text) as { ssh_keys: Record<string, string>; ssh_pwauth: boolean; ssh_deletekeys: boolean };
    expect(doc.ssh_keys.ed25519_private).toBe(PRIV);
    expect(doc.ssh_keys.ed25519_public).toBe(PUB);
    expect(doc.ssh_pwauth).toBe(false);
    expect(doc.ssh_deletekeys).toBe(true);
    expect(text).toMatchSnapshot();
  });
  it("refuses keys of the wrong form", () => {
    expect(() => renderCloudInit({ hostKeyPrivateOpenssh: "-----BEGIN RSA PRIVATE KEY-----", hostKeyPublicOpenssh: PUB })).toThrow(/OpenSSH private key/);
    expect(() => renderCloudInit({ hostKeyPrivateOpenssh: PRIV, hostKeyPublicOpenssh: "ssh-rsa AAAA" })).toThrow(/ssh-ed25519/);
  });
});

describe.concurrent("readiness gate", () => {
  /** A cloud-init whose n-th `status` call prints the n-th entry (the last one from then on) and exits with its code. */
  const cloudInit = (answers: { text: string; code?: number }[]) =>
    [
      'n=$(grep -c "^cloud-init status" "$STATE/calls")',
      "case $n in",
      ...answers.map((a, i) => `  ${i === answers.length - 1 ? "*" : String(i + 1)}) printf '%b' '${a.text.replace(/\n/g, "\\n")}'; exit ${a.code ?? 0} ;;`),
      "esac",
    ].join("\n");

  it("passes at once on a host without cloud-init, and never looks for fuser or the dpkg lock", async ({ expect }) => {
    const s = shims({ fuser: "exit 0", lsof: "exit 0" });
    const r = await runScript(renderWaitReadyScript({ timeoutSeconds: 5 }), s);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^host ready: /m);
    expect(calls(s.state)).toEqual([]);
  });

  it("waits while cloud-init runs, and takes 'done' even when cloud-init exits 2 (done with recoverable errors)", async ({ expect }) => {
    const s = shims({
      "cloud-init": cloudInit([
        { text: "status: not started\n" },
        { text: "status: running\nextended_status: running\n" },
        { text: "status: done\nextended_status: degraded done\n", code: 2 },
      ]),
    });
    const r = await runScript(renderWaitReadyScript({ timeoutSeconds: 30 }), s);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^host ready: /m);
    expect(calls(s.state)).toEqual(["cloud-init status --long", "cloud-init status --long", "cloud-init status --long"]);
  });

  it("keeps waiting on 'error' while cloud-init still runs, then goes on with a warning", async ({ expect }) => {
    const s = shims({
      "cloud-init": cloudInit([
        { text: "status: error\nextended_status: error - running\n", code: 1 },
        { text: "status: error\nextended_status: error - done\n", code: 1 },
      ]),
    });
    const r = await runScript(renderWaitReadyScript({ timeoutSeconds: 30 }), s);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain("cloud-init finished with errors");
    expect(calls(s.state).length).toBe(2);
  });

  it("goes on after 'status: error' from a cloud-init without extended status (Debian 12's 22.4)", async ({ expect }) => {
    const s = shims({ "cloud-init": cloudInit([{ text: "status: error\n", code: 1 }]) });
    const r = await runScript(renderWaitReadyScript({ timeoutSeconds: 30 }), s);
    expect(r.code, r.err).toBe(0);
    expect(calls(s.state).length).toBe(1);
  });

  it("gives up after its timeout, saying what it waited for and what cloud-init last said", async ({ expect }) => {
    const s = shims({ "cloud-init": cloudInit([{ text: "status: running\n" }]) });
    const started = Date.now();
    const r = await runScript(renderWaitReadyScript({ timeoutSeconds: 3 }), s);
    expect(r.code).toBe(1);
    expect(r.err).toContain("host not ready after 3s: still waiting for cloud-init (last status: running)");
    // The deadline is in whole seconds (date +%s): started at 100.9 s, a 3 s gate's deadline is 103, reached after 2.1 s.
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("a cloud-init that says nothing is waited for too, and named in the failure", async ({ expect }) => {
    const s = shims({ "cloud-init": "exit 1" });
    const r = await runScript(renderWaitReadyScript({ timeoutSeconds: 2 }), s);
    expect(r.code).toBe(1);
    expect(r.err).toContain("still waiting for cloud-init (last status: none)");
  });

  it("refuses a timeout below one second", async ({ expect }) => {
    expect(() => renderWaitReadyScript({ timeoutSeconds: 0 })).toThrow(/timeoutSeconds must be at least 1/);
    expect(() => renderWaitReadyScript({ timeoutSeconds: Number.NaN })).toThrow(/timeoutSeconds/);
  });

  it("snapshot", async ({ expect }) => {
    expect(renderWaitReadyScript({ timeoutSeconds: 600 })).toMatchSnapshot();
  });
});

describe.concurrent("Docker install", () => {
  /**
   * A host in files: $STATE/installed once docker.io is installed, $STATE/dead
   * for a daemon that never answers, $STATE/uid for who runs the script,
   * $STATE/users for the accounts, $STATE/groups-<user> for their groups,
   * $STATE/group-docker once the docker group exists. apt-get installs
   * apparmor_parser into the PATH when asked for apparmor.
   */
  const host = (opts: { uid?: number; users?: string[] } = {}) => {
    const s = shims({
      docker: 'if [ -e "$STATE/installed" ] && [ ! -e "$STATE/dead" ]; then [ "$1" = version ] && echo 27.0.0; exit 0; fi; exit 1',
      "apt-get": [
        'for a in "$@"; do',
        '  case "$a" in',
        '    docker.io) touch "$STATE/installed" "$STATE/group-docker" ;;',
        "    apparmor) printf '#!/bin/sh\\nexit 0\\n' > \"$BIN/apparmor_parser\"; chmod 755 \"$BIN/apparmor_parser\" ;;",
        "  esac",
        "done",
      ].join("\n"),
      systemctl: "exit 0",
      sudo: '[ "$1" = -n ] && shift; exec "$@"',
      id: [
        'if [ "$#" -eq 1 ] && [ "$1" = -u ]; then cat "$STATE/uid"; exit 0; fi',
        'user=${!#}',
        'grep -qx "$user" "$STATE/users" 2>/dev/null || { echo "id: $user: no such user" >&2; exit 1; }',
        'case "$1" in -u) echo 1000 ;; -nG) echo "$user $(cat "$STATE/groups-$user" 2>/dev/null)" ;; esac',
      ].join("\n"),
      usermod: '[ "$1" = -aG ] && printf " %s" "$2" >> "$STATE/groups-$3"',
      getent: '[ "$1" = group ] && [ -e "$STATE/group-$2" ]',
      groupadd: 'touch "$STATE/group-${!#}"',
    });
    writeFileSync(join(s.state, "uid"), `${opts.uid ?? 0}\n`);
    writeFileSync(join(s.state, "apparmor-enabled"), "Y\n");
    writeFileSync(join(s.state, "users"), `${["root", ...(opts.users ?? [])].join("\n")}\n`);
    return s;
  };
  const params = (s: Shims, extra: Partial<DockerInstallParams> = {}): DockerInstallParams => ({
    daemonConfig: defaultDaemonConfig(),
    startTimeoutSeconds: 5,
    daemonJsonPath: join(s.state, "etc", "docker", "daemon.json"),
    apparmorEnabledFile: join(s.state, "apparmor-enabled"),
    sshUser: "root",
    ...extra,
  });
  const aptCalls = (state: string) => calls(state).filter((c) => c.startsWith("apt-get"));

  it("installs docker.io with AppArmor's parser, waiting for apt's lock, writes daemon.json, restarts; a second run changes nothing", async ({ expect }) => {
    const s = host();
    const script = renderDockerInstallScript(params(s));
    const first = await runScript(script, s);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain("docker: installing");
    expect(first.out).toContain("docker: ready");
    expect(aptCalls(s.state)).toEqual([
      "apt-get -o DPkg::Lock::Timeout=300 update -qq",
      "apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io apparmor",
    ]);
    expect(calls(s.state)).toContain("systemctl restart docker");
    expect(JSON.parse(readFileSync(params(s).daemonJsonPath!, "utf8"))).toEqual(defaultDaemonConfig());

    resetCalls(s.state);
    const second = await runScript(script, s);
    expect(second.code, second.err).toBe(0);
    expect(second.out).toContain("docker: already installed (27.0.0)");
    expect(calls(s.state).filter((c) => /^(apt-get|systemctl|usermod|groupadd)/.test(c))).toEqual([]);
  });

  it("the lock wait is configurable", async ({ expect }) => {
    const s = host();
    const r = await runScript(renderDockerInstallScript(params(s, { aptLockTimeoutSeconds: 42 })), s);
    expect(r.code, r.err).toBe(0);
    expect(aptCalls(s.state).every((c) => c.startsWith("apt-get -o DPkg::Lock::Timeout=42 "))).toBe(true);
    expect(() => renderDockerInstallScript(params(s, { aptLockTimeoutSeconds: 0 }))).toThrow(/lockTimeoutSeconds must be a positive whole number/);
  });

  it("skips apt altogether when Docker answers and AppArmor's parser is there", async ({ expect }) => {
    const s = host();
    writeFileSync(join(s.state, "installed"), "");
    s.add("apparmor_parser", "exit 0");
    const r = await runScript(renderDockerInstallScript(params(s)), s);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("docker: already installed (27.0.0)");
    expect(aptCalls(s.state)).toEqual([]);
  });

  it("installs only AppArmor's parser, and restarts Docker, when Docker answers without it", async ({ expect }) => {
    const s = host();
    writeFileSync(join(s.state, "installed"), "");
    mkdirSync(join(s.state, "etc", "docker"), { recursive: true });
    writeFileSync(params(s).daemonJsonPath!, `${JSON.stringify(defaultDaemonConfig(), null, 2)}\n`);
    const r = await runScript(renderDockerInstallScript(params(s)), s);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("installing AppArmor's parser");
    expect(aptCalls(s.state)).toEqual(["apt-get -o DPkg::Lock::Timeout=300 update -qq", "apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends apparmor"]);
    expect(calls(s.state)).toContain("systemctl restart docker");
  });

  it("where the kernel has no AppArmor (moby's HostSupports), neither installs nor asks for the parser", async ({ expect }) => {
    const s = host();
    writeFileSync(join(s.state, "apparmor-enabled"), "N\n");
    const fresh = await runScript(renderDockerInstallScript(params(s)), s);
    expect(fresh.code, fresh.err).toBe(0);
    expect(aptCalls(s.state)).toEqual(["apt-get -o DPkg::Lock::Timeout=300 update -qq", "apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io"]);
    resetCalls(s.state);
    const again = await runScript(renderDockerInstallScript(params(s)), s);
    expect(again.code, again.err).toBe(0);
    expect(aptCalls(s.state)).toEqual([]);
    expect(calls(s.state)).not.toContain("systemctl restart docker");
  });

  it("retries apt-get while another apt holds a lock it does not wait for (the lists lock)", async ({ expect }) => {
    const s = host();
    s.add(
      "apt-get",
      [
        'n=$(grep -c "^apt-get .* update" "$STATE/calls")',
        'if [ "$1 $2 $3" = "-o DPkg::Lock::Timeout=300 update" ] && [ "$n" -le 2 ]; then',
        '  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2',
        '  echo "E: Unable to lock directory /var/lib/apt/lists/" >&2; exit 100',
        "fi",
        'for a in "$@"; do [ "$a" = docker.io ] && touch "$STATE/installed" "$STATE/group-docker"; done; exit 0',
      ].join("\n"),
    );
    const r = await runScript(renderDockerInstallScript(params(s)), s);
    expect(r.code, r.err).toBe(0);
    expect(aptCalls(s.state).filter((c) => c.endsWith("update -qq")).length).toBe(3);
    expect(aptCalls(s.state).filter((c) => c.includes(" install ")).length).toBe(1);
  });

  it("gives up on a lock held past the timeout, and fails at once on any other apt error", async ({ expect }) => {
    const locked = host();
    locked.add("apt-get", 'echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2; exit 100');
    const started = Date.now();
    const r = await runScript(renderDockerInstallScript(params(locked, { aptLockTimeoutSeconds: 3 })), locked);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("apt-get update -qq: the package manager stayed locked for 3s");
    expect(r.err).toContain("It is held by process 4242");
    expect(Date.now() - started).toBeLessThan(10_000);

    const broken = host();
    broken.add("apt-get", 'if [ "$3" = install ]; then echo "E: Unable to locate package docker.io" >&2; exit 100; fi');
    const b = await runScript(renderDockerInstallScript(params(broken)), broken);
    expect(b.code).not.toBe(0);
    expect(b.err).toContain("E: Unable to locate package docker.io");
    expect(aptCalls(broken.state).filter((c) => c.includes(" install ")).length).toBe(1);
  });

  it("puts a non-root SSH user into the docker group once, through sudo, and says so; a re-run leaves it", async ({ expect }) => {
    const s = host({ uid: 1000, users: ["deploy"] });
    const script = renderDockerInstallScript(params(s, { sshUser: "deploy" }));
    const first = await runScript(script, s);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain("docker: added deploy to the docker group");
    expect(calls(s.state)).toContain("sudo -n usermod -aG docker deploy");
    expect(calls(s.state).filter((c) => c.startsWith("sudo -n env LC_ALL=C apt-get -o DPkg::Lock::Timeout=300 ")).length).toBe(2);

    resetCalls(s.state);
    const second = await runScript(script, s);
    expect(second.code, second.err).toBe(0);
    expect(second.out).toContain("docker: deploy is already in the docker group");
    expect(calls(s.state).filter((c) => c.startsWith("usermod"))).toEqual([]);
    expect(readFileSync(join(s.state, "groups-deploy"), "utf8").trim()).toBe("docker");
  });

  it("creates the docker group when Docker came without one, and restarts the daemon so its socket gets that group", async ({ expect }) => {
    const s = host({ users: ["deploy"] });
    writeFileSync(join(s.state, "installed"), "");
    s.add("apparmor_parser", "exit 0");
    mkdirSync(join(s.state, "etc", "docker"), { recursive: true });
    writeFileSync(params(s).daemonJsonPath!, `${JSON.stringify(defaultDaemonConfig(), null, 2)}\n`);
    const r = await runScript(renderDockerInstallScript(params(s, { sshUser: "deploy" })), s);
    expect(r.code, r.err).toBe(0);
    expect(calls(s.state)).toEqual(expect.arrayContaining(["groupadd --system docker", "usermod -aG docker deploy", "systemctl restart docker"]));
  });

  it("leaves root alone: no group lookups, no usermod", async ({ expect }) => {
    const s = host();
    const r = await runScript(renderDockerInstallScript(params(s, { sshUser: "root" })), s);
    expect(r.code, r.err).toBe(0);
    expect(calls(s.state).filter((c) => /^(usermod|groupadd|getent)|^id .*root/.test(c))).toEqual([]);
    expect(r.out).not.toContain("docker group");
  });

  it("fails clearly when the SSH user does not exist on the host", async ({ expect }) => {
    const s = host();
    const r = await runScript(renderDockerInstallScript(params(s, { sshUser: "deploy" })), s);
    expect(r.code).toBe(1);
    expect(r.err).toContain("docker: the SSH user deploy does not exist on this host");
    expect(calls(s.state).filter((c) => c.startsWith("usermod"))).toEqual([]);
  });

  it("refuses an SSH user name that is not a Unix user name", async ({ expect }) => {
    const s = host();
    for (const bad of ["", "Deploy", "-rf", "a b", "deploy;id", "x".repeat(33), "9lives", "dé"]) {
      expect(() => renderDockerInstallScript(params(s, { sshUser: bad })), bad).toThrow(/renderDockerInstallScript: sshUser .* is not a Unix user name/);
    }
    for (const good of ["deploy", "_svc", "ops-1", "a".repeat(32)]) expect(() => renderDockerInstallScript(params(s, { sshUser: good }))).not.toThrow();
  });

  it("changed daemon settings restart Docker without reinstalling it", async ({ expect }) => {
    const s = host();
    s.add("apparmor_parser", "exit 0");
    writeFileSync(join(s.state, "installed"), "");
    writeFileSync(join(s.state, "daemon.json"), "{}\n");
    const r = await runScript(renderDockerInstallScript(params(s, { daemonJsonPath: join(s.state, "daemon.json") })), s);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("daemon.json updated");
    expect(aptCalls(s.state)).toEqual([]);
    expect(calls(s.state)).toContain("systemctl restart docker");
  });

  it("fails with a clear message when the daemon never answers", async ({ expect }) => {
    const s = host();
    writeFileSync(join(s.state, "dead"), "");
    const r = await runScript(renderDockerInstallScript(params(s, { startTimeoutSeconds: 2, daemonJsonPath: join(s.state, "d.json") })), s);
    expect(r.code).toBe(1);
    expect(r.err).toContain("docker: daemon did not answer within 2s");
  });

  it("snapshot", async ({ expect }) => {
    expect(renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 120, sshUser: "deploy" })).toMatchSnapshot();
  });
});

// Run against a real sshd in test/integration/host-key-rotation.test.ts.
describe("host key rotation", () => {
  it("snapshot (the Hetzner defaults)", () => {
    expect(renderHostKeyRotationScript(HETZNER_HOST_KEY_ROTATION)).toMatchSnapshot();
  });

  it("prints only through its last line: every other message goes to stderr", () => {
    const script = renderHostKeyRotationScript(HETZNER_HOST_KEY_ROTATION);
    const toStdout = script.split("\n").filter((l) => /\b(echo|printf)\b/.test(l) && !/>&2|> "\$|>&2$/.test(l) && !l.includes("$(printf"));
    expect(toStdout).toEqual([`printf '%s %s\\n' "$type" "$body"`]);
    expect(script.trimEnd().split("\n").at(-1)).toBe(`printf '%s %s\\n' "$type" "$body"`);
    expect(script).toContain("systemctl reload ssh >&2");
  });

  it.each([
    ["keyPath", { keyPath: "etc/key" }],
    ["dropInPath", { dropInPath: "/etc/ssh/sshd_config.d/x; rm -rf /" }],
    ["dropInPath", { dropInPath: "/etc/ssh/sshd_config.d/synaxic" }],
    ["sshdConfigPath", { sshdConfigPath: "/etc/ssh/sshd config" }],
    ["reloadArgv", { reloadArgv: [] }],
  ])("refuses a bad %s", (name, change) => {
    expect(() => renderHostKeyRotationScript({ ...HETZNER_HOST_KEY_ROTATION, ...change })).toThrow(name);
  });

  it("quotes the reload command with the project's quoting helper", () => {
    expect(renderHostKeyRotationScript({ ...HETZNER_HOST_KEY_ROTATION, reloadArgv: ["sh", "-c", 'kill -HUP "$(cat /run/sshd.pid)"'] })).toContain(`sh -c 'kill -HUP "$(cat /run/sshd.pid)"' >&2`);
  });
});
