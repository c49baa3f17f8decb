/**
 * The production runner end to end with stand-ins for the programs it
 * drives: a fake `ssh` that records its arguments and the pinned
 * known_hosts file and then runs the remote command line with `sh -c`, as
 * sshd would; a fake `docker` that runs the command "in the container"; fake
 * `psql`, `redis-cli` and `sudo` that record what reached them. So the
 * command text really goes through two shells, and what travels on argv and
 * on stdin is checked where it arrives.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { containerRunner, knownHostsLine, postgresExecArgv, redisExecArgv, sshArgv, SshExec, type SshTarget } from "../../lib/status/runner";
import { gatherHost } from "../../lib/status/gather";
import { PG_STATUS_SQL } from "../../lib/status/postgres";
import { CommandError, ConnectionError } from "../../lib/status/errors";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq3T1l0nWn3oLxW4wq0l3m7c7fZ2sQvJ8u0kq8m9yZk";
const PASSWORD = `pw-'"$HOME;\`id\`-0123456789abcdef`;
const TARGETS: SshTarget[] = [
  { name: "main", address: "203.0.113.1", port: 22, user: "root", hostKey: KEY },
  { name: "replica-1", address: "203.0.113.2", port: 2222, user: "deploy", hostKey: `${KEY} root@replica-1` },
];
const PRIMARY_JSON = '{"slots": [], "lag_bytes": null, "replay_lsn": null, "current_lsn": "0/3000148", "in_recovery": false, "receive_lsn": null, "replication": [], "wal_receiver": null, "replay_paused": null}';
const INFO = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:42\r\n";

let dir: string;
let rec: string;
let ctl: string;

const read = (name: string) => readFileSync(join(rec, name), "utf8");
const argsOf = (name: string) => read(name).split("\0").slice(0, -1);

function script(path: string, body: string): void {
  writeFileSync(path, `#!/bin/bash\n${body}\n`);
  chmodSync(path, 0o755);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "status-runner-"));
  rec = join(dir, "rec");
  ctl = join(dir, "ctl");
  for (const d of ["rec", "ctl", "bin", "remote", "container"]) mkdirSync(join(dir, d));
  // ssh: record, copy the pinned known_hosts, then be sshd: run the last argument with sh -c.
  script(
    join(dir, "bin", "ssh"),
    `printf '%s\\0' "$@" > ${rec}/ssh.args
for a in "$@"; do case "$a" in UserKnownHostsFile=*) cp "\${a#UserKnownHostsFile=}" ${rec}/known_hosts;; esac; done
if [ -e ${ctl}/ssh-fail ]; then echo "ssh: connect to host \${@: -2:1} port 22: Connection refused" >&2; exit 255; fi
exec env PATH="${dir}/remote:$PATH" sh -c "\${@: -1}"`,
  );
  script(join(dir, "remote", "sudo"), `printf '%s\\0' "$@" > ${rec}/sudo.args; [ "$1" = -n ] && shift; exec "$@"`);
  // docker exec -i [-u user] <container> cmd...: run cmd "in the container".
  script(
    join(dir, "remote", "docker"),
    `printf '%s\\0' "$@" > ${rec}/docker.args
shift 2; if [ "$1" = -u ]; then shift 2; fi; shift
exec env PATH="${dir}/container:$PATH" "$@"`,
  );
  script(
    join(dir, "container", "psql"),
    `printf '%s\\0' "$@" > ${rec}/psql.args; cat > ${rec}/psql.stdin
if [ -e ${ctl}/psql-fail ]; then echo 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: No such file or directory' >&2; exit 2; fi
printf '%s\\n' '${PRIMARY_JSON}'`,
  );
  script(
    join(dir, "container", "redis-cli"),
    `printf '%s\\0' "$@" > ${rec}/redis.args; printf '%s' "$REDISCLI_AUTH" > ${rec}/redis.auth
if [ -e ${ctl}/redis-fail ]; then echo "AUTH failed: WRONGPASS for $REDISCLI_AUTH" >&2; exit 1; fi
printf '${INFO.replace(/\r\n/g, "\\r\\n")}'`,
  );
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeEach(() => {
  for (const d of [rec, ctl]) {
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d);
  }
});

function runner(opts: { identityFile?: string } = {}) {
  const ssh = new SshExec(TARGETS, { timeoutSeconds: 30, sshBinary: join(dir, "bin", "ssh"), ...opts });
  return { ssh, runner: containerRunner({ exec: ssh.exec, ports: { postgres: 5432, redis: 6380 }, redisAdmin: { user: "admin", password: PASSWORD } }) };
}

describe("ssh runner", () => {
  it("pins the host key from the stack output: one known_hosts line, [addr]:port when not 22", () => {
    expect(knownHostsLine(TARGETS[0]!)).toBe(`203.0.113.1 ${KEY}\n`);
    expect(knownHostsLine(TARGETS[1]!)).toBe(`[203.0.113.2]:2222 ${KEY}\n`);
    expect(() => knownHostsLine({ ...TARGETS[0]!, hostKey: "garbage" })).toThrow(/not "<type> <base64>"/);
  });

  it("builds the ssh argv: batch mode, strict host key checking against the pinned file only, the target's port and user, then the quoted remote command", () => {
    const argv = sshArgv(TARGETS[1]!, "/tmp/kh", { timeoutSeconds: 45, identityFile: "/keys/id" }, ["docker", "exec", "-i", "c", "sh", "-c", "echo 'hi'"]);
    expect(argv).toEqual([
      "-T",
      "-o", "BatchMode=yes",
      "-o", "StrictHostKeyChecking=yes",
      "-o", "UserKnownHostsFile=/tmp/kh",
      "-o", "GlobalKnownHostsFile=/dev/null",
      "-o", "ConnectTimeout=10",
      "-o", "ServerAliveInterval=10",
      "-o", "ServerAliveCountMax=3",
      "-o", "LogLevel=ERROR",
      "-i", "/keys/id", "-o", "IdentitiesOnly=yes",
      "-p", "2222",
      "-l", "deploy",
      "--",
      "203.0.113.2",
      `sudo -n timeout --kill-after=5 45 docker exec -i c sh -c 'echo '\\''hi'\\'''`,
    ]);
    // root needs no sudo; without --identity the agent is used (no -i).
    const root = sshArgv(TARGETS[0]!, "/tmp/kh", { timeoutSeconds: 45 }, ["true"]);
    expect(root.at(-1)).toBe("timeout --kill-after=5 45 true");
    expect(root).not.toContain("-i");
  });

  it("an interactive session: ssh -t, no time limit (GNU timeout would keep the command off the terminal); a stream: -T without a limit", () => {
    const tty = sshArgv(TARGETS[1]!, "/tmp/kh", { timeoutSeconds: 45 }, ["docker", "exec", "-i", "-t", "c", "psql"], { tty: true, untimed: true });
    expect(tty[0]).toBe("-t");
    expect(tty).not.toContain("-T");
    expect(tty.at(-1)).toBe("sudo -n docker exec -i -t c psql");
    const stream = sshArgv(TARGETS[0]!, "/tmp/kh", { timeoutSeconds: 45 }, ["docker", "logs", "--follow", "c"], { untimed: true });
    expect(stream[0]).toBe("-T");
    expect(stream.at(-1)).toBe("docker logs --follow c");
  });

  it("runs the status query in the PostgreSQL container: SQL on stdin, nothing of it on any command line", async () => {
    const { ssh, runner: r } = runner();
    try {
      const facts = await gatherHost({ psql: r.psql, redis: async () => INFO, backupInfo: async () => "[]" }, "main");
      expect(facts.postgres).toEqual({ ok: true, value: expect.objectContaining({ inRecovery: false, currentLsn: "0/3000148" }) });
      expect(read("known_hosts")).toBe(`203.0.113.1 ${KEY}\n`);
      expect(argsOf("ssh.args").slice(-3, -1)).toEqual(["--", "203.0.113.1"]);
      expect(argsOf("docker.args")).toEqual(postgresExecArgv("main", 5432).slice(1));
      expect(argsOf("docker.args").slice(0, 5)).toEqual(["exec", "-i", "-u", "postgres", "synaxic-main-postgres"]);
      expect(argsOf("psql.args")).toEqual(["-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=terse", "--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--port=5432", "--username=postgres", "--dbname=postgres", "--file=-"]);
      expect(read("psql.stdin")).toBe(PG_STATUS_SQL);
      expect(read("ssh.args")).not.toContain("pg_stat_replication");
      expect(existsSync(join(rec, "sudo.args"))).toBe(false);
    } finally {
      ssh.close();
    }
  });

  it("runs redis-cli in the Redis container as admin with the password from stdin: it reaches REDISCLI_AUTH and no argv", async () => {
    const { ssh, runner: r } = runner({ identityFile: "/keys/id" });
    try {
      const facts = await gatherHost({ psql: async () => PRIMARY_JSON, redis: r.redis, backupInfo: async () => "[]" }, "replica-1");
      expect(facts.redis).toEqual({ ok: true, value: expect.objectContaining({ role: "master", masterReplOffset: 42 }) });
      expect(read("known_hosts")).toBe(`[203.0.113.2]:2222 ${KEY}\n`);
      // A non-root SSH user goes through sudo -n.
      expect(argsOf("sudo.args").slice(0, 2)).toEqual(["-n", "timeout"]);
      expect(argsOf("docker.args")).toEqual(redisExecArgv("replica-1", 6380, "admin", ["INFO", "replication"]).slice(1));
      expect(argsOf("docker.args").slice(0, 3)).toEqual(["exec", "-i", "synaxic-replica-1-redis"]);
      expect(argsOf("redis.args")).toEqual(["--tls", "--cacert", "/etc/synaxic/tls/ca.crt", "-h", "127.0.0.1", "-p", "6380", "--user", "admin", "--no-auth-warning", "INFO", "replication"]);
      expect(read("redis.auth")).toBe(PASSWORD);
      for (const f of ["ssh.args", "sudo.args", "docker.args", "redis.args"]) expect(read(f)).not.toContain(PASSWORD);
      expect(argsOf("ssh.args")).toEqual(expect.arrayContaining(["-i", "/keys/id", "-p", "2222", "-l", "deploy"]));
    } finally {
      ssh.close();
    }
  });

  it("keeps arguments intact through the remote shell and the container's shell", async () => {
    const { ssh, runner: r } = runner();
    try {
      const nasty = `it's a "key" with $HOME, \`id\`, ; | & and \\ backslash`;
      await r.redis("main", ["GET", nasty]);
      expect(argsOf("redis.args").slice(-2)).toEqual(["GET", nasty]);
    } finally {
      ssh.close();
    }
  });

  it("reports ssh's own failure (exit 255) as a connection error naming the host", async () => {
    writeFileSync(join(ctl, "ssh-fail"), "");
    const { ssh, runner: r } = runner();
    try {
      const err = await r.psql("replica-1", PG_STATUS_SQL).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectionError);
      expect((err as Error).message).toBe("cannot reach replica-1: ssh deploy@203.0.113.2:2222: ssh: connect to host 203.0.113.2 port 22: Connection refused");
      const facts = await gatherHost(r, "replica-1");
      expect(facts.postgres).toMatchObject({ ok: false, connection: true });
      expect(facts.redis).toMatchObject({ ok: false, connection: true });
    } finally {
      ssh.close();
    }
  });

  it("reports a failing server as a command error, with the Redis password blanked out of the message", async () => {
    writeFileSync(join(ctl, "psql-fail"), "");
    writeFileSync(join(ctl, "redis-fail"), "");
    const { ssh, runner: r } = runner();
    try {
      const pg = await r.psql("main", PG_STATUS_SQL).catch((e: unknown) => e);
      expect(pg).toBeInstanceOf(CommandError);
      expect((pg as Error).message).toMatch(/^psql on main failed: exit 2: psql: error: connection to server on socket .* failed: No such file or directory$/);
      const redis = await r.redis("main", ["INFO", "replication"]).catch((e: unknown) => e);
      expect(redis).toBeInstanceOf(CommandError);
      expect((redis as Error).message).toBe("redis-cli INFO replication on main failed: exit 1: AUTH failed: WRONGPASS for ***");
      expect((redis as Error).message).not.toContain(PASSWORD);
    } finally {
      ssh.close();
    }
  });

  it("the real ssh client accepts the argv and its refusal to connect is a connection error", async () => {
    // A port that was just free on loopback: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, "127.0.0.1", () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const ssh = new SshExec([{ name: "main", address: "127.0.0.1", port, user: "root", hostKey: KEY }], { timeoutSeconds: 10 });
    try {
      const err = await ssh.exec("main", ["true"], "").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectionError);
      // Not "Bad configuration option": ssh parsed every option and tried to connect.
      expect((err as Error).message).toMatch(new RegExp(`^cannot reach main: ssh root@127\\.0\\.0\\.1:${port}: .*port ${port}: Connection refused$`));
    } finally {
      ssh.close();
    }
  });

  it("refuses a host it has no target for, and removes its known_hosts files on close", async () => {
    const { ssh, runner: r } = runner();
    await expect(r.psql("replica-9", "SELECT 1")).rejects.toThrow("no SSH target for host replica-9");
    await r.psql("main", "SELECT 1");
    const file = argsOf("ssh.args").find((a) => a.startsWith("UserKnownHostsFile="))!.slice("UserKnownHostsFile=".length);
    expect(readFileSync(file, "utf8")).toBe(`203.0.113.1 ${KEY}\n`);
    ssh.close();
    expect(existsSync(file)).toBe(false);
  });
});
