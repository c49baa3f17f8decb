/**
 * What the fleet command runs on a host. The shell scripts are run here for
 * real with /bin/sh and a recording `docker`, as the host's shell runs them
 * after ssh: the Redis password reaches the environment of `docker exec`
 * (which passes it on by name with -e REDISCLI_AUTH) and no process's argv.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  FLEET_SERVICES,
  fleetService,
  logsArgv,
  psqlSessionArgv,
  redisFromFileArgv,
  redisFromStdinArgv,
  redisSessionDockerArgv,
  restartArgv,
  stashArgv,
  stashedPath,
  unstashArgv,
} from "../../lib/fleetcli/remote";
import { backupInfoArgv, FLEET_STANZA, formatDuration, parseBackupInfo } from "../../lib/status/backup";
import { backupInfoExecArgv } from "../../lib/status/runner";
import { STANZA } from "../../lib/backup";
import { UsageError } from "../../lib/status/errors";
import { sh } from "../../lib/shell";

const PASSWORD = "pw with 'quotes' $(and) `ticks` \\ and spaces";

describe("services and argv", () => {
  it("the fleet's services are every service container the program names (containerName(host, service)), but the local anchor", () => {
    const root = join(__dirname, "..", "..");
    const named = new Set<string>();
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith(".ts")) for (const m of readFileSync(p, "utf8").matchAll(/containerName\([^,()]+,\s*"([a-z-]+)"\)/g)) named.add(m[1]!);
      }
    };
    for (const d of ["components", "lib", "stacks"]) walk(join(root, d));
    named.delete("host");
    expect([...FLEET_SERVICES].sort()).toEqual([...named].sort());
    expect(() => fleetService("sshd")).toThrow(UsageError);
    expect(() => fleetService("host")).toThrow(/not a service of the fleet/);
    expect(fleetService("redis-exporter")).toBe("redis-exporter");
  });

  it("logs, restart, psql", () => {
    // The app runs as synaxic-<host>-app-a or -b (its deploy slot): the running one is looked up on the host.
    const app = logsArgv("main", "app", { tail: 50, follow: false, timestamps: false });
    expect(app.slice(0, 2)).toEqual(["sh", "-c"]);
    expect(app.slice(3)).toEqual(["sh", "synaxic-main-app", "logs", "--tail", "50"]);
    expect(logsArgv("replica-1", "postgres", { tail: "all", follow: true, timestamps: true })).toEqual(["docker", "logs", "--tail", "all", "--follow", "--timestamps", "synaxic-replica-1-postgres"]);
    expect(restartArgv("main", "nginx")).toEqual(["docker", "restart", "synaxic-main-nginx"]);
    expect(restartArgv("main", "postgres", { stopTimeoutSeconds: 90 })).toEqual(["docker", "restart", "--time", "90", "synaxic-main-postgres"]);
    expect(psqlSessionArgv("main", { port: 5432, database: "synaxic", tty: true })).toEqual(["docker", "exec", "-i", "-t", "-u", "postgres", "synaxic-main-postgres", "psql", "--port=5432", "--dbname=synaxic"]);
    expect(psqlSessionArgv("main", { port: 5432, database: "synaxic", tty: false, args: ["-c", "SELECT 1"] })).toEqual(["docker", "exec", "-i", "-u", "postgres", "synaxic-main-postgres", "psql", "--port=5432", "--dbname=synaxic", "-c", "SELECT 1"]);
  });

  it("pgbackrest info for the fleet's stanza with the container's config path, as postgres in the PostgreSQL container", () => {
    expect(FLEET_STANZA).toBe(STANZA);
    expect(backupInfoArgv()).toEqual(["pgbackrest", "--config-path=/etc/pgbackrest", "--stanza=synaxic", "--output=json", "info"]);
    expect(backupInfoExecArgv("replica-2")).toEqual(["docker", "exec", "-u", "postgres", "synaxic-replica-2-postgres", ...backupInfoArgv()]);
  });

  it("parses pgbackrest info: the newest backup by stop time, its age; an empty stanza; no stanza is an error", () => {
    const backup = (label: string, type: string, stop: number) => ({ label, type, timestamp: { start: stop - 60, stop }, info: { size: 10, delta: 10, repository: { size: 5, delta: 5 } } });
    const info = JSON.stringify([
      {
        name: "synaxic",
        status: { code: 0, message: "ok" },
        backup: [backup("20261129-010000F", "full", 1000), backup("20261129-010000F_20261130-010000D", "diff", 5000), backup("20261129-010000F_20261130-020000I", "incr", 4000)],
        archive: [
          { id: "15-1", min: "000000010000000000000001", max: "000000010000000000000009" },
          { id: "15-1", min: "000000020000000000000009", max: "00000002000000000000000C" },
        ],
      },
    ]);
    expect(parseBackupInfo(info, 5600)).toEqual({
      stanza: "synaxic",
      status: { code: 0, message: "ok" },
      backupCount: 3,
      newest: { label: "20261129-010000F_20261130-010000D", type: "diff", stoppedAt: 5000, ageSeconds: 600 },
      archiveMax: "00000002000000000000000C",
    });
    const empty = JSON.stringify([{ name: "synaxic", status: { code: 2, message: "no valid backups" }, backup: [], archive: [] }]);
    expect(parseBackupInfo(empty, 1)).toMatchObject({ backupCount: 0, newest: null, archiveMax: null, status: { code: 2 } });
    expect(() => parseBackupInfo("[]", 1)).toThrow(/no stanza synaxic/);
    expect(() => parseBackupInfo("ERROR: [055]", 1)).toThrow(/unexpected pgbackrest info output/);
  });

  it("durations", () => {
    expect([formatDuration(59), formatDuration(61), formatDuration(3 * 3600 + 25 * 60), formatDuration(2 * 86400 + 5 * 3600)]).toEqual(["59 s", "1 min", "3 h 25 min", "2 d 5 h"]);
  });
});

describe("the Redis password's way, run by /bin/sh", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flc-remote-"));
    // A docker that records its argv and the environment variable it was told to pass on, then echoes its stdin.
    writeFileSync(join(dir, "docker"), `#!/bin/sh\nprintf '%s\\n' "$@" > "${dir}/argv"\nprintf '%s' "$REDISCLI_AUTH" > "${dir}/auth"\ncat\n`);
    chmodSync(join(dir, "docker"), 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const docker = () => redisSessionDockerArgv("main", { port: 6380, user: "synaxic_admin", tty: false, args: ["--raw"] });
  // As the host's shell gets it from ssh: one command line built by the quoting helper.
  const onHost = (argv: string[], input: string) => spawnSync("/bin/sh", ["-c", sh(argv)], { input, env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8" });

  it("without a terminal: the first line of stdin becomes REDISCLI_AUTH, the rest reaches docker exec's stdin untouched", () => {
    const r = onHost(redisFromStdinArgv(docker()), `${PASSWORD}\nPING\nSET k 'v'\n`);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("PING\nSET k 'v'\n");
    expect(readFileSync(join(dir, "auth"), "utf8")).toBe(PASSWORD);
    const argv = readFileSync(join(dir, "argv"), "utf8");
    expect(argv).toBe(`${["exec", "-i", "-e", "REDISCLI_AUTH", "synaxic-main-redis", "redis-cli", "--tls", "--cacert", "/etc/synaxic/tls/ca.crt", "-h", "127.0.0.1", "-p", "6380", "--user", "synaxic_admin", "--no-auth-warning", "--raw"].join("\n")}\n`);
    expect(argv).not.toContain("pw with");
    // No password at all: refused before docker runs.
    const none = onHost(redisFromStdinArgv(docker()), "");
    expect(none.status).toBe(2);
    expect(none.stderr).toContain("no password on standard input");
  });

  it("with a terminal: stash writes a private 0600 file, the session reads it into REDISCLI_AUTH and removes it", () => {
    const stash = onHost(stashArgv(), PASSWORD);
    expect(stash.status).toBe(0);
    const file = stashedPath(stash.stdout);
    expect(file).toMatch(/^\/(dev\/shm|tmp)\/synaxic-fleet\.[A-Za-z0-9]{8}\/auth$/);
    expect(readFileSync(file, "utf8")).toBe(PASSWORD);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(file, "..")).mode & 0o777).toBe(0o700);
    const session = onHost(redisFromFileArgv(file, docker()), "INFO\n");
    expect(session.status).toBe(0);
    expect(session.stdout).toBe("INFO\n");
    expect(readFileSync(join(dir, "auth"), "utf8")).toBe(PASSWORD);
    expect(existsSync(join(file, ".."))).toBe(false);
    // The clean-up after a session that never started.
    const again = stashedPath(onHost(stashArgv(), PASSWORD).stdout);
    expect(onHost(unstashArgv(again), "").status).toBe(0);
    expect(existsSync(join(again, ".."))).toBe(false);
  });

  it("only its own files: any other path is refused before a command is built", () => {
    for (const p of ["/etc/passwd", "/tmp/synaxic-fleet.abc/auth", "/dev/shm/synaxic-fleet.Ab3dEf9h/../x/auth", "/dev/shm/synaxic-fleet.Ab3dEf9h/auth; rm -rf /"]) {
      expect(() => stashedPath(`${p}\n`)).toThrow(/unexpected answer/);
      expect(() => redisFromFileArgv(p, docker())).toThrow(/not a session password file/);
      expect(() => unstashArgv(p)).toThrow(/not a session password file/);
    }
  });
});
