/**
 * The status command's front end: its arguments and their errors, reading
 * and checking the stacks' outputs, the SSH identity check, and the exit
 * status (0 healthy, 2 unhealthy, 1 usage/outputs/unreachable) through
 * runStatus with a runner that answers like the servers do.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EXIT, parseSize, parseStatusArgs, runStatus, sshConnect, USAGE, type StatusDeps } from "../../lib/status/cli";
import { ConnectionError, CommandError, StackOutputError, UsageError } from "../../lib/status/errors";
import { buildPlan, pulumiStackOutputs, type StatusPlan } from "../../lib/status/outputs";
import type { HostRunner } from "../../lib/status/gather";
import { DEFAULT_THRESHOLDS } from "../../lib/status/types";

const ADMIN_PASSWORD = "s3cret-redis-admin-password-0123";
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq3T1l0nWn3oLxW4wq0l3m7c7fZ2sQvJ8u0kq8m9yZk";
const MAIN = "acme/synaxic/main";
const R1 = "acme/synaxic/replica-1";
const R2 = "acme/synaxic/replica-2";

function outputs(): Record<string, Record<string, unknown>> {
  return {
    [MAIN]: {
      publicAddress: "203.0.113.1",
      hostKey: KEY,
      sshUser: "root",
      fleet: {
        version: 1,
        mainPrivateIp: "10.0.0.1",
        ports: { http: 80, https: 443, postgres: 5432, redis: 6380, app: 8080, prometheus: 9090, grafana: 3000, nodeExporter: 9100, postgresExporter: 9187, redisExporter: 9121 },
        replicas: [
          { name: "replica-1", privateIp: "10.0.0.2", slotName: "synaxic_replica_1" },
          { name: "replica-2", privateIp: "10.0.0.3", slotName: "synaxic_replica_2" },
        ],
        redisUsers: { app: "synaxic", replication: "replicator", exporter: "exporter", admin: "admin" },
      },
      replicaCredentials: { redisAdmin: ADMIN_PASSWORD },
      slots: { "replica-1": "synaxic_replica_1", "replica-2": "synaxic_replica_2" },
    },
    [R1]: { replicaName: "replica-1", slotName: "synaxic_replica_1", publicAddress: "203.0.113.2", privateIp: "10.0.0.2", postgresMode: "replica", redisRole: "replica", hostKey: KEY, sshUser: "deploy", sshPort: 2222 },
    [R2]: { replicaName: "replica-2", slotName: "synaxic_replica_2", publicAddress: "203.0.113.3", privateIp: "10.0.0.3", postgresMode: "replica", redisRole: "replica", hostKey: KEY, sshUser: "root" },
  };
}

// What psql (-At, PG_STATUS_SQL) and redis-cli (INFO replication) print on healthy servers.
const replicaRow = (name: string, ip: string) => ({
  application_name: name, client_addr: ip, state: "streaming", sync_state: "async",
  sent_lsn: "0/3000148", write_lsn: "0/3000148", flush_lsn: "0/3000148", replay_lsn: "0/3000148",
  lag_bytes: 0, write_lag: null, flush_lag: null, replay_lag: null,
});
const slotRow = (slot: string) => ({ slot_name: slot, slot_type: "physical", active: true, wal_status: "reserved", restart_lsn: "0/3000148", retained_bytes: 0 });
const PRIMARY = {
  in_recovery: false, current_lsn: "0/3000148", receive_lsn: null, replay_lsn: null, lag_bytes: null, replay_paused: null, wal_receiver: null,
  replication: [replicaRow("replica-1", "10.0.0.2"), replicaRow("replica-2", "10.0.0.3")],
  slots: [slotRow("synaxic_replica_1"), slotRow("synaxic_replica_2")],
};
const standby = (slot: string) => ({
  in_recovery: true, current_lsn: null, receive_lsn: "0/3000148", replay_lsn: "0/3000148", lag_bytes: 0, replay_paused: false,
  wal_receiver: { status: "streaming", sender_host: "10.0.0.1", sender_port: 5432, slot_name: slot }, replication: [], slots: [],
});
const MASTER_INFO = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=500,lag=0\r\nslave1:ip=10.0.0.3,port=6380,state=online,offset=500,lag=1\r\nmaster_repl_offset:500\r\n";
const REPLICA_INFO = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6380\r\nmaster_link_status:up\r\nslave_repl_offset:500\r\nmaster_repl_offset:500\r\n";

interface Fake {
  pg?: Record<string, unknown>;
  redis?: Record<string, string>;
  backupInfo?: string;
  fail?: Record<string, Error>;
}

function fakeRunner(f: Fake = {}): HostRunner {
  const pg: Record<string, unknown> = { main: PRIMARY, "replica-1": standby("synaxic_replica_1"), "replica-2": standby("synaxic_replica_2"), ...f.pg };
  const redis: Record<string, string> = { main: MASTER_INFO, "replica-1": REPLICA_INFO, "replica-2": REPLICA_INFO, ...f.redis };
  return {
    psql: async (host, sql) => {
      if (f.fail?.[host]) throw f.fail[host];
      expect(sql).toContain("pg_stat_replication");
      return `${JSON.stringify(pg[host])}\n`;
    },
    redis: async (host, args) => {
      if (f.fail?.[host]) throw f.fail[host];
      expect(args).toEqual(["INFO", "replication"]);
      return redis[host]!;
    },
    backupInfo: async (host) => {
      if (f.fail?.[host]) throw f.fail[host];
      return f.backupInfo ?? "[]";
    },
  };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  plan?: StatusPlan;
  read: string[];
}

async function run(argv: string[], opts: { fake?: Fake; outs?: Record<string, Record<string, unknown>>; deps?: Partial<StatusDeps> } = {}): Promise<Run> {
  const outs = opts.outs ?? outputs();
  const r: Run = { code: -1, stdout: "", stderr: "", read: [] };
  const deps: StatusDeps = {
    readStackOutputs: async (stack) => {
      r.read.push(stack);
      const o = outs[stack];
      if (!o) throw new StackOutputError(`cannot read stack ${stack}: pulumi stack output failed: error: no stack named '${stack}' found`);
      return o;
    },
    connect: async (plan) => {
      r.plan = plan;
      return { runner: fakeRunner(opts.fake), close: () => undefined };
    },
    stdout: (t) => (r.stdout += t),
    stderr: (t) => (r.stderr += t),
    env: {},
    ...opts.deps,
  };
  r.code = await runStatus(argv, deps);
  return r;
}

const ALL = ["--main", MAIN, "--replica", R1, "--replica", R2];

describe("arguments", () => {
  it("parses stacks, thresholds, identity, timeout and --json, with --opt value and --opt=value", () => {
    const o = parseStatusArgs(["--main", MAIN, "--replica", R1, `--replica=${R2}`, "--json", "--identity", "/keys/id", "--max-lag-bytes", "64MB", "--max-replay-lag=2.5", "--max-redis-offset-lag", "512kB", "--timeout", "20"]);
    expect(o).toEqual({
      mainStack: MAIN,
      replicaStacks: [R1, R2],
      identityFile: "/keys/id",
      json: true,
      thresholds: { maxLagBytes: 64 * 1024 * 1024, maxReplayLagSeconds: 2.5, maxRedisOffsetLag: 512 * 1024, maxBackupAgeSeconds: null },
      timeoutSeconds: 20,
      help: false,
    });
    expect(parseStatusArgs(["--main", "main"]).thresholds).toEqual(DEFAULT_THRESHOLDS);
    expect([parseSize("x", "123"), parseSize("x", "1kB"), parseSize("x", "2GB")]).toEqual([123, 1024, 2 * 1024 ** 3]);
  });

  it.each([
    [[], "--main <stack> is required (the main stack, e.g. acme/synaxic/main)"],
    [["--replica", R1], "--main <stack> is required"],
    [["--main"], "option --main needs a value"],
    [["--main", "--json"], "option --main needs a value"],
    [["--main="], "option --main needs a value"],
    [["--main", MAIN, "--main", MAIN], "--main given twice: there is one main stack"],
    [["--main", MAIN, "--replica", R1, "--replica", R1], `--replica ${R1} given twice`],
    [["--main", "acme/synaxic/main/extra"], '--main: "acme/synaxic/main/extra" is not a stack name (expected <org>/<project>/<stack>'],
    [["--main", MAIN, "--mian", "x"], "unknown option --mian"],
    [["--main", MAIN, R1], `unexpected argument "${R1}": stacks are given with --main and --replica`],
    [["--main", MAIN, "--max-lag-bytes", "16 MiB"], '--max-lag-bytes: "16 MiB" is not a size; give bytes or a number with kB, MB or GB, e.g. 16MB'],
    [["--main", MAIN, "--max-redis-offset-lag", "-1"], '--max-redis-offset-lag: "-1" is not a size'],
    [["--main", MAIN, "--max-replay-lag", "soon"], '--max-replay-lag: "soon" is not a number of seconds'],
    [["--main", MAIN, "--timeout", "0"], "--timeout must be at least 1 second"],
  ])("refuses %j: exit 1, the message, a pointer to --help, nothing read", async (argv, message) => {
    expect(() => parseStatusArgs(argv)).toThrow(UsageError);
    const r = await run(argv);
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toContain(`status: ${message}`);
    expect(r.stderr).toMatch(/Run with --help for usage\.\n$/);
    expect(r.stdout).toBe("");
    expect(r.read).toEqual([]);
  });

  it("--help prints the usage and exits 0 without reading any stack", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(USAGE);
    expect(r.read).toEqual([]);
    expect(USAGE).toContain("npm run fleet -- status --main <stack> [--replica <stack>]...");
    expect(USAGE).toContain("(npm run status -- ... is the same command)");
  });
});

describe("stack outputs", () => {
  it("builds the plan: SSH targets with pinned keys, ports, Redis admin, expected replicas", async () => {
    const r = await run(ALL);
    expect(r.read).toEqual([MAIN, R1, R2]);
    const plan = r.plan!;
    expect(plan.targets).toEqual([
      { name: "main", address: "203.0.113.1", port: 22, user: "root", hostKey: KEY },
      { name: "replica-1", address: "203.0.113.2", port: 2222, user: "deploy", hostKey: KEY },
      { name: "replica-2", address: "203.0.113.3", port: 22, user: "root", hostKey: KEY },
    ]);
    expect(plan.ports).toEqual({ postgres: 5432, redis: 6380 });
    expect(plan.redisAdmin).toEqual({ user: "admin", password: ADMIN_PASSWORD });
    expect(plan.expectation.replicas.map((x) => [x.name, x.checked, x.postgresMode])).toEqual([
      ["replica-1", true, "replica"],
      ["replica-2", true, "replica"],
    ]);
    // Only replica-1 named: replica-2's host is not reached, but still expected.
    const one = await run(["--main", MAIN, "--replica", R1]);
    expect(one.read).toEqual([MAIN, R1]);
    expect(one.plan!.targets.map((t) => t.name)).toEqual(["main", "replica-1"]);
    expect(one.plan!.expectation.replicas.map((x) => x.checked)).toEqual([true, false]);
    expect(one.code).toBe(0);
  });

  it("without --replica, finds the replica stacks from the main stack's fleet.replicas, named after each replica beside it", async () => {
    const r = await run(["--main", MAIN]);
    expect(r.read).toEqual([MAIN, R1, R2]);
    expect(r.plan!.targets.map((t) => t.name)).toEqual(["main", "replica-1", "replica-2"]);
    expect(r.plan!.expectation.replicas.map((x) => x.checked)).toEqual([true, true]);
    expect(r.code).toBe(0);
    // A stack named without organisation and project: the replica's stack is named the same way.
    const outs = outputs();
    const bare = await run(["--main", "main"], { outs: { main: outs[MAIN]!, "replica-1": outs[R1]!, "replica-2": outs[R2]! } });
    expect(bare.read).toEqual(["main", "replica-1", "replica-2"]);
    expect(bare.code).toBe(0);
  });

  it("the main stack from SYNAXIC_MAIN_STACK when --main is not given", async () => {
    const r = await run([], { deps: { env: { SYNAXIC_MAIN_STACK: MAIN } } });
    expect(r.read).toEqual([MAIN, R1, R2]);
    expect(r.code).toBe(0);
  });

  it("a replica stack found from the main stack that does not exist: exit 1 saying how it was named and how to name it", async () => {
    const outs = outputs();
    delete outs[R2];
    const r = await run(["--main", MAIN], { outs });
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toContain(`status: cannot read stack ${R2}: pulumi stack output failed`);
    expect(r.stderr).toContain(`the stack of a replica that ${MAIN} lists, named after it; name replica stacks with --replica`);
  });

  it("asks each host's pgBackRest only when the main stack's fleet.backup is set", async () => {
    const info = JSON.stringify([
      {
        name: "synaxic",
        status: { code: 0, message: "ok" },
        backup: [{ label: "20261130-010000F", type: "full", timestamp: { start: 1000, stop: 1100 }, info: { size: 1, delta: 1, repository: { size: 1, delta: 1 } } }],
        archive: [{ id: "15-1", min: "000000010000000000000001", max: "000000010000000000000007" }],
      },
    ]);
    const without = await run(ALL, { fake: { backupInfo: "not json" } });
    expect(without.code).toBe(0);
    expect(without.stdout).not.toContain("backups:");
    const outs = outputs();
    (outs[MAIN]!.fleet as Record<string, unknown>).backup = { repository: {}, schedule: {}, standby: null };
    const withBackups = await run([...ALL, "--json"], { outs, fake: { backupInfo: info } });
    expect(withBackups.code).toBe(0);
    const report = JSON.parse(withBackups.stdout);
    expect(report.facts.main.backup.value).toMatchObject({ stanza: "synaxic", backupCount: 1, newest: { label: "20261130-010000F", type: "full", stoppedAt: 1100 } });
    expect(report.facts.replicas.map((h: { backup: { ok: boolean } }) => h.backup.ok)).toEqual([true, true]);
    // Judged only with --max-backup-age: the backup stopped at 1100 (1970) is older than a day.
    const judged = await run([...ALL, "--max-backup-age", "24"], { outs, fake: { backupInfo: info } });
    expect(judged.code).toBe(EXIT.unhealthy);
    expect(judged.stdout).toMatch(/^- \[backup-stale\] main: the newest backup 20261130-010000F \(full\) is \d+ s old \(> 86400 s\)$/m);
  });

  it.each([
    ["a missing output", (o: Record<string, Record<string, unknown>>) => delete o[MAIN]!.hostKey, `stack ${MAIN}: output "hostKey" is missing`],
    ["a host key that is not an SSH public key", (o: Record<string, Record<string, unknown>>) => (o[MAIN]!.hostKey = "AAAAC3Nza"), `stack ${MAIN}: output "hostKey" is malformed: expected an SSH public key`],
    ["a bad ssh user", (o: Record<string, Record<string, unknown>>) => (o[R1]!.sshUser = "root; rm -rf /"), `stack ${R1}: output "sshUser" is malformed: expected a Unix user name`],
    ["a fleet of another version", (o: Record<string, Record<string, unknown>>) => ((o[MAIN]!.fleet as Record<string, unknown>).version = 2), `stack ${MAIN}: output "fleet.version" is malformed`],
    ["a malformed replica entry", (o: Record<string, Record<string, unknown>>) => ((o[MAIN]!.fleet as { replicas: Record<string, unknown>[] }).replicas[1]!.privateIp = "ten"), `stack ${MAIN}: output "fleet.replicas.1.privateIp" is malformed: expected an IPv4 address`],
    ["an unknown postgres mode", (o: Record<string, Record<string, unknown>>) => (o[R2]!.postgresMode = "primary"), `stack ${R2}: output "postgresMode" is malformed`],
    ["replicas that disagree on an address", (o: Record<string, Record<string, unknown>>) => (o[R1]!.privateIp = "10.0.0.9"), `stack ${R1}: replica replica-1 is at 10.0.0.9, but the main stack ${MAIN} lists it at 10.0.0.2`],
    ["replicas that disagree on a slot", (o: Record<string, Record<string, unknown>>) => (o[R1]!.slotName = "synaxic_other"), `stack ${R1}: replica replica-1 uses slot synaxic_other, but the main stack ${MAIN} keeps synaxic_replica_1 for it`],
    ["two stacks for one replica", (o: Record<string, Record<string, unknown>>) => (o[R2] = { ...o[R1]! }), `stacks ${R1} and ${R2} both run replica replica-1`],
  ])("refuses %s with exit 1 and a message naming the stack and output", async (_what, change, message) => {
    const outs = outputs();
    change(outs);
    const r = await run(ALL, { outs });
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toContain(`status: ${message}`);
    expect(r.stdout).toBe("");
    expect(r.plan).toBeUndefined();
  });

  it("never echoes a secret output's value, even a malformed one", async () => {
    const outs = outputs();
    (outs[MAIN]!.replicaCredentials as Record<string, unknown>).redisAdmin = "hunter2";
    const r = await run(ALL, { outs });
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toContain(`stack ${MAIN}: output "replicaCredentials.redisAdmin" is malformed: expected a generated password`);
    expect(r.stderr).not.toContain("hunter2");
  });

  it("a stack that cannot be read: exit 1 with the Pulumi CLI's message", async () => {
    const r = await run(["--main", MAIN, "--replica", "acme/synaxic/replica-7"]);
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toBe("status: cannot read stack acme/synaxic/replica-7: pulumi stack output failed: error: no stack named 'acme/synaxic/replica-7' found\n");
  });

  it("a replica stack the main stack does not list is a problem of the fleet (exit 2), not an error", async () => {
    const outs = outputs();
    outs["acme/synaxic/replica-9"] = { ...outs[R2]!, replicaName: "replica-9", slotName: "synaxic_replica_9", privateIp: "10.0.0.9" };
    const r = await run([...ALL, "--replica", "acme/synaxic/replica-9"], { outs, fake: { pg: { "replica-9": standby("synaxic_replica_9") }, redis: { "replica-9": REPLICA_INFO } } });
    expect(r.code).toBe(EXIT.unhealthy);
    expect(r.stdout).toContain("- [replica-stack-unknown] replica-9: stack acme/synaxic/replica-9 runs replica replica-9, which the main stack's fleet does not list");
  });

  describe("through the Pulumi CLI", () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), "status-pulumi-"));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const fakePulumi = (name: string, body: string): string => {
      const file = join(dir, name);
      writeFileSync(file, `#!/bin/sh\n${body}\n`);
      chmodSync(file, 0o755);
      return file;
    };

    it("runs `pulumi stack output --json --show-secrets --stack <name>` and parses its JSON", async () => {
      const bin = fakePulumi("ok", `printf '{"args": "%s"}' "$*"`);
      expect(await pulumiStackOutputs(bin)(MAIN)).toEqual({ args: `stack output --json --show-secrets --stack ${MAIN}` });
    });

    it("explains a missing CLI, a failing one, and output that is not a JSON object", async () => {
      await expect(pulumiStackOutputs(join(dir, "no-such-pulumi"))(MAIN)).rejects.toThrow(`cannot read stack ${MAIN}: the Pulumi CLI (${join(dir, "no-such-pulumi")}) is not on PATH`);
      const failing = fakePulumi("fail", "echo 'error: no stack named acme/synaxic/main found' >&2; exit 255");
      await expect(pulumiStackOutputs(failing)(MAIN)).rejects.toThrow(`cannot read stack ${MAIN}: pulumi stack output failed: error: no stack named acme/synaxic/main found`);
      const garbage = fakePulumi("garbage", "echo '[1, 2]'");
      await expect(pulumiStackOutputs(garbage)(MAIN)).rejects.toThrow("did not print a JSON object");
      await expect(pulumiStackOutputs(garbage)(MAIN)).rejects.toBeInstanceOf(StackOutputError);
    });
  });
});

describe("SSH identity", () => {
  it("without an agent or --identity: exit 1 saying how to give one", async () => {
    const r = await run(ALL, { deps: { connect: sshConnect, env: {} } });
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toContain("status: no SSH identity: start an ssh-agent holding the fleet's key (SSH_AUTH_SOCK) or give --identity <private key file>");
  });

  it("with --identity naming no file: exit 1", async () => {
    const r = await run([...ALL, "--identity", "/nonexistent/id_ed25519"], { deps: { connect: sshConnect, env: { SSH_AUTH_SOCK: "/tmp/agent.sock" } } });
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toContain("status: --identity /nonexistent/id_ed25519: no readable key file there");
  });

  it("with an agent: a connection whose close() removes the pinned known_hosts files", async () => {
    const statusDirs = () => new Set(readdirSync(tmpdir()).filter((d) => d.startsWith("synaxic-status-")));
    const before = statusDirs();
    const plan = buildPlan(MAIN, outputs()[MAIN]!, []);
    const c = await sshConnect(plan, parseStatusArgs(["--main", MAIN]), { SSH_AUTH_SOCK: "/tmp/agent.sock" });
    const created = [...statusDirs()].filter((d) => !before.has(d)).map((d) => join(tmpdir(), d));
    expect(created).toHaveLength(1);
    expect(readFileSync(join(created[0]!, "known_hosts-main"), "utf8")).toBe(`203.0.113.1 ${KEY}\n`);
    expect(statSync(created[0]!).mode & 0o777).toBe(0o700);
    await c.close();
    expect(existsSync(created[0]!)).toBe(false);
  });
});

describe("exit status", () => {
  it("0 for a healthy fleet, with the report on stdout and nothing on stderr", async () => {
    const r = await run(ALL);
    expect(r.code).toBe(EXIT.healthy);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/Problems: none\nVerdict: HEALTHY \(2 replicas expected\)\n$/);
  });

  it("2 when anything is unhealthy", async () => {
    const r = await run(ALL, { fake: { redis: { "replica-2": REPLICA_INFO.replace("master_link_status:up", "master_link_status:down") } } });
    expect(r.code).toBe(EXIT.unhealthy);
    expect(r.stdout).toMatch(/- \[redis-link-down\] replica-2: /);
    expect(r.stdout).toMatch(/Verdict: UNHEALTHY \(1 problem\)\n$/);
    expect(r.stderr).toBe("");
  });

  it("2 when a server does not answer on a reachable host", async () => {
    const r = await run(ALL, { fake: { fail: { "replica-1": new CommandError("replica-1", "psql", "exit 1: Error response from daemon: container synaxic-replica-1-postgres is not running") } } });
    expect(r.code).toBe(EXIT.unhealthy);
    expect(r.stdout).toContain("- [postgres-unavailable] replica-1: PostgreSQL did not answer: psql on replica-1 failed: exit 1: Error response from daemon: container synaxic-replica-1-postgres is not running");
  });

  it("1 when a host cannot be reached: the partial report, and which host on stderr", async () => {
    const r = await run(ALL, { fake: { fail: { "replica-2": new ConnectionError("replica-2", "ssh root@203.0.113.3:22: Host key verification failed.") } } });
    expect(r.code).toBe(EXIT.error);
    expect(r.stderr).toBe("status: could not reach replica-2; the report is incomplete\n");
    expect(r.stdout).toContain("replica-2: unreachable: cannot reach replica-2: ssh root@203.0.113.3:22: Host key verification failed.");
    expect(r.stdout).toMatch(/Verdict: INCOMPLETE/);
  });

  it("--json prints the report as JSON without the Redis admin password", async () => {
    const r = await run([...ALL, "--json"], { fake: { pg: { "replica-1": { ...standby("synaxic_replica_1"), replay_paused: true } } } });
    expect(r.code).toBe(EXIT.unhealthy);
    const json = JSON.parse(r.stdout);
    expect(json.verdict).toBe("unhealthy");
    expect(json.problems).toEqual([{ kind: "replay-paused", host: "replica-1", message: expect.stringContaining("paused") }]);
    expect(r.stdout).not.toContain(ADMIN_PASSWORD);
  });
});

describe("npm run status (scripts/status.ts)", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "status-script-"));
    const outs = outputs();
    const fake = (name: string, body: string) => {
      writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
      chmodSync(join(dir, name), 0o755);
    };
    // pulumi prints the outputs of the stack named after --stack; ssh cannot connect.
    fake("pulumi", `case "$6" in ${Object.keys(outs).map((k) => `${k}) echo '${JSON.stringify(outs[k])}';;`).join(" ")} *) echo "error: no stack named $6" >&2; exit 255;; esac`);
    fake("ssh", 'echo "ssh: connect to host $(eval echo \\${$(($# - 1))}) port 22: No route to host" >&2; exit 255');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const script = (args: string[], env: Record<string, string>) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ["-r", "ts-node/register", join(__dirname, "..", "..", "scripts", "status.ts"), ...args],
        { env: { PATH: `${dir}:/usr/bin:/bin`, TS_NODE_TRANSPILE_ONLY: "true", ...env }, timeout: 60_000 },
        (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr }),
      );
    });

  it("reads the stacks through the Pulumi CLI, refuses to go on without an SSH identity, and exits 1", async () => {
    const r = await script(ALL, {});
    expect(r.stderr).toContain("status: no SSH identity");
    expect(r.code).toBe(1);
  });

  it("exits 1 naming the stack the Pulumi CLI cannot read", async () => {
    const r = await script(["--main", "acme/synaxic/nope"], { SSH_AUTH_SOCK: "/tmp/agent.sock" });
    expect(r.stderr).toBe("status: cannot read stack acme/synaxic/nope: pulumi stack output failed: error: no stack named acme/synaxic/nope\n");
    expect(r.code).toBe(1);
  });

  it("reaches the hosts with ssh; unreachable hosts give an incomplete report and exit 1", async () => {
    const r = await script(["--main", MAIN, "--replica", R1], { SSH_AUTH_SOCK: "/tmp/agent.sock" });
    expect(r.stdout).toContain("PostgreSQL primary main: unreachable: cannot reach main: ssh root@203.0.113.1:22: ssh: connect to host 203.0.113.1 port 22: No route to host");
    expect(r.stdout).toContain("replica-1: unreachable: cannot reach replica-1: ssh deploy@203.0.113.2:2222: ssh: connect to host 203.0.113.2 port 22: No route to host");
    expect(r.stderr).toBe("status: could not reach main, replica-1; the report is incomplete\n");
    expect(r.code).toBe(1);
  });
});
