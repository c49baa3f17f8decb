/**
 * The pieces every container step is built from: Go-form durations, the
 * health gate (run in sh against a stand-in `docker` that plays a
 * container's life), the reload guard, the Docker client's SSH options and
 * the restart-only settings of postgresql.conf.
 */
import { describe, expect, it, afterAll } from "vitest";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { goDuration, healthcheck, whenRunning } from "../../lib/containers";
import { renderHealthGateScript, renderRestartIfStaleScript } from "../../templates/health-gate";
import { dockerIdentityName, dockerSshOpts } from "../../components/Host";
import { parseSshIdentityDir } from "../../lib/config";
import { RESTART_SETTINGS, restartSettingNames, restartSettings } from "../../templates/postgres-conf";

const dir = mkdtempSync(join(tmpdir(), "synaxic-steps-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A `docker` that answers `inspect` from a list of states (one per call, the
 * last repeated), `exec` with a fixed output, `logs` with a marker line.
 */
function fakeDocker(states: string[], execOut: string): string {
  const bin = mkdtempSync(join(dir, "bin-"));
  const counter = join(bin, "n");
  writeFileSync(counter, "0");
  const script = `#!/bin/sh
case "$1" in
  inspect)
    n=$(cat ${counter}); echo $((n + 1)) > ${counter}
    i=0
    for s in ${states.map((s) => `'${s}'`).join(" ")}; do last="$s"; if [ $i -eq $n ]; then echo "$s"; exit 0; fi; i=$((i + 1)); done
    echo "$last" ;;
  exec) echo '${execOut}' ;;
  logs) echo "FATAL: the reason it failed" ;;
  *) exit 2 ;;
esac
`;
  writeFileSync(join(bin, "docker"), script);
  chmodSync(join(bin, "docker"), 0o755);
  // The gate sleeps 2 s between polls: a stand-in sleep keeps the test quick.
  writeFileSync(join(bin, "sleep"), "#!/bin/sh\nexit 0\n");
  chmodSync(join(bin, "sleep"), 0o755);
  return bin;
}

function runGate(states: string[], execOut: string, timeoutSeconds = 30) {
  const bin = fakeDocker(states, execOut);
  const script = renderHealthGateScript({
    containerName: "synaxic-replica-1-postgres",
    timeoutSeconds,
    check: { argv: ["psql", "-At", "-c", "SELECT status FROM pg_stat_wal_receiver"], expect: "streaming", what: "streaming from its primary", user: "postgres" },
  });
  return spawnSync("sh", ["-s"], { input: script, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: "utf8", timeout: 20_000 });
}

describe("Go-form durations (what Docker reports back, so that previews stay clean)", () => {
  it.each([
    [0, "0s"],
    [5, "5s"],
    [59, "59s"],
    [60, "1m0s"],
    [90, "1m30s"],
    [3600, "1h0m0s"],
    [3725, "1h2m5s"],
  ])("%i s is %s", (s, text) => expect(goDuration(s)).toBe(text));

  it("refuses fractions and negatives", () => {
    expect(() => goDuration(1.5)).toThrow(/whole number/);
    expect(() => goDuration(-1)).toThrow(/whole number/);
  });

  it("a health check with a 60 s start period says 1m0s, as docker inspect does", () => {
    expect(healthcheck({ tests: ["CMD", "true"], intervalSeconds: 10, timeoutSeconds: 5, retries: 6, startPeriodSeconds: 60 })).toEqual({
      tests: ["CMD", "true"],
      interval: "10s",
      timeout: "5s",
      retries: 6,
      startPeriod: "1m0s",
    });
  });
});

describe("the health gate", () => {
  it("passes once the container is healthy and the check says what it must", () => {
    const r = runGate(["running 0 starting", "running 0 healthy"], "streaming");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("healthy, streaming from its primary");
  });

  it("fails fast with the container's log when it keeps restarting (a bootstrap that cannot succeed)", () => {
    const r = runGate(["restarting 1 starting", "restarting 2 unhealthy"], "");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("restarted 2 times");
    expect(r.stderr).toContain("FATAL: the reason it failed");
  });

  it("fails with the log when the container exited", () => {
    const r = runGate(["exited 0 unhealthy"], "");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("exited instead of becoming healthy");
    expect(r.stderr).toContain("FATAL: the reason it failed");
  });

  it("a healthy standby that never streams fails at the deadline, saying what the check last said", () => {
    const r = runGate(["running 0 healthy"], "", 1);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("not streaming from its primary after 1s");
  });

  it("refuses a container name that is not one", () => {
    expect(() => renderHealthGateScript({ containerName: "x; rm -rf /", timeoutSeconds: 5 })).toThrow(/not a container name/);
  });
});

describe("a restart for settings read at start", () => {
  function run(startedAt: string, fileTime: Date, running = "true") {
    const bin = mkdtempSync(join(dir, "bin-"));
    const file = join(bin, "postgresql.conf");
    writeFileSync(file, "max_connections = 120\n");
    utimesSync(file, fileTime, fileTime);
    writeFileSync(
      join(bin, "docker"),
      `#!/bin/sh
case "$1 $3" in
  "inspect {{.State.Running}}") echo ${running} ;;
  "inspect {{.State.StartedAt}}") echo ${startedAt} ;;
  *) case "$1" in restart) echo restart >> ${bin}/calls ;; esac ;;
esac
`,
    );
    chmodSync(join(bin, "docker"), 0o755);
    const script = renderRestartIfStaleScript({ containerName: "synaxic-main-postgres", file, settings: ["max_connections"], gate: "#!/bin/sh\necho gate ran\n" });
    const r = spawnSync("sh", ["-s"], { input: script, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: "utf8" });
    let calls = "";
    try {
      calls = readFileSync(join(bin, "calls"), "utf8");
    } catch {
      /* none */
    }
    return { ...r, calls };
  }

  it("restarts a server that started before the file changed, then runs the gate", () => {
    const r = run("2026-01-01T10:00:00.123456789Z", new Date("2026-01-01T11:00:00Z"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.calls).toBe("restart\n");
    expect(r.stdout).toContain("restarted: a setting read only at start changed (one of max_connections)");
    expect(r.stdout).toContain("gate ran");
  });

  it("leaves a server alone that started after the change (a new container)", () => {
    const r = run("2026-01-01T12:00:00Z", new Date("2026-01-01T11:00:00Z"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.calls).toBe("");
    expect(r.stdout).toContain("started with the current settings");
  });

  it("leaves a stopped (fenced) server alone", () => {
    const r = run("2026-01-01T10:00:00Z", new Date("2026-01-01T11:00:00Z"), "false");
    expect(r.calls).toBe("");
  });
});

describe("reloads run only in a running container", () => {
  const bin = fakeDocker(["false"], "");
  writeFileSync(join(bin, "reload"), "#!/bin/sh\necho reloaded\n");
  chmodSync(join(bin, "reload"), 0o755);
  it("a stopped (fenced) container is left alone, and nothing fails", () => {
    const [cmd, ...args] = whenRunning("synaxic-main-nginx", ["reload"]);
    const r = spawnSync(cmd!, args, { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("synaxic-main-nginx is not running");
    expect(r.stdout).not.toContain("reloaded");
  });
});

describe("the Docker client's SSH options name nothing of the checkout", () => {
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1kZXN0a2V5";
  it("pin the host key in the options and turn every known_hosts file off", () => {
    const opts = dockerSshOpts("~/.ssh/synaxic/organization-synaxic-main-main", "[203.0.113.5]:2222", key);
    expect(opts).toContain("StrictHostKeyChecking=yes");
    expect(opts).toContain("UserKnownHostsFile=/dev/null");
    expect(opts).toContain("GlobalKnownHostsFile=/dev/null");
    expect(opts).toContain(`KnownHostsCommand=/bin/echo [203.0.113.5]:2222 ${key}`);
    expect(opts).toContain("IdentityFile=~/.ssh/synaxic/organization-synaxic-main-main");
  });

  it("refuse what could become more than one ssh option", () => {
    expect(() => dockerSshOpts("/tmp/id file", "203.0.113.5", key)).toThrow(/plain path/);
    expect(() => dockerSshOpts("/tmp/id", "203.0.113.5 evil", key)).toThrow(/host/);
    expect(() => dockerSshOpts("/tmp/id", "203.0.113.5", "ssh-ed25519 AAAA%h")).toThrow(/public key/);
  });

  it("one identity per organisation, project, stack and host", () => {
    expect(dockerIdentityName("acme", "synaxic", "replica-1", "replica-1")).toBe("acme-synaxic-replica-1-replica-1");
    expect(dockerIdentityName("a/b", "synaxic", "main", "main")).toBe("a_b-synaxic-main-main");
  });

  it("SYNAXIC_SSH_DIR must be an absolute plain path", () => {
    expect(parseSshIdentityDir(undefined)).toBeUndefined();
    expect(parseSshIdentityDir("/var/lib/ops/ssh/")).toBe("/var/lib/ops/ssh");
    expect(() => parseSshIdentityDir("relative/dir")).toThrow(/SYNAXIC_SSH_DIR/);
    expect(() => parseSshIdentityDir("/with space")).toThrow(/SYNAXIC_SSH_DIR/);
  });
});

describe("postgresql.conf: what a change restarts", () => {
  const conf = "# x\nmax_connections = 100\nwork_mem = '4MB'\nlisten_addresses = '10.0.0.2,127.0.0.1'\nssl = on\n";
  it("only the settings PostgreSQL reads at start are restart settings", () => {
    expect(restartSettingNames(conf)).toEqual(["max_connections", "listen_addresses"]);
    expect(restartSettings(conf)).toBe("max_connections = 100\nlisten_addresses = '10.0.0.2,127.0.0.1'");
  });

  it("a reload-only change leaves the restart trigger as it was; a restart setting changes it", () => {
    expect(restartSettings(conf.replace("4MB", "8MB"))).toBe(restartSettings(conf));
    expect(restartSettings(conf.replace("100", "120"))).not.toBe(restartSettings(conf));
    expect(RESTART_SETTINGS).not.toContain("work_mem");
  });
});
