/**
 * The status command against real servers: a PostgreSQL primary with two
 * streaming replicas and a Redis master with two TLS replicas, started from
 * the rendered templates on the rig. The command runs through runStatus (the
 * code path of `npm run status`) with the stacks' outputs built from the rig
 * and a runner that reaches each host's servers inside its namespace instead
 * of over ssh/docker exec; the queries, parsers, evaluator and report are the
 * real ones. Healthy fleet, then lag, a stopped replica and a cut Redis link;
 * last, a switchover under a control stack (replica1 promoted, main fenced by
 * a stop, then rewound): the report follows the control stack's primary.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa } from "../rig/pki";
import { lsnDiff, PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";
import { randomRedisUsers, redisInfo, RedisServer, waitInSync } from "../rig/redis";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { renderPromoteSql } from "../../templates/postgres";
import type { ControlInfo } from "../../lib/control";
import { psqlScriptArgv } from "../../templates/postgres-sql";
import { runStatus, type StatusDeps } from "../../lib/status/cli";
import { CommandError } from "../../lib/status/errors";
import { redisCliScript } from "../../lib/status/redis";
import type { HostRunner } from "../../lib/status/gather";
import type { Problem, StatusReport } from "../../lib/status/types";

// Short Redis link timeouts, so that a cut link is declared down within seconds.
const REDIS_TIMING = { replDisklessSyncDelay: 0, replPingReplicaPeriod: 1, replTimeout: 3 } as const;
const MAIN_STACK = "acme/synaxic/main";
const REPLICA_STACKS = ["acme/synaxic/replica1", "acme/synaxic/replica2"];
const CONTROL_STACK = "acme/synaxic/control";
/** What the control stack's output says; undefined: the fleet has none. */
let control: ControlInfo | undefined;
const ARGS = ["--main", MAIN_STACK, ...REPLICA_STACKS.flatMap((s) => ["--replica", s])];

let net: TestNet;
let cluster: PgCluster;
let main: PgNode;
let replicas: PgNode[];
let redis: Map<string, RedisServer>;
const users = randomRedisUsers();
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

const hostKey = () => `ssh-ed25519 ${Buffer.concat([Buffer.from("0000000b7373682d6564323535313900000020", "hex"), randomBytes(32)]).toString("base64")}`;

/** The outputs `pulumi stack output --json --show-secrets` prints for the main stack and each replica stack. */
function stackOutputs(): Record<string, Record<string, unknown>> {
  const ports = { http: 80, https: 443, postgres: 5432, redis: 6380, app: 8080, prometheus: 9090, grafana: 3000, nodeExporter: 9100, postgresExporter: 9187, redisExporter: 9121 };
  const out: Record<string, Record<string, unknown>> = {
    [MAIN_STACK]: {
      publicAddress: main.host.ip,
      hostKey: hostKey(),
      sshUser: "root",
      fleet: {
        version: 1,
        mainPrivateIp: main.host.ip,
        privateNetworkCidr: `${net.subnet}.0/24`,
        networkId: null,
        databaseName: cluster.roles.appDatabase,
        ports,
        maxSlotWalKeepSizeMB: 1024,
        walKeepSizeMB: 64,
        replicas: replicas.map((r) => ({ name: r.name, privateIp: r.host.ip, slotName: r.slotName })),
        redisUsers: { app: users.app.name, replication: users.replication.name, exporter: users.exporter.name, admin: users.admin.name },
      },
      replicaCredentials: { redisAdmin: users.admin.password, redisApp: users.app.password },
      slots: Object.fromEntries(replicas.map((r) => [r.name, r.slotName])),
      ...(control ? { controlStack: CONTROL_STACK, controlGeneration: control.generation, primary: control.primary } : {}),
    },
  };
  replicas.forEach((r, i) => {
    const primary = control?.primary === r.name;
    out[REPLICA_STACKS[i]!] = {
      replicaName: r.name,
      slotName: r.slotName,
      publicAddress: r.host.ip,
      privateIp: r.host.ip,
      postgresMode: primary ? "promoted" : "replica",
      redisRole: primary ? "master" : "replica",
      hostKey: hostKey(),
      sshUser: "root",
      ...(control ? { controlStack: CONTROL_STACK, controlGeneration: control.generation, primary: control.primary } : {}),
    };
  });
  if (control) out[CONTROL_STACK] = { control };
  return out;
}

