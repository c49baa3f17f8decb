/**
 * The real-engine tier: the program run by the Pulumi CLI with the real
 * docker, command, tls and random providers, against hosts that are network
 * namespaces with their own sshd and dockerd, as `hostProvider: existing`.
 * Each step is what an operator does, in order, on one fleet.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Checkout, Engine } from "./engine";
import { startTier, stopTier, type Tier } from "./tier";
import type { EngineRig } from "./hosts";
import { balancerLoad, controlConfig, fleetDeploy, initControlStack, initStack, mainConfig, psql, recoverInterrupted, replicaConfig, rigRedisBackupPackages, statusCommand } from "./fleet";
import { PipeSession, psqlBackend, redisEcho } from "../rig/session";
import { waitFor } from "../rig/net";
import { makeCa } from "../rig/pki";
import { S3StandIn } from "../rig/s3";
import { OPENSSL_ENC } from "../../templates/redis-backup";
import { DEFAULT_IMAGES } from "../../lib/config";
import { postgresMajorOf } from "../../lib/postgresMajor";

/** pgBackRest's archive id: the PostgreSQL major the fleet runs (the default image's), then the stanza's history id. */
const ARCHIVE_ID = `${postgresMajorOf(DEFAULT_IMAGES.postgresImage)}-1`;

let tier: Tier;
let rig: EngineRig;
let engine: Engine;
let work: string;
let co: Checkout;
let s3: S3StandIn;

/** The fleet's object storage: an S3 endpoint in a namespace of its own, by DNS name, over HTTPS from a CA of its own. */
const S3_NAME = "objects.rig.internal";
const S3_BUCKET = "synaxic-backups";

beforeAll(async () => {
  tier = await startTier("lifecycle", ["main", "replica-1", "replica-2", "replica-3"], [], { plainHosts: ["s3"], dnsNames: { [S3_NAME]: "s3" } });
  ({ rig, engine, work, co } = tier);
  mkdirSync(join(work, "s3-ca"));
  const ca = makeCa("object-storage-ca", join(work, "s3-ca"));
  // The stand-in checks every request's AWS Signature V4 against this key.
  s3 = await S3StandIn.start({ host: rig.net.host("s3"), ca, dnsName: S3_NAME, port: 9000, bucket: S3_BUCKET, accessKey: "engine-tier-key", secretKey: "engine-tier-secret-access-key" });
  rig.backup = {
    repository: { endpoint: s3.endpoint, bucket: S3_BUCKET, region: "rig", caCertificate: ca.certPem },
    accessKeyId: "engine-tier-key",
    secretAccessKey: "engine-tier-secret-access-key",
    redisBackupPackages: await rigRedisBackupPackages(rig.host("main")),
  };
}, 3_600_000);

afterAll(async () => {
  await s3?.kill();
  await stopTier(tier);
});

/**
 * Runs fn for every stack at once and waits for all of them, then throws the
 * first failure. Stacks are independent once the one they read is up (each
 * has its own state file and lock; every command names its stack), as when
 * an operator runs the replicas' stacks side by side.
 */
