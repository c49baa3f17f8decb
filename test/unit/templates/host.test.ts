/**
 * The host scripts run for real here: bash executes the rendered text. The
 * package manager, Docker daemon and cloud-init they drive are replaced by
 * small recording commands on PATH, so each test can see what the script
 * asked for and what it skipped.
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { defaultDaemonConfig, renderCloudInit, renderDockerInstallScript, renderWaitReadyScript } from "../../../templates/host";

const PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
const PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function shims(commands: Record<string, string>): { bin: string; state: string } {
  const dir = mkdtempSync(join(tmpdir(), "synaxic-host-"));
  dirs.push(dir);
  const bin = join(dir, "bin");
  const state = join(dir, "state");
  spawnSync("mkdir", ["-p", bin, state]);
  for (const [name, body] of Object.entries(commands)) {
    const f = join(bin, name);
    writeFileSync(f, `#!/bin/bash\nSTATE=${state}\necho "${name} $*" >> "$STATE/calls"\n${body}\n`);
    chmodSync(f, 0o755);
  }
  return { bin, state };
}

function runScript(script: string, bin: string, timeoutMs = 20_000) {
  const r = spawnSync("bash", ["-s"], { input: script, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: "utf8", timeout: timeoutMs });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const calls = (state: string) => (existsSync(join(state, "calls")) ? readFileSync(join(state, "calls"), "utf8").trim().split("\n") : []);

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

describe("readiness gate", () => {
  it("passes on a host without cloud-init", () => {
    const { bin } = shims({});
    const r = runScript(renderWaitReadyScript({ timeoutSeconds: 5 }), bin);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^host ready: /m);
  });
  it("waits for cloud-init to finish", () => {
    const { bin, state } = shims({ "cloud-init": 'n=$(grep -c "^cloud-init" "$STATE/calls"); if [ "$n" -ge 3 ]; then echo "status: done"; else echo "status: running"; fi' });
    const r = runScript(renderWaitReadyScript({ timeoutSeconds: 30 }), bin);
    expect(r.code).toBe(0);
    expect(calls(state).filter((c) => c.startsWith("cloud-init status")).length).toBe(3);
  });
  it("gives up after its timeout, saying what it waited for", () => {
    const { bin } = shims({ "cloud-init": 'echo "status: running"' });
    const started = Date.now();
    const r = runScript(renderWaitReadyScript({ timeoutSeconds: 3 }), bin);
    expect(r.code).toBe(1);
    expect(r.err).toContain("host not ready after 3s: still waiting for cloud-init");
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe("Docker install", () => {
  const dockerShims = () =>
    shims({
      docker: 'if [ -e "$STATE/installed" ] && [ ! -e "$STATE/dead" ]; then [ "$1" = version ] && echo 27.0.0; exit 0; fi; exit 1',
      "apt-get": 'if [ "$1" = install ]; then touch "$STATE/installed"; fi',
      systemctl: "exit 0",
      sudo: 'shift; exec "$@"',
    });

  it("installs Docker once, writes daemon.json, restarts, and a second run changes nothing", () => {
    const { bin, state } = dockerShims();
    const daemonJsonPath = join(state, "etc", "docker", "daemon.json");
    const script = renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 5, daemonJsonPath });
    const first = runScript(script, bin);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain("docker: installing");
    expect(first.out).toContain("docker: ready");
    expect(calls(state)).toEqual(expect.arrayContaining(["apt-get install -y -qq --no-install-recommends docker.io", "systemctl restart docker"]));
    expect(JSON.parse(readFileSync(daemonJsonPath, "utf8"))).toEqual(defaultDaemonConfig());

    writeFileSync(join(state, "calls"), "");
    const second = runScript(script, bin);
    expect(second.code).toBe(0);
    expect(second.out).toContain("docker: already installed (27.0.0)");
    expect(calls(state).filter((c) => c.startsWith("apt-get") || c.startsWith("systemctl"))).toEqual([]);
  });

  it("changed daemon settings restart Docker without reinstalling it", () => {
    const { bin, state } = dockerShims();
    const daemonJsonPath = join(state, "daemon.json");
    writeFileSync(join(state, "installed"), "");
    writeFileSync(daemonJsonPath, "{}\n");
    const r = runScript(renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 5, daemonJsonPath }), bin);
    expect(r.code).toBe(0);
    expect(r.out).toContain("daemon.json updated");
    expect(calls(state).filter((c) => c.startsWith("apt-get"))).toEqual([]);
    expect(calls(state)).toContain("systemctl restart docker");
  });

  it("fails with a clear message when the daemon never answers", () => {
    const { bin, state } = dockerShims();
    writeFileSync(join(state, "dead"), "");
    const r = runScript(renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 2, daemonJsonPath: join(state, "d.json") }), bin);
    expect(r.code).toBe(1);
    expect(r.err).toContain("docker: daemon did not answer within 2s");
  });

  it("snapshot", () => {
    expect(renderDockerInstallScript({ daemonConfig: defaultDaemonConfig(), startTimeoutSeconds: 120 })).toMatchSnapshot();
  });
});