/**
 * Reaches a rig host's servers in its namespace: psql as the postgres OS
 * user over the server's socket with the SQL on stdin, redis-cli through
 * the status command's own script with the admin password on stdin.
 */
function rigRunner(redisAdmin: { user: string; password: string }): HostRunner {
  const node = (host: string): PgNode => {
    const n = [main, ...replicas].find((x) => x.name === host);
    if (!n) throw new Error(`no PostgreSQL on ${host}`);
    return n;
  };
  return {
    async psql(host, sql) {
      const n = node(host);
      const argv = [join(cluster.bin, "psql"), ...psqlScriptArgv({ host: n.socketDir, port: n.port }).slice(1)];
      const r = await n.host.exec(argv, { user: "postgres", input: sql, allowFail: true, timeoutMs: 20_000 });
      if (r.code !== 0) throw new CommandError(host, "psql", `exit ${r.code}: ${r.stderr.trim()}`);
      return r.stdout;
    },
    async redis(host, args) {
      const s = redis.get(host);
      if (!s) throw new Error(`no Redis on ${host}`);
      const script = redisCliScript({ caFile: s.caFile, port: s.port, user: redisAdmin.user, args });
      const r = await s.host.exec(["sh", "-c", script], { input: `${redisAdmin.password}\n`, allowFail: true, timeoutMs: 20_000 });
      if (r.code !== 0) throw new CommandError(host, "redis-cli", `exit ${r.code}: ${r.stderr.trim()}`);
      return r.stdout;
    },
    async backupInfo(host) {
      // This fleet has no backups (no fleet.backup): the command never asks.
      throw new Error(`pgbackrest info asked on ${host} of a fleet without backups`);
    },
  };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function status(extra: string[] = []): Promise<Run> {
  const outputs = stackOutputs();
  const run: Run = { code: -1, stdout: "", stderr: "" };
  const deps: StatusDeps = {
    readStackOutputs: async (stack) => {
      const o = outputs[stack];
      if (!o) throw new Error(`no such stack ${stack}`);
      return o;
    },
    connect: async (plan) => ({ runner: rigRunner(plan.redisAdmin), close: () => undefined }),
    stdout: (t) => (run.stdout += t),
    stderr: (t) => (run.stderr += t),
    env: {},
  };
  run.code = await runStatus([...ARGS, ...extra], deps);
  return run;
}

async function statusJson(extra: string[] = []): Promise<{ code: number; report: StatusReport & { verdict: string } }> {
  const r = await status(["--json", ...extra]);
  return { code: r.code, report: JSON.parse(r.stdout) as StatusReport & { verdict: string } };
}

const kinds = (problems: Problem[]) => problems.map((p) => `${p.kind} ${p.host}${p.subject ? ` ${p.subject}` : ""}`).sort();

function redisConf(s: RedisServer, masterHost?: string): string {
  const common = { bind: [s.host.ip, "127.0.0.1"], port: s.port, ...s.paths, ...REDIS_TIMING, announce: { ip: s.host.ip, port: s.port } };
  return masterHost
    ? renderRedisConf({ ...common, role: "replica", masterHost, masterPort: 6380, masterUser: users.replication.name, masterPassword: users.replication.password })
    : renderRedisConf({ ...common, role: "master" });
}

beforeAll(async () => {
  net = await TestNet.create(["main", "replica1", "replica2"]);
  const ca = makeCa("status-ca", net.mkdir("ca"));
  const hosts = ["main", "replica1", "replica2"].map((n) => net.host(n));
  cluster = new PgCluster({ net, ca, dbHosts: hosts, appHosts: [hosts[0]!], exporterHosts: [hosts[0]!] });
  main = cluster.node(hosts[0]!);
  replicas = [cluster.node(hosts[1]!), cluster.node(hosts[2]!)];

  // Redis: master on main, a replica on each replica host, TLS with the rig CA.
  redis = new Map();
  const acl = renderRedisAcl(users);
  const start = async (h: Host, masterHost?: string) => {
    const cert = ca.issue(`redis-${h.name}`, [h.ip, "127.0.0.1"]);
    const s = RedisServer.create(net, h, h.name, { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    redis.set(h.name, s);
    await s.start(redisConf(s, masterHost), acl);
  };

  await Promise.all([startPrimaryWithRoles(main), start(hosts[0]!)]);
  await Promise.all([...replicas.map((r) => r.startReplica("replica", main)), start(hosts[1]!, main.host.ip), start(hosts[2]!, main.host.ip)]);
  for (const r of replicas) await main.waitStreaming(r);
  for (const h of hosts.slice(1)) await waitInSync(h, redis.get("main")!.target, redis.get(h.name)!.localTarget, users.admin);
  console.log(`[status] fleet up: ${elapsed()}`);
});

afterAll(async () => {
  await net?.destroy();
});

describe("status command against real servers", () => {
  it("reports a healthy fleet and exits 0: both replicas streaming, slots active, lag in bytes, Redis links up", async () => {
    const text = await status();
    expect(text.stderr).toBe("");
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^application_name \| client_addr +\| state +\| sync_state \| sent_lsn .*\| lag_bytes \| write_lag \| flush_lag \| replay_lag$/m);
    for (const r of replicas) {
      expect(text.stdout).toMatch(new RegExp(`^${r.name} +\\| ${r.host.ip.replace(/\./g, "\\.")} +\\| streaming \\| async +\\| \\d+/[0-9A-F]+ `, "m"));
      expect(text.stdout).toMatch(new RegExp(`^${r.slotName} +\\| yes +\\| reserved `, "m"));
      expect(text.stdout).toMatch(new RegExp(`^${r.name}: standby, WAL receiver streaming from ${main.host.ip.replace(/\./g, "\\.")}:5432 \\(slot ${r.slotName}\\), .*lag \\d+ bytes`, "m"));
      expect(text.stdout).toMatch(new RegExp(`^${r.name}: replica of ${main.host.ip.replace(/\./g, "\\.")}:6380, link up, offset \\d+$`, "m"));
    }
    expect(text.stdout).toMatch(/^main: master, 2 connected replicas, offset \d+$/m);
    expect(text.stdout).toMatch(/^Problems: none\nVerdict: HEALTHY \(2 replicas expected\)\n$/m);

    const { code, report } = await statusJson();
    expect(code).toBe(0);
    expect(report.verdict).toBe("healthy");
    expect(report.problems).toEqual([]);
    const pg = report.facts.main.postgres;
    if (!pg.ok) throw new Error(pg.error);
    expect(pg.value.inRecovery).toBe(false);
    expect(pg.value.replication.map((r) => [r.applicationName, r.clientAddr, r.state])).toEqual(replicas.map((r) => [r.name, r.host.ip, "streaming"]));
    for (const row of pg.value.replication) {
      // lag_bytes is pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), measured in the same statement.
      expect(typeof row.lagBytes).toBe("number");
      expect(Math.abs(row.lagBytes! - lsnDiff(pg.value.currentLsn!, row.replayLsn!))).toBeLessThan(64 * 1024);
    }
    expect(pg.value.slots.map((s) => [s.slotName, s.active, s.walStatus])).toEqual(replicas.map((r) => [r.slotName, true, "reserved"]));
    // Timeline and uptime, as the server itself says (pg_control_checkpoint(), pg_postmaster_start_time()).
    expect(pg.value.timeline).toBe(await main.timeline());
    expect(pg.value.uptimeSeconds!).toBeGreaterThan(0);
    expect(Math.abs(Date.parse(pg.value.startedAt!) + pg.value.uptimeSeconds! * 1000 - Date.now())).toBeLessThan(30_000);
    expect(pg.value.archiver).toMatchObject({ failedCount: 0 });
    expect(text.stdout).toMatch(new RegExp(`^main: timeline ${pg.value.timeline}, up \\d+ (s|min) \\(since \\d{4}-`, "m"));
    for (const h of report.facts.replicas) {
      if (!h.postgres.ok) throw new Error(h.postgres.error);
      expect(h.postgres.value.inRecovery).toBe(true);
      expect(h.postgres.value.walReceiver).toMatchObject({ status: "streaming", senderHost: main.host.ip, senderPort: 5432 });
      expect(typeof h.postgres.value.lagBytes).toBe("number");
      if (!h.redis.ok) throw new Error(h.redis.error);
      expect(h.redis.value).toMatchObject({ role: "slave", masterHost: main.host.ip, masterLinkStatus: "up" });
    }
    const m = report.facts.main.redis;
    if (!m.ok) throw new Error(m.error);
    expect(m.value.slaves.map((s) => [s.ip, s.port, s.state]).sort()).toEqual(replicas.map((r) => [r.host.ip, 6380, "online"]));
    // The JSON carries no secret.
    expect(JSON.stringify(report)).not.toContain(users.admin.password);
    console.log(`[status] healthy: ${elapsed()}`);
  });

  it("measures lag in bytes while a replica's replay is paused, and flags it only over the threshold", async () => {
    const [r1, r2] = replicas as [PgNode, PgNode];
    await r1.psql("SELECT pg_wal_replay_pause()");
    try {
      await main.psql("CREATE TABLE lag_filler AS SELECT g AS id, repeat(md5(g::text), 40) AS v FROM generate_series(1, 4000) g", { db: cluster.roles.appDatabase });
      const written = await main.lsn();
      // The standby receives the WAL but does not replay it.
      await waitFor("replica1 to receive the new WAL", async () => lsnDiff(await r1.value("SELECT pg_last_wal_receive_lsn()"), written) >= 0, 20_000, 100);
      await r2.waitReplayed(written);

      const { code, report } = await statusJson(["--max-lag-bytes", "1MB"]);
      expect(code).toBe(2);
      expect(report.verdict).toBe("unhealthy");
      expect(kinds(report.problems)).toEqual(["lag-bytes main replica1", "lag-bytes replica1", "replay-paused replica1"]);
      const facts = report.facts.replicas.find((h) => h.name === "replica1")!.postgres;
      if (!facts.ok) throw new Error(facts.error);
      // What the standby reports equals its receive LSN minus its replay LSN, checked independently.
      const [receive, replay] = (await r1.query("SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()"))[0]!;
      expect(facts.value.lagBytes).toBe(lsnDiff(receive!, replay!));
      expect(facts.value.lagBytes!).toBeGreaterThan(1024 * 1024);
      expect(facts.value.replayPaused).toBe(true);
      const pg = report.facts.main.postgres;
      if (!pg.ok) throw new Error(pg.error);
      const row1 = pg.value.replication.find((r) => r.applicationName === "replica1")!;
      const row2 = pg.value.replication.find((r) => r.applicationName === "replica2")!;
      expect(row1.lagBytes!).toBeGreaterThanOrEqual(facts.value.lagBytes!);
      expect(row2.lagBytes!).toBeLessThan(1024 * 1024);

      // Over a larger threshold the lag is shown but not a problem; the paused replay still is.
      const relaxed = await status(["--max-lag-bytes", "1GB"]);
      expect(relaxed.code).toBe(2);
      expect(relaxed.stdout).toMatch(/^replica1: standby, .*lag \d+ bytes \(\d+\.\d MiB\), REPLAY PAUSED$/m);
      expect(relaxed.stdout).toMatch(/^- \[replay-paused\] replica1: /m);
      expect(relaxed.stdout).not.toContain("[lag-bytes]");
      expect(relaxed.stdout).toMatch(/^Verdict: UNHEALTHY \(1 problem\)$/m);
    } finally {
      await r1.psql("SELECT pg_wal_replay_resume()");
    }
    await r1.waitReplayed(await main.lsn());
    expect((await status()).code).toBe(0);
    console.log(`[status] lag: ${elapsed()}`);
  });

  it("reports a stopped replica: missing from pg_stat_replication, its slot inactive, its server down; exits 2", async () => {
    const r2 = replicas[1]!;
    await r2.stop("fast");
    try {
      const { code, report } = await statusJson();
      expect(code).toBe(2);
      expect(kinds(report.problems)).toEqual(["postgres-unavailable replica2", "replica-missing main replica2", `slot-inactive main ${r2.slotName}`]);
      expect(report.problems.find((p) => p.kind === "postgres-unavailable")!.message).toMatch(/psql/);

      const text = await status();
      expect(text.code).toBe(2);
      expect(text.stdout).toMatch(new RegExp(`^${r2.slotName} +\\| no +\\| reserved `, "m"));
      expect(text.stdout).toMatch(/^replica2: did not answer: psql on replica2 failed/m);
      expect(text.stdout).toMatch(/^Verdict: UNHEALTHY \(3 problems\)$/m);
    } finally {
      await r2.startReplica("replica", main);
    }
    await main.waitStreaming(r2);
    await waitFor("a healthy verdict after replica2 is back", async () => (await status()).code === 0, 20_000, 250);
    console.log(`[status] stopped replica: ${elapsed()}`);
  });

  it("reports a cut Redis replication link (master_link_status down) and exits 2", async () => {
    const h2 = replicas[1]!.host;
    const replica = redis.get("replica2")!;
    await h2.cut();
    try {
      await waitFor("replica2's Redis to declare its link down", async () => (await redisInfo(h2, replica.localTarget, "replication", users.admin)).master_link_status === "down", 15_000, 200);
      const { code, report } = await statusJson();
      expect(code).toBe(2);
      expect(kinds(report.problems)).toContain("redis-link-down replica2");
      expect(report.problems.filter((p) => p.host === "replica1" || p.subject === "replica1")).toEqual([]);
      const text = await status();
      expect(text.stdout).toMatch(new RegExp(`^replica2: replica of ${main.host.ip.replace(/\./g, "\\.")}:6380, link down for \\d+ s, offset \\d+$`, "m"));
      expect(text.stdout).toMatch(/^- \[redis-link-down\] replica2: master_link_status is down/m);
    } finally {
      await h2.restore();
    }
    await waitInSync(h2, redis.get("main")!.target, replica.localTarget, users.admin);
    await main.waitStreaming(replicas[1]!);
    await waitFor("a healthy verdict after the link is back", async () => (await status()).code === 0, 30_000, 250);
    console.log(`[status] redis link: ${elapsed()}`);
  });

  it("under a control stack the report follows its primary: replica1 promoted, main fenced (one problem while it is stopped), healthy once main is rewound and streams from replica1", async () => {
    const [r1, r2] = replicas as [PgNode, PgNode];
    const admin = rigRunner({ user: users.admin.name, password: users.admin.password });
    const acl = renderRedisAcl(users);
    // The fence (stop): main's Redis and PostgreSQL stop; the control stack records replica1 as primary, main fenced.
    await redis.get("main")!.stop();
    await main.stop("fast");
    // Both standbys have what main wrote up to its shutdown checkpoint, so replica2 can follow replica1's new timeline.
    const shutdownCheckpoint = /^Latest checkpoint location:\s*(\S+)$/m.exec(execFileSync(join(cluster.bin, "pg_controldata"), [main.dataDir], { encoding: "utf8" }))![1]!;
    for (const r of [r1, r2]) await r.waitReplayed(shutdownCheckpoint);
    control = { version: 1, primary: r1.name, generation: 1, previousPrimary: "main", fenced: { main: { method: "stop", generation: 1 } } };
    // replica1's stack: PostgreSQL promoted, a slot for everyone who follows it, Redis the master.
    expect((await r1.psql(renderPromoteSql())).stdout.trim()).toBe("primary");
    for (const slot of [main.slotName, r2.slotName]) await r1.psql(`SELECT pg_create_physical_replication_slot('${slot}', true)`);
    await admin.redis(r1.name, ["REPLICAOF", "NO", "ONE"]);
    // replica2's stack: follows replica1 (PostgreSQL on the new timeline, Redis).
    await r2.stop("fast");
    await r2.startReplica("replica", r1);
    await admin.redis(r2.name, ["REPLICAOF", r1.host.ip, "6380"]);
    await r1.waitStreaming(r2);
    await waitInSync(r2.host, redis.get(r1.name)!.target, redis.get(r2.name)!.localTarget, users.admin);

    const fenced = await statusJson();
    expect(fenced.code).toBe(2);
    expect(fenced.report.verdict).toBe("unhealthy");
    expect(kinds(fenced.report.problems)).toEqual(["fenced main"]);
    expect(fenced.report.expectation.control).toEqual({ stack: CONTROL_STACK, primary: r1.name, generation: 1, previousPrimary: "main", fenced: { main: { method: "stop", generation: 1 } } });
    const text = await status();
    expect(text.stdout).toMatch(new RegExp(`^Control stack ${CONTROL_STACK}: primary replica1, generation 1, previously main; fenced: main \\(stop, generation 1\\)$`, "m"));
    expect(text.stdout).toMatch(new RegExp(`^PostgreSQL primary replica1 \\(${r1.host.ip.replace(/\./g, "\\.")}\\): current WAL position `, "m"));
    expect(text.stdout).toMatch(new RegExp(`^replica2 +\\| ${r2.host.ip.replace(/\./g, "\\.")} +\\| streaming `, "m"));
    expect(text.stdout).toMatch(new RegExp(`^${main.slotName} +\\| no `, "m"));

    // main's next `pulumi up`: rewound onto replica1's timeline, streaming through its slot there; its Redis a replica of replica1.
    await main.startReplica("rejoin", r1);
    await r1.waitStreaming(main);
    await redis.get("main")!.start(redisConf(redis.get("main")!, r1.host.ip), acl);
    let last: Run = { code: -1, stdout: "", stderr: "" };
    await waitFor("a healthy verdict with main back as a standby of replica1", async () => (last = await status()).code === 0, 60_000, 500).catch((e) => {
      throw new Error(`${String(e)}\n${last.stdout}${last.stderr}`);
    });
    expect(last.stdout).toMatch(/^PostgreSQL replicas\nmain \[fenced stop, generation 1\]: standby, WAL receiver streaming from /m);
    expect(last.stdout).toMatch(new RegExp(`^replica1: master, 2 connected replicas`, "m"));
    const { report } = await statusJson();
    const pg = report.facts.replicas.find((h) => h.name === "replica1")!.postgres;
    if (!pg.ok) throw new Error(pg.error);
    // The lag shown is replica1's view of its standbys, main included.
    expect(pg.value.replication.map((r) => r.applicationName).sort()).toEqual(["main", "replica2"]);
    expect(pg.value.timeline).toBe(2);
    console.log(`[status] switchover under the control stack: ${elapsed()}`);
  });
});