async function eachStack(stacks: readonly string[], fn: (stack: string) => Promise<void>): Promise<void> {
  const results = await Promise.allSettled(stacks.map(fn));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

describe("a fleet of main and two replicas on the real engine", () => {
  it("previews the main stack before anything exists (and a replica's preview says main is missing)", async () => {
    // The control stack first: it says main is primary (generation 0) and fences nothing.
    await initControlStack(co, rig, controlConfig(["main", "replica-1", "replica-2"]));
    await co.up("control");
    expect((await co.outputs("control")).control).toEqual({ version: 1, primary: "main", generation: 0, previousPrimary: null, fenced: {} });
    await initStack(co, rig, "main", { ...mainConfig(rig, ["replica-1", "replica-2"]), monitoringReplica: "replica-2" });
    // Main reads each replica it lists in that replica's stack (its certificate requests): a stack that does not
    // exist fails main's program in the engine (pulumi pkg/backend/backend.go: unknown stack), naming it. The stacks come first.
    const missing = await co.pulumi(["preview", "--stack", "main", "--non-interactive"], { allowFail: true });
    expect(missing.code).not.toBe(0);
    expect(missing.stdout + missing.stderr).toMatch(/unknown stack "organization\/synaxic\/replica-[12]"/);
    for (const r of ["replica-1", "replica-2"]) await initStack(co, rig, r, replicaConfig(rig, r));
    const steps = await co.previewChanges("main");
    expect(steps.every((s) => s.op === "create")).toBe(true);
    expect(steps.filter((s) => s.type === "docker:index/container:Container").length).toBeGreaterThanOrEqual(8);
    // A replica stack before main exists: its preview stops, naming the main stack it reads.
    const early = await co.pulumi(["preview", "--stack", "replica-1", "--non-interactive"], { allowFail: true });
    expect(early.code).not.toBe(0);
    expect(early.stdout + early.stderr).toContain("organization/synaxic/main");
    // Docker client settings that would send the provider elsewhere stop the program, by name.
    const redirected = await co.pulumi(["preview", "--stack", "main", "--non-interactive"], { allowFail: true, env: { DOCKER_CONTEXT: "somewhere-else" } });
    expect(redirected.code).not.toBe(0);
    expect(redirected.stdout + redirected.stderr).toContain("DOCKER_CONTEXT is set in this environment");
  });

  it("brings up main, then previews and brings up each replica", async () => {
    // Each replica's stack exists (the test before made them): main reads its certificate requests there.
    await co.up("main");
    // A new replica's first up makes its keys and publishes its certificate requests, and no service; main's next up signs them.
    await eachStack(["replica-1", "replica-2"], async (r) => {
      await co.up(r);
      expect((await co.outputs(r)).tlsSource, r).toBe("pending");
    });
    await co.up("main");
    await eachStack(["replica-1", "replica-2"], async (r) => {
      // A replica stack previews once main exists (it reads main's outputs): everything is a create.
      const steps = await co.previewChanges(r);
      expect(steps.filter((s) => s.op !== "create").map((s) => `${s.op} ${s.urn}`), r).toEqual([]);
      expect(steps.filter((s) => s.type === "docker:index/container:Container").length, r).toBeGreaterThanOrEqual(5);
      await co.up(r);
    });
  });

  it("works: the app answers through the balancer, a write on the primary is read on both replicas", async () => {
    const main = rig.host("main");
    const body = execFileSync("curl", ["-fsS", "--max-time", "10", `http://${main.ip}/actuator/health`]).toString();
    expect(body).toContain("UP");
    await psql(main, "CREATE TABLE IF NOT EXISTS engine_probe (id int primary key, note text); INSERT INTO engine_probe VALUES (1, 'written on main') ON CONFLICT DO NOTHING;", "synaxic");
    for (const r of ["replica-1", "replica-2"]) {
      await waitFor(`${r} replays the write`, async () => (await psql(rig.host(r), "SELECT note FROM engine_probe WHERE id = 1", "synaxic").catch(() => "")) === "written on main", 30_000, 500);
    }
  });

  it("monitoring on main and on the monitoring replica (replica-2): each Prometheus scrapes every host's exporters over TLS with its client certificate, the two Alertmanagers form one cluster; a plain or certificate-less request gets no metrics", async () => {
    const main = rig.host("main");
    type Target = { scrapePool: string; scrapeUrl: string; health: string; lastError: string; labels: Record<string, string> };
    const jobs = ["node", "postgres", "redis"];
    for (const h of [main, rig.host("replica-2")]) {
      let seen = "";
      await waitFor(
        `${h.name}'s Prometheus: every exporter target up over https`,
        async () => {
          const out = (await h.exec(["curl", "-fsS", "--max-time", "5", "http://127.0.0.1:9090/api/v1/targets?state=active"], { allowFail: true })).stdout;
          const targets = ((JSON.parse(out || "{}") as { data?: { activeTargets: Target[] } }).data?.activeTargets ?? []).filter((t) => jobs.includes(t.scrapePool));
          seen = targets.map((t) => `${t.scrapePool} ${t.labels.host} ${t.health} ${t.lastError}`).join("\n");
          return targets.length === jobs.length * 3 && targets.every((t) => t.health === "up" && t.scrapeUrl.startsWith("https://"));
        },
        120_000,
        2000,
      ).catch((e: unknown) => {
        throw new Error(`${String(e)}\n${seen}`);
      });
    }
    // In a pair each Alertmanager listens on its private address and gossips with the other (templates/alertmanager.ts alertmanagerClusterFlags).
    for (const h of [main, rig.host("replica-2")]) {
      let seen = "";
      await waitFor(
        `${h.name}'s Alertmanager: a cluster of two, ready`,
        async () => {
          seen = (await h.exec(["curl", "-fsS", "--max-time", "5", `http://${h.ip}:9093/api/v2/status`], { allowFail: true })).stdout;
          const c = (JSON.parse(seen || "{}") as { cluster?: { status: string; peers?: unknown[] } }).cluster;
          return c?.status === "ready" && c.peers?.length === 2;
        },
        120_000,
        2000,
      ).catch((e: unknown) => {
        throw new Error(`${String(e)}\n${seen}`);
      });
    }
    const ip = rig.host("replica-1").ip;
    const plain = await main.exec(["curl", "-sS", "--max-time", "5", `http://${ip}:9100/metrics`], { allowFail: true });
    expect(plain.stdout).not.toMatch(/^node_/m);
    const noCert = await main.exec(["curl", "-sS", "--insecure", "--max-time", "5", `https://${ip}:9100/metrics`], { allowFail: true });
    expect(noCert.code).not.toBe(0);
    expect(noCert.stdout).not.toMatch(/^node_/m);
  });

  it("backups: the primary archives into the object storage; replica-1's scheduler (backupFrom auto: the first replica) took a full backup at once from its standby, through main's pgBackRest TLS server; main's scheduler takes none", async () => {
    const main = rig.host("main");
    const r1 = rig.host("replica-1");
    const info = async () => JSON.parse((await main.docker(["exec", "-u", "postgres", "synaxic-main-postgres", "pgbackrest", "--stanza=synaxic", "--output=json", "info"])).stdout) as { status: { code: number }; backup: { type: string }[] }[];
    await waitFor("the first full backup", async () => (await info())[0]!.backup.some((b) => b.type === "full"), 300_000, 2000);
    expect((await info())[0]!.status.code).toBe(0);
    const keys = s3.objects().map((o) => o.key);
    expect(keys.some((k) => /^synaxic\/backup\/synaxic\/\d{8}-\d{6}F\//.test(k)), keys.slice(0, 20).join("\n")).toBe(true);
    expect(keys.some((k) => k.startsWith(`synaxic/archive/synaxic/${ARCHIVE_ID}/0000000100000000/`) && /\/[0-9A-F]{24}-[0-9a-f]{40}\./.test(k))).toBe(true);
    // Taken on the standby: pgBackRest ran there with backup-standby, and reached main's TLS server by name.
    const log = (await r1.docker(["logs", "synaxic-replica-1-backup"])).stdout + (await r1.docker(["logs", "synaxic-replica-1-backup"])).stderr;
    expect(log).toMatch(/backup command begin [^\n]*--backup-standby[^\n]*--pg2-host=main/);
    expect(log).toMatch(/backup command end: completed successfully/);
    const textfile = async (h: string) => (await rig.host(h).exec(["cat", `/etc/synaxic/${h}/node-exporter/pgbackrest.prom`])).stdout;
    expect(await textfile("replica-1")).toMatch(/^synaxic_backup_last_success_timestamp_seconds\{operation="backup-full"\} \d+$/m);
    expect(await textfile("replica-1")).toMatch(/^synaxic_backup_scheduler_active 1$/m);
    expect(await textfile("main")).toMatch(/^synaxic_backup_scheduler_active 0$/m);
    expect(await textfile("main")).not.toMatch(/backup-full/);
    const archiver = await psql(main, "SELECT archived_count > 0 AND (last_failed_time IS NULL OR last_failed_time < last_archived_time) FROM pg_stat_archiver");
    expect(archiver).toBe("t");
  });

  it("Redis snapshots: the job beside main's Redis master (its image built on the host from the stand-in Redis image, nothing downloaded) took one at once into the object storage, encrypted, and reports it; no replica runs one", async () => {
    const main = rig.host("main");
    const prefix = "synaxic/redis/master/";
    await waitFor("a Redis snapshot in the object storage", async () => s3.objects(prefix).some((o) => /\/\d{8}T\d{6}Z\.rdb\.enc$/.test(o.key)), 180_000, 2000);
    const snapshots = s3.objects(prefix).filter((o) => o.key.endsWith(".rdb.enc"));
    const latest = readFileSync(join(s3.root, S3_BUCKET, `${prefix}LATEST`), "utf8");
    expect(snapshots.map((o) => o.key)).toContain(latest);
    // openssl's salted format: the store never sees the RDB.
    expect(readFileSync(join(s3.root, S3_BUCKET, latest)).subarray(0, 8).toString()).toBe("Salted__");
    const textfile = (await main.exec(["cat", "/etc/synaxic/main/node-exporter/redis-snapshot.prom"])).stdout;
    expect(textfile).toMatch(/^synaxic_redis_snapshot_last_result_success 1$/m);
    expect(textfile).toMatch(/^synaxic_redis_snapshot_last_success_timestamp_seconds \d+$/m);
    expect(Number(/^synaxic_redis_snapshot_last_size_bytes (\d+)$/m.exec(textfile)?.[1])).toBe(snapshots.find((o) => o.key === latest)!.size);
    const log = (await main.docker(["logs", "synaxic-main-redis-backup"])).stdout;
    expect(log).toMatch(new RegExp(`snapshot: ${latest.replace(/[.]/g, "\\.")} uploaded`));
    for (const r of ["replica-1", "replica-2"]) {
      expect((await rig.host(r).docker(["ps", "-aq", "--filter", `name=^synaxic-${r}-redis-backup$`])).stdout.trim(), r).toBe("");
    }
  });

  it("a restore drill on demand in replica-1's scheduler container (docker exec ... synaxic-backup-scheduler drill, as the runbook says): the newest backup restores into a throwaway server that answers, the textfile says so, the scratch directory is gone, and the fleet's standby kept streaming", async () => {
    const r1 = rig.host("replica-1");
    const drill = await r1.docker(["exec", "synaxic-replica-1-backup", "synaxic-backup-scheduler", "drill"], { allowFail: true, timeoutMs: 600_000 });
    expect(drill.code, `${drill.stdout}\n${drill.stderr}`).toBe(0);
    const prom = (await r1.exec(["cat", "/etc/synaxic/replica-1/node-exporter/pgbackrest.prom"])).stdout;
    expect(prom).toMatch(/^synaxic_backup_last_result_success\{operation="drill"\} 1$/m);
    expect(prom).toMatch(/^synaxic_backup_drill_backup_timestamp_seconds\{label="\d{8}-\d{6}F[^"]*"\} \d+$/m);
    expect(prom).not.toMatch(/^synaxic_backup_drill_failure_info/m);
    // Each drill removes its scratch directory (lib/backup.ts DRILL_SCRATCH_DIR) and stops its throwaway server (cluster_name synaxic-drill shows in its process titles).
    const left = await r1.docker(["exec", "synaxic-replica-1-backup", "sh", "-c", "ls -A /var/lib/synaxic-backup/drill 2>/dev/null | wc -l; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c '[s]ynaxic-drill' || true"]);
    expect(left.stdout.trim().split("\n").map(Number)).toEqual([0, 0]);
    expect(await psql(rig.host("main"), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")).toBe("2");
  });

  it("every service container stops with a grace period and runs within its memory limit, and the Docker client reused one SSH connection per host", async () => {
    for (const h of ["main", "replica-1"]) {
      const inspect = await rig.host(h).docker(["inspect", "-f", "{{.Name}} {{.Config.StopTimeout}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.Config.StopSignal}}", ...(await rig.host(h).docker(["ps", "-q", "--filter", "label=app=synaxic"])).stdout.split("\n").filter(Boolean)]);
      const rows = inspect.stdout.trim().split("\n").map((l) => l.split(" "));
      expect(rows.length, h).toBeGreaterThanOrEqual(5);
      for (const [name, timeout, memory, swap] of rows) {
        expect(Number(timeout), `${h} ${name}`).toBeGreaterThanOrEqual(10);
        expect(Number(memory), `${h} ${name} memory limit`).toBeGreaterThan(0);
        expect(swap, `${h} ${name}: no swap beyond the limit`).toBe(memory);
      }
      // Every limit together stays within the host's memory (4096 MiB in this tier's configuration).
      expect(rows.reduce((a, r) => a + Number(r[2]), 0), h).toBeLessThanOrEqual(4096 * 1024 * 1024);
      if (h === "main") expect(rows.find(([n]) => n === "/synaxic-main-nginx")?.[4], "nginx stops gracefully on SIGQUIT").toBe("SIGQUIT");
    }
    // ControlMaster: the multiplexing socket is left in the identity's folder (ControlPersist).
    const sockets = execFileSync("find", [engine.env.SYNAXIC_SSH_DIR!, "-type", "s", "-name", "cm-*"]).toString().trim().split("\n").filter(Boolean);
    expect(sockets.length).toBeGreaterThanOrEqual(1);
  });

  it("the PostgreSQL health check authenticates: no authentication failure in any server log", async () => {
    for (const h of ["main", "replica-1", "replica-2"]) {
      const logs = await rig.host(h).docker(["logs", `synaxic-${h}-postgres`]);
      expect(`${logs.stdout}${logs.stderr}`, h).not.toMatch(/authentication failed/);
    }
  });

  it("the status command says the fleet is healthy", async () => {
    const s = statusCommand(co, rig, "main", ["replica-1", "replica-2"]);
    expect(s.code, s.text).toBe(0);
  });

  it("a new app image under reads and writes through the balancer: each host's app starts in its other deploy slot beside the old one, the balancer moves to it, the old one stops; not one request fails", async () => {
    const NEXT = "ghcr.io/synaxic/synaxic:1.0.1";
    // The rig pulls nothing: the next version is the stand-in image with one more label, built on every host
    // (a new image ID; a new tag of the same image would change nothing, the container runs the ID).
    for (const h of ["main", "replica-1", "replica-2", "replica-3"]) {
      await rig.host(h).docker(["build", "-q", "-t", NEXT, "-"], { input: "FROM ghcr.io/synaxic/synaxic:1.0.0\nLABEL org.opencontainers.image.version=1.0.1\n" });
    }
    const main = rig.host("main");
    const slots = async (h: string) => (await rig.host(h).docker(["ps", "--filter", `name=^synaxic-${h}-app`, "--format", "{{.Names}}"])).stdout.trim().split("\n").sort();
    expect(await slots("main")).toEqual(["synaxic-main-app-a"]);

    // Clients open a connection per request (a client reusing an idle keep-alive
    // connection can find it closed by any nginx reload, which browsers retry),
    // together below the balancer's per-client-address rate limit (balancerRateLimit,
    // 50/s), so every answer is the app's.
    const load = balancerLoad(main, "/v1/engine-deploy");
    const tally = load.tally;
    await waitFor("requests through the balancer", async () => tally.ok >= 50, 30_000, 200);
    expect(tally.failed, "before the deploy").toEqual([]);

    co.writeConfig("main", { appImage: NEXT });
    const steps = await co.previewChanges("main");
    expect(steps.filter((s) => /::app-(slot|container)$/.test(s.urn)).map((s) => `${s.op} ${s.urn.split("::").pop()}`).sort()).toEqual(["replace app-container", "replace app-slot"]);
    const started = Date.now();
    await co.up("main");
    const mainTook = Date.now() - started;
    expect(await slots("main")).toEqual(["synaxic-main-app-b"]);
    await eachStack(["replica-1", "replica-2"], async (r) => {
      await co.up(r);
      expect(await slots(r)).toEqual([`synaxic-${r}-app-b`]);
    });
    await new Promise((r) => setTimeout(r, 2000));
    await load.stop();
    process.stdout.write(`[engine] app image change under load: ${tally.ok} requests answered, ${tally.failed.length} failed; pulumi up -s main took ${(mainTook / 1000).toFixed(1)} s\n`);
    if (tally.failed.length > 0) {
      const kinds = new Map<string, number>();
      for (const f of tally.failed) kinds.set(f, (kinds.get(f) ?? 0) + 1);
      process.stdout.write(`[engine] failures by kind: ${JSON.stringify([...kinds])}\n`);
      const log = (await main.docker(["logs", "--since", "10m", "synaxic-main-nginx"], { allowFail: true })).stdout.split("\n").filter((l) => l.includes("engine-deploy") && !/ 20[0-9] /.test(l));
      process.stdout.write(`[engine] balancer log, requests not answered 2xx (${log.length}):\n${log.slice(0, 15).join("\n")}\n`);
      const err = (await main.docker(["logs", "--since", "10m", "synaxic-main-nginx"], { allowFail: true })).stderr.split("\n").filter((l) => /error|warn/.test(l));
      process.stdout.write(`[engine] balancer errors (${err.length}):\n${err.slice(0, 15).join("\n")}\n`);
    }
    expect(tally.failed.slice(0, 10)).toEqual([]);
    expect(tally.ok).toBeGreaterThan(300);
    // The balancer's writes go to the new slot.
    expect((await main.exec(["grep", "-c", `server ${main.ip}:8081 `, "/etc/synaxic/main/nginx/nginx.conf"])).stdout.trim()).not.toBe("0");
  });

  it("rotating postgresApp and redisApp (passwordRotation) under reads and writes: no request fails, connections opened with the old passwords keep working, and afterwards a new connection with an old password is refused", async () => {
    const main = rig.host("main");
    const creds = async () => (await co.outputs("main", true)).replicaCredentials as Record<string, string>;
    const old = await creds();
    // Connections the running app holds: opened with the old passwords, kept open throughout (as HikariCP's and Redisson's pools do).
    const dockerOn = (h: typeof main) => ["docker", "-H", `unix://${h.dockerSocket}`];
    const pgConn = "host=127.0.0.1 port=5432 dbname=synaxic user=synaxic sslmode=require connect_timeout=5";
    const pgSession = new PipeSession([...dockerOn(main), "exec", "-i", "-e", "PGPASSWORD", "synaxic-main-postgres", "psql", "-X", "-q", "-A", "-t", "-d", pgConn], { PGPASSWORD: old.postgresApp! });
    const redisCli = ["redis-cli", "--tls", "--cacert", "/etc/synaxic/tls/ca.crt", "-h", "127.0.0.1", "-p", "6380", "--user", "synaxic", "--no-auth-warning"];
    const redisSession = new PipeSession([...dockerOn(main), "exec", "-i", "-e", "REDISCLI_AUTH", "synaxic-main-redis", ...redisCli], { REDISCLI_AUTH: old.redisApp! });
    try {
      const backend = await psqlBackend(pgSession, "before");
      expect(backend).toMatch(/^alive:synaxic:\d+$/);
      expect(await redisEcho(redisSession, "before")).toBe(true);

      // The rig's app stand-in talks to neither server, so the load measures the deploy the rotation causes
      // (new slot, balancer, retirement); the sessions above stand for the app's pooled connections.
      const load = balancerLoad(main, "/v1/engine-rotate");
      await waitFor("requests through the balancer", async () => load.tally.ok >= 50, 30_000, 200);
      expect(load.tally.failed, "before the rotation").toEqual([]);

      co.writeConfig("main", { passwordRotation: { postgresApp: 1, redisApp: 1 } });
      const steps = (await co.previewChanges("main")).map((s) => `${s.op} ${s.urn.split("::").pop()}`);
      // Only those two passwords are new; neither PostgreSQL nor Redis restarts.
      expect(steps.filter((s) => /^\S+ fleet-/.test(s)).sort()).toEqual(["replace fleet-postgresApp", "replace fleet-redisApp"]);
      expect(steps.filter((s) => /(postgres|redis)-container$/.test(s))).toEqual([]);
      expect(steps).toEqual(expect.arrayContaining(["update postgres-roles", "update redis-acl", "update redis-users-add", "update redis-users-sync", "replace app-container"]));
      const started = Date.now();
      await co.up("main");
      const mainTook = Date.now() - started;
      // Between main's up and the replicas': the sessions opened before are still served.
      expect(await psqlBackend(pgSession, "between")).toBe(backend);
      expect(await redisEcho(redisSession, "between")).toBe(true);
      await eachStack(["replica-1", "replica-2"], async (r) => void (await co.up(r)));
      await new Promise((r) => setTimeout(r, 2000));
      await load.stop();
      process.stdout.write(`[engine] postgresApp + redisApp rotation under load: ${load.tally.ok} requests answered, ${load.tally.failed.length} failed; pulumi up -s main took ${(mainTook / 1000).toFixed(1)} s\n`);
      expect(load.tally.failed.slice(0, 10)).toEqual([]);
      expect(load.tally.ok).toBeGreaterThan(100);

      expect(await psqlBackend(pgSession, "after")).toBe(backend);
      expect(await redisEcho(redisSession, "after")).toBe(true);

      const now = await creds();
      expect(now.postgresApp).not.toBe(old.postgresApp);
      expect(now.redisApp).not.toBe(old.redisApp);
      expect(now.postgresReplication).toBe(old.postgresReplication);
      expect(now.redisAdmin).toBe(old.redisAdmin);
      const pgLogin = (h: typeof main, pw: string) =>
        h.docker(["exec", "-i", "-e", "PGPASSWORD", `synaxic-${h.name}-postgres`, "psql", "-X", "-At", "-d", pgConn, "-c", "SELECT current_user"], { env: { PGPASSWORD: pw }, allowFail: true });
      const redisLogin = (h: typeof main, pw: string) => h.docker(["exec", "-i", "-e", "REDISCLI_AUTH", `synaxic-${h.name}-redis`, ...redisCli, "PING"], { env: { REDISCLI_AUTH: pw }, allowFail: true });
      // The primary, and a standby (the role's new password came with the WAL).
      for (const h of [main, rig.host("replica-1")]) {
        const refused = await pgLogin(h, old.postgresApp!);
        expect(refused.code, h.name).not.toBe(0);
        expect(refused.stderr).toMatch(/password authentication failed for user "synaxic"/);
        expect((await pgLogin(h, now.postgresApp!)).stdout.trim()).toBe("synaxic");
      }
      const oldRedis = await redisLogin(main, old.redisApp!);
      expect(`${oldRedis.stdout}${oldRedis.stderr}`).toMatch(/WRONGPASS|AUTH failed/);
      expect((await redisLogin(main, now.redisApp!)).stdout.trim()).toBe("PONG");
      // A raised counter cannot go back down.
      co.writeConfig("main", { passwordRotation: { postgresApp: 0, redisApp: 1 } });
      const lowered = await co.pulumi(["preview", "--stack", "main", "--non-interactive"], { allowFail: true });
      expect(`${lowered.stdout}${lowered.stderr}`).toMatch(/synaxic:passwordRotation\[postgresApp\]: got 0; this stack last deployed 1/);
      co.writeConfig("main", { passwordRotation: { postgresApp: 1, redisApp: 1 } });
    } finally {
      pgSession.close();
      redisSession.close();
    }
  });

  it("a second preview of every stack shows no changes, and passes the repository's policy pack as the CLI runs it", async () => {
    await eachStack(["control", "main", "replica-1", "replica-2"], async (stack) => {
      // --policy-pack: the CLI starts the pack through the Node.js language host (policy/PulumiPolicy.yaml); a mandatory violation fails the preview.
      const steps = await co.previewChanges(stack, ["--policy-pack", join(co.dir, "policy")]);
      expect(steps.map((s) => `${s.op} ${s.urn} ${JSON.stringify(s.detailedDiff ?? s.diffs ?? {})}`), stack).toEqual([]);
    });
  });

  it("refresh finds no drift: after it, a preview still shows no changes", async () => {
    // One stack at a time: a refresh writes its stack's checkpoint, which main's preview reads (see the switchover below).
    for (const stack of ["main", "replica-1", "replica-2"]) {
      await co.pulumi(["refresh", "--yes", "--skip-preview", "--non-interactive", "--stack", stack]);
      const steps = await co.previewChanges(stack);
      expect(steps.map((s) => `${s.op} ${s.urn}`), stack).toEqual([]);
    }
  });

  it("pulumi stack export holds no generated secret in plain text", async () => {
    for (const stack of ["main", "replica-1"]) {
      const exported = (await co.pulumi(["stack", "export", "--stack", stack])).stdout;
      const mainOutputs = await co.outputs("main", true);
      // Main holds no replica's key: each replica's stack made its own, main signed its requests.
      expect(mainOutputs.replicaTls, "main's replicaTls").toEqual({});
      expect(JSON.stringify(mainOutputs.replicaCerts), "main's replicaCerts").not.toContain("PRIVATE KEY");
      const secretsFound = secretStrings(mainOutputs);
      secretsFound.push({ where: "the operator's SSH key", value: rig.operator.privateKey.split("\n")[1]! });
      expect(secretsFound.length, "the main stack's secret outputs").toBeGreaterThan(5);
      const resources = (JSON.parse(exported) as { deployment: { resources: { urn: string; inputs?: object; outputs?: object }[] } }).deployment.resources;
      const leaked = secretsFound
        .filter((s) => exported.includes(s.value))
        .map((s) => {
          const r = resources.find((x) => JSON.stringify(x).includes(s.value));
          const where = r ? (["inputs", "outputs"] as const).flatMap((k) => Object.entries(r[k] ?? {}).filter(([, v]) => JSON.stringify(v).includes(s.value)).map(([p]) => `${k}.${p}`)) : [];
          return `${s.where} in ${r?.urn ?? "?"} ${where.join(",")}`;
        });
      expect(leaked, `${stack}: secrets in plain text in the export`).toEqual([]);
      expect(exported).toContain("ciphertext");
    }
  });

  it("adding replica-3 by config: main's diff touches no service container, then its own stack brings it in", async () => {
    await initStack(co, rig, "replica-3", replicaConfig(rig, "replica-3"));
    co.writeConfig("main", { replicas: ["replica-1", "replica-2", "replica-3"].map((r) => `${r}=${rig.host(r).ip}`) });
    const steps = await co.previewChanges("main");
    const containers = steps.filter((s) => s.type === "docker:index/container:Container");
    expect(containers.map((s) => `${s.op} ${s.urn}`), "no service container is replaced or updated").toEqual([]);
    // What changes: files on the host (pg_hba, nginx.conf, scrape targets, rules), their reloads (a
    // command re-runs by replacement when its triggers change), the new slot and replica-3's certificates.
    const allowed = /command:remote:Command|tls:index|random:index/;
    expect(steps.filter((s) => !allowed.test(s.type)).map((s) => `${s.op} ${s.urn}`)).toEqual([]);
    expect(steps.filter((s) => s.op === "delete").map((s) => s.urn)).toEqual([]);
    // The new slot exists on the primary before the replica's own stack runs.
    expect(steps.some((s) => s.op === "create" && /slot-replica-3/.test(s.urn))).toBe(true);
    await co.up("main");
    expect(await psql(rig.host("main"), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")).toContain("replica_3");
    // Its first up publishes its certificate requests (no service); main signs them.
    await co.up("replica-3");
    expect((await co.outputs("replica-3")).tlsSource).toBe("pending");
    await co.up("main");
  });

  it("an `up` killed during a container create, then run again, converges after the documented recovery", async () => {
    // Killed like a crash of the machine running Pulumi, while the Docker provider waits for the
    // app's container it has just created to become healthy.
    const host = rig.host("replica-3");
    const killed = await co.pulumi(["up", "--yes", "--skip-preview", "--non-interactive", "--stack", "replica-3"], {
      interruptWhen: async () => (await host.docker(["ps", "-aq", "--filter", "name=^synaxic-replica-3-app-[ab]$"], { allowFail: true })).stdout.trim() !== "",
      allowFail: true,
    });
    expect(killed.code, killed.stdout.slice(-3000)).not.toBe(0);
    // The killed run left its lock: the next one refuses, naming `pulumi cancel`.
    const again = await co.up("replica-3", { allowFail: true });
    expect(again.code).not.toBe(0);
    expect(again.stdout + again.stderr).toMatch(/pulumi cancel/);
    // The documented recovery (docs/operations.md): cancel, remove what the interrupted creates left, clear them, up.
    const removed = await recoverInterrupted(co, rig, "replica-3");
    expect(removed).toContain("synaxic-replica-3-app-a");
    await co.up("replica-3");
    await waitFor("replica-3 replays", async () => (await psql(rig.host("replica-3"), "SELECT note FROM engine_probe WHERE id = 1", "synaxic").catch(() => "")) === "written on main", 60_000, 500);
    expect(await co.previewChanges("replica-3")).toEqual([]);
  });

  it("removing replica-3: its stack is destroyed, then main drops its slot", async () => {
    await co.pulumi(["destroy", "--yes", "--skip-preview", "--non-interactive", "--stack", "replica-3"]);
    co.writeConfig("main", { replicas: ["replica-1", "replica-2"].map((r) => `${r}=${rig.host(r).ip}`) });
    await co.up("main");
    expect(await psql(rig.host("main"), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")).not.toContain("replica_3");
  });

  it("a postgresql.conf change previews as a readable diff, and says whether it restarts", async () => {
    const steps = (changes: { urn: string; op: string; newState?: { inputs?: Record<string, unknown> } }[]) => changes.map((c) => ({ name: c.urn.split("::").pop()!, op: c.op, stdin: c.newState?.inputs?.stdin }));
    // wal_keep_size is re-read on reload: the file and the reload change, nothing restarts.
    co.writeConfig("main", { walKeepSize: "512MB" });
    const reloadOnly = steps(await co.previewChanges("main"));
    expect(reloadOnly.map((s) => s.name).sort()).toEqual(["postgres-conf", "postgres-hba-reload"]);
    expect(String(reloadOnly.find((s) => s.name === "postgres-conf")!.stdin)).toContain("wal_keep_size = '512MB'");
    // max_connections is read at start: the restart step shows in the preview, with the setting.
    co.writeConfig("main", { walKeepSize: undefined, maxConnections: 120 });
    const restart = steps(await co.previewChanges("main"));
    expect(restart.map((s) => s.name)).toEqual(expect.arrayContaining(["postgres-conf", "postgres-restart"]));
    expect(restart.filter((s) => /container$/.test(s.name)).map((s) => s.name), "no container is replaced").toEqual([]);
    expect(String(restart.find((s) => s.name === "postgres-conf")!.stdin)).toContain("max_connections = 120");
    await co.up("main");
    expect(await psql(rig.host("main"), "SHOW max_connections")).toBe("120");
    // Standbys follow with their own stacks (they need at least the primary's value).
    await eachStack(["replica-1", "replica-2"], async (r) => {
      await co.up(r);
      expect(await psql(rig.host(r), "SHOW max_connections")).toBe("120");
    });
    await waitFor("both replicas stream", async () => (await psql(rig.host("main"), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")) === "2", 60_000, 1000);
    await eachStack(["main", "replica-1", "replica-2"], async (stack) => expect((await co.previewChanges(stack)).map((s) => s.urn), stack).toEqual([]));
  });

  it("destroy from a fresh clone in another directory, with the original checkout gone, keeps the data; up again finds it (and, given the old cipher pass, the backup repository)", async () => {
    // The repository's key dies with the stack; the runbook's copy of it lets the new stack read the repository.
    const cipherPass = ((await co.outputs("main", true)).replicaCredentials as { backupCipherPass: string }).backupCipherPass;
    expect(cipherPass.length).toBeGreaterThanOrEqual(20);
    const fresh = engine.checkout(join(work, "checkout-b"));
    for (const f of co.stackFiles()) cpSync(join(co.dir, f), join(fresh.dir, f));
    co.remove();
    co = fresh;
    // replica-2 as from a machine that never ran it: no identity file there, so the program runs first and writes it.
    rmSync(join(engine.env.SYNAXIC_SSH_DIR!, "organization-synaxic-replica-2-replica-2"));
    await eachStack(["replica-1", "replica-2"], async (r) => {
      await co.pulumi(["destroy", "--yes", "--skip-preview", "--non-interactive", ...(r === "replica-2" ? ["--run-program"] : []), "--stack", r]);
    });
    const snapshotsBefore = new Set(s3.objects("synaxic/redis/master/").map((o) => o.key));
    await co.pulumi(["destroy", "--yes", "--skip-preview", "--non-interactive", "--stack", "main"]);
    for (const name of ["main", "replica-1", "replica-2"]) {
      const h = rig.host(name);
      const running = (await h.docker(["ps", "-q"])).stdout.trim();
      expect(running, `${name} runs no container after destroy`).toBe("");
      const volumes = (await h.docker(["volume", "ls", "-q"])).stdout;
      expect(volumes, `${name} keeps its PostgreSQL data`).toMatch(/pgdata/);
    }
    await co.pulumi(["config", "set", "--secret", "--stack", "main", "backupCipherPass"], { input: cipherPass });
    // Re-created stacks are new replicas: each one's first up publishes its requests, main signs them, its second starts its
    // services. The fleet command runs those rounds: main, the replicas (waiting for main's signature), main, the replicas.
    const fleetUp = await fleetDeploy(co, "up");
    expect(fleetUp.code, fleetUp.stdout.slice(-3000) + fleetUp.stderr.slice(-3000)).toBe(0);
    expect(fleetUp.stdout).toMatch(/organization\/synaxic\/replica-1, organization\/synaxic\/replica-2 published certificate requests that main has not signed yet/);
    expect(fleetUp.stdout.match(/^ {2}organization\/synaxic\/main: succeeded/gm), fleetUp.stdout.slice(-2000)).toHaveLength(2);
    for (const r of ["replica-1", "replica-2"]) expect((await co.outputs(r)).tlsSource, r).toBe("own-keys");
    expect(await psql(rig.host("main"), "SELECT note FROM engine_probe WHERE id = 1", "synaxic")).toBe("written on main");
    // The stanza step passed (pgbackrest check reads the repository with the key), and archiving goes on.
    await psql(rig.host("main"), "SELECT pg_switch_wal()");
    await waitFor("archiving after the re-created stack", async () => (await psql(rig.host("main"), "SELECT archived_count > 0 FROM pg_stat_archiver")) === "t", 60_000, 1000);
    // Redis snapshots go on in the same series, encrypted with the same pass: the new job's first one decrypts with the one kept outside the fleet.
    const newSnapshots = () => s3.objects("synaxic/redis/master/").filter((o) => o.key.endsWith(".rdb.enc") && !snapshotsBefore.has(o.key));
    await waitFor("a Redis snapshot from the re-created stack", async () => newSnapshots().length > 0, 180_000, 2000);
    const rdb = execFileSync("openssl", [...OPENSSL_ENC, "-d", "-pass", "stdin", "-in", join(s3.root, S3_BUCKET, newSnapshots()[0]!.key)], { input: `${cipherPass}\n` });
    expect(rdb.subarray(0, 5).toString()).toBe("REDIS");
    expect(await psql(rig.host("replica-2"), "SELECT note FROM engine_probe WHERE id = 1", "synaxic")).toBe("written on main");
  });

  it("power loss of each host: everything comes back by itself, no committed write is lost, replication resumes", async () => {
    for (const name of ["main", "replica-1", "replica-2"]) {
      const h = rig.host(name);
      const row = `power loss of ${name}`;
      await psql(rig.host("main"), `INSERT INTO engine_probe VALUES ((SELECT coalesce(max(id), 0) + 1 FROM engine_probe), '${row}')`, "synaxic");
      const before = (await h.docker(["ps", "--format", "{{.Names}}"])).stdout.split("\n").filter(Boolean).sort();
      await h.powerOff();
      await h.boot();
      await waitFor(`${name}: every container running again`, async () => {
        const now = (await h.docker(["ps", "--format", "{{.Names}}"])).stdout.split("\n").filter(Boolean).sort();
        return JSON.stringify(now) === JSON.stringify(before);
      }, 120_000, 1000);
      await waitFor(`${name}: the row is there after the power loss`, async () => (await psql(h, `SELECT count(*) FROM engine_probe WHERE note = '${row}'`, "synaxic").catch(() => "")) === "1", 120_000, 1000);
    }
    await waitFor("both replicas stream again", async () => (await psql(rig.host("main"), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")) === "2", 120_000, 1000);
    const prom = (await rig.host("main").docker(["inspect", "-f", "{{.State.Status}}", "synaxic-main-prometheus"])).stdout.trim();
    expect(prom).toBe("running");
    // Redis replicas resync with the restarted master (a full sync): healthy within a minute or two.
    let last = "";
    await waitFor("the status command says healthy", async () => {
      const s = statusCommand(co, rig, "main", ["replica-1", "replica-2"]);
      last = s.text;
      return s.code === 0;
    }, 180_000, 5000).catch((e) => {
      throw new Error(`${String(e)}\n${last}`);
    });
  });

  it("a planned switchover under write load through the control stack: the fence stops main (writes acknowledged until PostgreSQL stopped are all on replica-1), only the named replica promotes, the others and the old main follow", async () => {
    const main = rig.host("main");
    await psql(main, "CREATE TABLE engine_ledger (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())", "synaxic");
    // Writes straight to the primary, one transaction each, until it stops answering; each
    // acknowledged id is one the primary committed.
    const acked: number[] = [];
    let writing = true;
    const writer = (async () => {
      for (let id = 1; writing; id++) {
        try {
          await psql(main, `INSERT INTO engine_ledger (id) VALUES (${id})`, "synaxic");
          acked.push(id);
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();
    await waitFor("writes on main", async () => acked.length >= 20, 60_000, 100);

    // A promotion without the old primary fenced is refused, and so is a replica's own promote.
    co.writeConfig("control", { primary: "replica-1", primaryGeneration: 1 });
    const unfenced = await co.pulumi(["preview", "--stack", "control", "--non-interactive"], { allowFail: true });
    expect(unfenced.code).not.toBe(0);
    expect(unfenced.stdout + unfenced.stderr).toContain("fence.main: missing; main is the primary now and must be fenced before replica-1 takes writes");
    co.writeConfig("replica-2", { promote: true });
    const second = await co.pulumi(["preview", "--stack", "replica-2", "--non-interactive"], { allowFail: true });
    expect(second.code).not.toBe(0);
    expect(second.stdout + second.stderr).toContain("synaxic:promote: is set on a stack whose primary is decided by the control stack");
    co.writeConfig("replica-2", { promote: undefined });

    // 1. The control stack fences main (app, Redis, PostgreSQL stopped, kept from restarting) and records it.
    co.writeConfig("control", { fence: { main: "stop" } });
    const fenceStarted = Date.now();
    await co.up("control");
    writing = false;
    await writer;
    // The app runs in one deploy slot (which one depends on the deploys before).
    const state = (await main.docker(["ps", "-a", "--filter", "name=^synaxic-main-(app-[ab]|nginx|redis|postgres)$", "--format", "{{.Names}} {{.State}}"])).stdout.trim().split("\n").sort();
    const appName = state.find((l) => l.startsWith("synaxic-main-app-"))!.split(" ")[0]!;
    expect(state.map((l) => l.replace(/-app-[ab] /, "-app ")).sort()).toEqual(["synaxic-main-app exited", "synaxic-main-nginx running", "synaxic-main-postgres exited", "synaxic-main-redis exited"]);
    const restart = (await main.docker(["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "synaxic-main-postgres", "synaxic-main-redis", appName])).stdout.trim().split("\n");
    expect(restart).toEqual(["no", "no", "no"]);
    expect((await co.outputs("control")).control).toMatchObject({ primary: "replica-1", generation: 1, fenced: { main: { method: "stop", generation: 1 } } });

    // 2. replica-1 promotes (the control stack names it); then 3. replica-2 follows it and 4. the old main's next up leaves it a replica of it.
    // One after the other: each reads the other's stack, and the file backend's checkpoint write is not atomic for a reader
    // (gocloud.dev blob/fileblob setAttrs truncates the .attrs file, then writes it: a read in between fails with EOF).
    await co.up("replica-1");
    const promotedAt = Date.now();
    expect(await psql(rig.host("replica-1"), "SELECT pg_is_in_recovery()")).toBe("f");
    for (const stack of ["replica-2", "main"]) await co.up(stack);
    expect((await co.outputs("main")).postgresMode).toBe("rejoin");

    // Nothing acknowledged by the old primary is missing on the new one.
    const present = new Set((await psql(rig.host("replica-1"), "SELECT id FROM engine_ledger", "synaxic")).split("\n").filter(Boolean).map(Number));
    const missing = acked.filter((id) => !present.has(id));
    process.stdout.write(`[engine] planned switchover: ${acked.length} writes acknowledged by main, ${missing.length} missing on replica-1; fence to promoted ${((promotedAt - fenceStarted) / 1000).toFixed(1)} s\n`);
    expect(missing).toEqual([]);

    await psql(rig.host("replica-1"), "INSERT INTO engine_probe VALUES (1000, 'written on the promoted replica-1')", "synaxic");
    for (const h of ["replica-2", "main"]) {
      await waitFor(`${h} follows replica-1`, async () => (await psql(rig.host(h), "SELECT note FROM engine_probe WHERE id = 1000", "synaxic").catch(() => "")) === "written on the promoted replica-1", 60_000, 500);
    }
    expect(await psql(rig.host("replica-1"), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")).toBe("2");
    // The old main cannot come back writable: its stack reads the control stack, which names replica-1.
    expect(await psql(main, "SELECT pg_is_in_recovery()")).toBe("t");
    // Redis follows too: replica-1's is the one master, main's and replica-2's replicate from it
    // (read-only replicas), so every app's Redis writes land there. As the status command sees it.
    type RedisFacts = { ok: boolean; value?: { role: string; masterHost: string | null; masterLinkStatus: string | null; connectedSlaves: number } };
    const redisFacts = (): Record<string, RedisFacts> => {
      const facts = (statusCommand(co, rig, "main", ["replica-1", "replica-2"]).report as { facts: { main: { redis: RedisFacts }; replicas: { name: string; redis: RedisFacts }[] } }).facts;
      return Object.fromEntries([["main", facts.main.redis], ...facts.replicas.map((h) => [h.name, h.redis])]) as Record<string, RedisFacts>;
    };
    let redis = redisFacts();
    await waitFor("Redis replicas linked to replica-1", async () => {
      redis = redisFacts();
      return ["main", "replica-2"].every((h) => redis[h]?.value?.masterLinkStatus === "up");
    }, 60_000, 2000);
    expect(redis["replica-1"]!.value).toMatchObject({ role: "master", connectedSlaves: 2 });
    for (const h of ["main", "replica-2"]) expect(redis[h]!.value, h).toMatchObject({ role: "slave", masterHost: rig.host("replica-1").ip, masterLinkStatus: "up" });
    // Backups follow: the promoted replica archives its new timeline into the same stanza, and its scheduler now acts.
    await psql(rig.host("replica-1"), "SELECT pg_switch_wal()");
    await waitFor("timeline 2's WAL in the repository", async () => s3.objects(`synaxic/archive/synaxic/${ARCHIVE_ID}/`).some((o) => /\/00000002[0-9A-F]{16}-[0-9a-f]{40}\./.test(o.key)), 120_000, 2000);
    expect(s3.objects(`synaxic/archive/synaxic/${ARCHIVE_ID}/`).some((o) => o.key.includes("00000002.history"))).toBe(true);
    // replica-1 takes the backups still, now from itself as the primary.
    await waitFor("replica-1's scheduler acts as the primary's", async () => /^synaxic_backup_scheduler_active 1$/m.test((await rig.host("replica-1").exec(["cat", "/etc/synaxic/replica-1/node-exporter/pgbackrest.prom"])).stdout), 120_000, 2000);
  });

  it("an unplanned failover back to main while replica-1 (the primary) is partitioned from the fleet: the fence is reported only once it took no more writes, main takes the role back, replica-1 rewinds; the writes lost in the partition are measured", async () => {
    const old = rig.host("replica-1");
    const main = rig.host("main");
    const acked: { id: number; at: number }[] = [];
    let writing = true;
    let paused = false;
    let idle = true;
    const writer = (async () => {
      for (let id = 100_001; writing; id++) {
        if (paused) {
          idle = true;
          await new Promise((r) => setTimeout(r, 50));
          id--;
          continue;
        }
        idle = false;
        try {
          await psql(old, `INSERT INTO engine_ledger (id) VALUES (${id})`, "synaxic");
          acked.push({ id, at: Date.now() });
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();
    await waitFor("writes on replica-1", async () => acked.length >= 10, 60_000, 100);
    // Both future followers at the same point first, so that replica-2 can follow main's new timeline.
    paused = true;
    await waitFor("the writer to pause", async () => idle, 10_000, 20);
    const lsn = await psql(old, "SELECT pg_current_wal_lsn()");
    for (const h of ["main", "replica-2"]) {
      await waitFor(`${h} replayed to ${lsn}`, async () => (await psql(rig.host(h), `SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn`)) === "t", 60_000, 500);
    }
    // The partition: replica-1 no longer reaches the fleet, nor the fleet it; the operator (this machine) still reaches it.
    const peers = [main.ip, rig.host("replica-2").ip].join(", ");
    await old.exec(["nft", "-f", "-"], {
      input: `table inet engine_partition {\n  chain in { type filter hook input priority -10; ip saddr { ${peers} } drop; }\n  chain out { type filter hook output priority -10; ip daddr { ${peers} } drop; }\n}\n`,
    });
    const partitionedAt = Date.now();
    paused = false;
    await waitFor("writes during the partition", async () => acked.filter((a) => a.at > partitionedAt).length >= 10, 60_000, 100);

    co.writeConfig("control", { primary: "main", primaryGeneration: 2, fence: { main: "stop", "replica-1": "stop" } });
    await co.up("control");
    const fenceReported = Date.now();
    await new Promise((r) => setTimeout(r, 2000));
    writing = false;
    await writer;
    // Not one write was acknowledged by the old primary once the fence was reported.
    expect(acked.filter((a) => a.at > fenceReported)).toEqual([]);

    await co.up("main");
    expect(await psql(main, "SELECT pg_is_in_recovery()")).toBe("f");
    await co.up("replica-2");
    await old.exec(["nft", "delete", "table", "inet", "engine_partition"]);
    await co.up("replica-1");
    expect((await co.outputs("replica-1")).postgresMode).toBe("rejoin");

    const onMain = new Set((await psql(main, "SELECT id FROM engine_ledger WHERE id > 100000", "synaxic")).split("\n").filter(Boolean).map(Number));
    const before = acked.filter((a) => a.at <= partitionedAt);
    const lost = acked.filter((a) => !onMain.has(a.id));
    process.stdout.write(`[engine] unplanned failover: ${acked.length} writes acknowledged by replica-1, ${before.length} before the partition, ${lost.length} lost (all acknowledged during the partition)\n`);
    // What the fleet had before the partition survived; what only the partitioned primary took is gone, on it too after pg_rewind.
    expect(before.filter((a) => !onMain.has(a.id))).toEqual([]);
    expect(lost.every((a) => a.at > partitionedAt)).toBe(true);
    await psql(main, "INSERT INTO engine_probe VALUES (2000, 'written on main, primary again')", "synaxic");
    for (const h of ["replica-1", "replica-2"]) {
      await waitFor(`${h} follows main`, async () => (await psql(rig.host(h), "SELECT note FROM engine_probe WHERE id = 2000", "synaxic").catch(() => "")) === "written on main, primary again", 90_000, 500);
    }
    const onRewound = new Set((await psql(old, "SELECT id FROM engine_ledger WHERE id > 100000", "synaxic")).split("\n").filter(Boolean).map(Number));
    expect(lost.filter((a) => onRewound.has(a.id))).toEqual([]);
  });

  it("a point-in-time restore (backupRestore): main comes back with exactly the rows committed before the target, in a fresh volume, and a replica re-clones from it", async () => {
    const main = rig.host("main");
    // A full backup on the current timeline, as the runbook says to take after a failover's churn.
    await main.docker(["exec", "-u", "postgres", "synaxic-main-backup", "pgbackrest", "--stanza=synaxic", "--type=full", "backup"], { timeoutMs: 300_000 });
    await psql(main, "CREATE TABLE restore_probe (id int PRIMARY KEY, note text); INSERT INTO restore_probe SELECT g, 'before' FROM generate_series(1, 100) g;", "synaxic");
    await new Promise((r) => setTimeout(r, 1500));
    const target = await psql(main, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
    await new Promise((r) => setTimeout(r, 1500));
    await psql(main, "INSERT INTO restore_probe SELECT g, 'after' FROM generate_series(101, 150) g; UPDATE restore_probe SET note = 'changed after' WHERE id <= 10;", "synaxic");
    await psql(main, "SELECT pg_switch_wal()");
    await waitFor("the WAL with the last writes archived", async () => (await psql(main, "SELECT last_archived_wal >= pg_walfile_name(pg_current_wal_lsn() - 1) FROM pg_stat_archiver")) === "t", 120_000, 1000);

    co.writeConfig("main", { backupRestore: { target, id: 1 } });
    const started = Date.now();
    await co.up("main");
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    expect(await psql(main, "SELECT pg_is_in_recovery()")).toBe("f");
    expect(await psql(main, "SELECT count(*) || ' ' || count(*) FILTER (WHERE note = 'before') || ' ' || max(id) FROM restore_probe", "synaxic")).toBe("100 100 100");
    // A new timeline, in the restore's own volume; the volume from before is kept.
    expect(Number(await psql(main, "SELECT timeline_id FROM pg_control_checkpoint()"))).toBeGreaterThan(3);
    const volumes = (await main.docker(["volume", "ls", "-q"])).stdout.split("\n");
    expect(volumes).toEqual(expect.arrayContaining(["synaxic-main-pgdata", "synaxic-main-pgdata-restore-1"]));
    expect((await main.docker(["inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", "synaxic-main-postgres"])).stdout).toContain("synaxic-main-pgdata-restore-1");
    process.stdout.write(`[engine] point-in-time restore: pulumi up -s main restored to ${target} in ${seconds} s\n`);
    // Takes writes, and a replica re-clones from the restored primary into a new volume.
    await psql(main, "INSERT INTO restore_probe VALUES (1000, 'after the restore')", "synaxic");
    await co.up("replica-2");
    await waitFor("replica-2 replays the restored primary's writes", async () => (await psql(rig.host("replica-2"), "SELECT note FROM restore_probe WHERE id = 1000", "synaxic").catch(() => "")) === "after the restore", 120_000, 1000);
    expect(await psql(rig.host("replica-2"), "SELECT count(*) FROM restore_probe WHERE note = 'after'", "synaxic")).toBe("0");
    expect((await rig.host("replica-2").docker(["inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", "synaxic-replica-2-postgres"])).stdout).toMatch(/synaxic-replica-2-pgdata-g0-r1/);
  });
});

/**
 * The passwords, and the first base64 line of each private key (which holds
 * the private scalar; an EC key's last line is its public point, which the
 * public key shows too), under the secret outputs.
 */
function secretStrings(outputs: Record<string, unknown>): { where: string; value: string }[] {
  const found: { where: string; value: string }[] = [];
  const walk = (v: unknown, path: string) => {
    if (typeof v === "string") {
      if (/keyPem$/.test(path)) found.push({ where: path, value: v.split("\n")[1]! });
      else if (/^replicaCredentials\.(postgres|redis|truststorePassword|backup|exporterScrape)/.test(path)) found.push({ where: path, value: v });
    } else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`);
  };
  walk(outputs.replicaCredentials, "replicaCredentials");
  walk(outputs.replicaTls, "replicaTls");
  return found;
}

