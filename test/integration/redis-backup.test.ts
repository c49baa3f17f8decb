/**
 * Redis snapshots with the rendered scripts, on real Redis 7.0 (Debian),
 * redis-cli, openssl and curl, into the rig's S3 stand-in (its own
 * namespace, HTTPS verified against the rig CA, AWS Signature V4 checked):
 * a snapshot through the backup ACL user, encrypted in the store; a restore
 * into a new server that starts with appendonly no, then turns AOF on and
 * keeps the keys across a restart with the normal config; and the two ways
 * it goes wrong (the replica user lacks SYNC; a plain start with AOF on
 * ignores the restored file).
 *
 * Then the job the program runs beside the Redis master, as it renders it
 * (renderRedisSnapshotJobFiles, the files components/RedisSnapshots.ts
 * uploads), with its paths in a directory of the rig: its loop takes a
 * snapshot at once and the day's one once its hour has passed, writes its
 * textfile, expires old snapshots (through several listing pages), fetches
 * and installs a snapshot that a server then starts from with the same keys,
 * reports a failure when the object storage is down, and the alert rules
 * fire on what it wrote (promtool). And the snapshot image's install step,
 * run by this host's sh and dpkg: nothing downloaded when the pins are what
 * is installed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { dataDigest, randomRedisUsers, redisCli, redisInfo, redisOk, RedisServer, type DataDigest } from "../rig/redis";
import { S3StandIn } from "../rig/s3";
import { setRigHosts } from "../rig/dns";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { stringify } from "yaml";
import { renderRedisSnapshotJobFiles, REDIS_SNAPSHOT_TEXTFILE, type RedisSnapshotJobPaths } from "../../templates/redis-backup-scheduler";
import { backupAlertRules, renderBackupAlertRules, DEFAULT_BACKUP_ALERT_THRESHOLDS } from "../../templates/backup-alerts";
import { promtool } from "../rig/prometheus";
import { renderRedisBackupImageDockerfile } from "../../templates/redis-backup-image";
import {
  OPENSSL_ENC,
  REDIS_BACKUP_USER,
  REDIS_RESTORE_ENABLE_AOF,
  redisRestoreFirstStartArgv,
  renderRedisBackupAclLine,
  renderRedisRestoreFetchScript,
  renderRedisSnapshotScript,
  renderS3CurlCredentials,
  type RedisS3Target,
} from "../../templates/redis-backup";

const S3_NAME = "s3.bkr.test";
const BUCKET = "bkr-backups";
const users = randomRedisUsers();
const backupUser = { name: REDIS_BACKUP_USER, pass: randomBytes(18).toString("base64url") };
const s3Creds = { s3Key: "BKRREDISKEY", s3KeySecret: `${randomBytes(18).toString("base64")}"\\` };

let net: TestNet;
let ca: TestCa;
let redisHost: Host;
let jobHost: Host;
let restoreHost: Host;
let s3: S3StandIn;
let master: RedisServer;
let removeHosts: () => void;
let jobDir: string;
let target: RedisS3Target;
let before: DataDigest;
const redisIds = { uid: Number(execFileSync("id", ["-u", "redis"]).toString()), gid: Number(execFileSync("id", ["-g", "redis"]).toString()) };

function secretFile(name: string, content: string): string {
  const f = join(jobDir, name);
  writeFileSync(f, content, { mode: 0o600 });
  return f;
}

async function runScript(host: Host, name: string, script: string) {
  const f = join(jobDir, name);
  writeFileSync(f, script, { mode: 0o700 });
  return host.exec(["bash", f], { allowFail: true, timeoutMs: 60_000 });
}

beforeAll(async () => {
  net = await TestNet.create(["bkredis", "bkrjob", "bkrrestore", "bkrs3"]);
  [redisHost, jobHost, restoreHost] = ["bkredis", "bkrjob", "bkrrestore"].map((n) => net.host(n)) as [Host, Host, Host];
  ca = makeCa("bkr-ca", net.mkdir("pki"));
  removeHosts = setRigHosts(net, { [S3_NAME]: net.host("bkrs3").ip });
  // Pages of 2 entries: the job's expiry must follow continuation tokens.
  s3 = await S3StandIn.start({ host: net.host("bkrs3"), ca, dnsName: S3_NAME, port: 9443, bucket: BUCKET, accessKey: s3Creds.s3Key, secretKey: s3Creds.s3KeySecret, pageSize: 2 });
  jobDir = net.mkdir("redis-backup-job");
  target = {
    endpoint: s3.endpoint,
    bucket: BUCKET,
    region: "bk-rig-1",
    prefix: "synaxic/redis",
    caFile: ca.certFile,
    credentialsFile: secretFile("s3.curl", renderS3CurlCredentials(s3Creds)),
  };
  const cert = ca.issue("bkredis", [redisHost.ip]);
  master = RedisServer.create(net, redisHost, "bkmaster", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
  const acl = renderRedisAcl(users) + renderRedisBackupAclLine({ name: backupUser.name, passwordSha256Hex: createHash("sha256").update(backupUser.pass).digest("hex") }) + "\n";
  await master.start(renderRedisConf({ role: "master", bind: [redisHost.ip, "127.0.0.1"], ...master.paths }), acl);
  // Data of every type a snapshot must carry, some with a TTL; lists and sets through the admin user
  // (the app's ACL has no list or set commands: templates/redis.ts REDIS_ACL_RULES).
  const app = users.app;
  await redisOk(redisHost, master.localTarget, ["MSET", ...Array.from({ length: 400 }, (_, i) => [`session:${i}`, randomBytes(24).toString("hex")]).flat()], app);
  await redisOk(redisHost, master.localTarget, ["HSET", "user:1", "name", "Ada", "role", "admin"], app);
  await redisOk(redisHost, master.localTarget, ["RPUSH", "queue", "a", "b", "c"], users.admin);
  await redisOk(redisHost, master.localTarget, ["SADD", "tags", "x", "y"], users.admin);
  await redisOk(redisHost, master.localTarget, ["ZADD", "rate:api-key-1", "1", "m1", "2", "m2"], app);
  await redisOk(redisHost, master.localTarget, ["SET", "ttl-key", "v", "EX", "3600"], app);
  before = await dataDigest(redisHost, master.localTarget, users.admin);
  expect(before.keys).toBe(405);
});

afterAll(async () => {
  await net?.destroy();
  removeHosts?.();
});

describe("Redis snapshot to object storage and restore", () => {
  let objectKey: string;

  it("the replica user cannot take a snapshot: redis-cli --rdb needs SYNC, which only the backup user has", async () => {
    const out = join(jobDir, "replica-user.rdb");
    const r = await redisCli(jobHost, master.target, ["--rdb", out], { auth: users.replication });
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/NOPERM|permission/i);
    expect(existsSync(out) && readFileSync(out).subarray(0, 5).toString() === "REDIS").toBe(false);
  });

  it("takes a snapshot through the backup user: checked, encrypted, uploaded with a verified signature", async () => {
    const passFile = secretFile("redis-backup-pass", `${randomBytes(32).toString("base64")}\n`);
    writeFileSync(join(jobDir, "pass-path"), passFile);
    const script = renderRedisSnapshotScript({
      name: "bkmaster",
      redis: { host: redisHost.ip, port: master.port, caFile: ca.certFile, user: backupUser.name, passwordFile: secretFile("redis-backup-user", backupUser.pass) },
      workDir: jobDir,
      encryptionPassFile: passFile,
      s3: target,
    });
    // No secret is in the script itself.
    for (const secret of [backupUser.pass, s3Creds.s3KeySecret]) expect(script).not.toContain(secret);
    const r = await runScript(jobHost, "snapshot.sh", script);
    expect(r.code, r.stderr).toBe(0);
    objectKey = r.stdout.trim();
    expect(objectKey).toMatch(/^synaxic\/redis\/bkmaster\/\d{8}T\d{6}Z\.rdb\.enc$/);
    const stored = readFileSync(join(s3.root, BUCKET, objectKey));
    // openssl's salted format, not an RDB: the store never sees the data.
    expect(stored.subarray(0, 8).toString()).toBe("Salted__");
    expect(stored.includes(Buffer.from("session:1"))).toBe(false);
    expect(readFileSync(join(s3.root, BUCKET, "synaxic/redis/bkmaster/LATEST"), "utf8")).toBe(objectKey);
    // The temporary files are gone, and the S3 stand-in accepted every signature.
    expect(existsSync(join(jobDir, objectKey.split("/").pop()!.replace(".enc", "")))).toBe(false);
    expect((await s3.stats(jobHost)).denied ?? 0).toBe(0);
    console.log(`[bkr] snapshot ${objectKey}: ${stored.length} bytes encrypted`);
  });

  it("a restored snapshot is ignored when the server starts with appendonly yes", async () => {
    const cert = ca.issue("bkrrestore-a", [restoreHost.ip]);
    const plain = RedisServer.create(net, restoreHost, "bkplain", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    const fetch = await runScript(restoreHost, "fetch-plain.sh", renderRedisRestoreFetchScript({
      name: "bkmaster", dataDir: plain.dataDir, encryptionPassFile: readFileSync(join(jobDir, "pass-path"), "utf8"), s3: target, owner: redisIds,
    }));
    expect(fetch.code, fetch.stderr).toBe(0);
    expect(existsSync(join(plain.dataDir, "dump.rdb"))).toBe(true);
    await plain.start(renderRedisConf({ role: "master", bind: [restoreHost.ip, "127.0.0.1"], ...plain.paths }), renderRedisAcl(users));
    expect(await redisOk(restoreHost, plain.localTarget, ["DBSIZE"], users.admin)).toBe("0");
    await plain.stop();
  });

  it("restores into a new server: first start with appendonly no loads the keys, AOF back on keeps them across a restart", async () => {
    const cert = ca.issue("bkrrestore-b", [restoreHost.ip]);
    const restored = RedisServer.create(net, restoreHost, "bkrestored", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    // A wrong passphrase is refused before anything is installed.
    const wrong = await runScript(restoreHost, "fetch-wrong.sh", renderRedisRestoreFetchScript({
      name: "bkmaster", objectKey, dataDir: restored.dataDir, encryptionPassFile: secretFile("wrong-pass", "not the passphrase\n"), s3: target,
    }));
    expect(wrong.code).not.toBe(0);
    expect(existsSync(join(restored.dataDir, "dump.rdb"))).toBe(false);

    const fetch = await runScript(restoreHost, "fetch.sh", renderRedisRestoreFetchScript({
      name: "bkmaster", objectKey, dataDir: restored.dataDir, encryptionPassFile: readFileSync(join(jobDir, "pass-path"), "utf8"), s3: target, owner: redisIds,
    }));
    expect(fetch.code, fetch.stderr).toBe(0);
    const conf = renderRedisConf({ role: "master", bind: [restoreHost.ip, "127.0.0.1"], ...restored.paths });
    // The first start: the normal config file with --appendonly no appended, as redisRestoreFirstStartArgv gives it.
    const argv = redisRestoreFirstStartArgv(restored.confFile);
    expect(argv.slice(2)).toEqual(["--appendonly", "no"]);
        for (const [file, text] of [[restored.confFile, conf], [restored.aclFile, renderRedisAcl(users)]] as const) {
      writeFileSync(file, text, { mode: 0o600 });
      chownSync(file, redisIds.uid, redisIds.gid);
    }
    // The rig's RedisServer runs `redis-server <conf>`; the first start runs the template's argv itself.
    const { proc, log } = restoreHost.spawnDaemon("redis-first-start", ["setpriv", "--reuid", "redis", "--regid", "redis", "--init-groups", "--", ...argv]);
    await waitFor("the restored server to load the snapshot", async () => {
      if (proc.exitCode !== null) throw new Error(net.readLog(log));
      return /DB loaded from disk/.test(net.readLog(log)) && /Ready to accept connections/.test(net.readLog(log));
    }, 20_000, 100);
    expect(await dataDigest(restoreHost, restored.localTarget, users.admin)).toEqual(before);
    expect(Number(await redisOk(restoreHost, restored.localTarget, ["TTL", "ttl-key"], users.admin))).toBeGreaterThan(3000);
    for (const cmd of REDIS_RESTORE_ENABLE_AOF) expect(await redisOk(restoreHost, restored.localTarget, [...cmd], users.admin)).toBe("OK");
    await waitFor("the AOF rewrite after CONFIG SET appendonly yes", async () => {
      const p = await redisInfo(restoreHost, restored.localTarget, "persistence", users.admin);
      return p.aof_enabled === "1" && p.aof_rewrite_in_progress === "0" && p.aof_rewrite_scheduled === "0" && p.aof_last_bgrewrite_status === "ok";
    }, 30_000, 200);
    process.kill(-proc.pid!, "SIGTERM");
    await waitFor("the first-start server to exit", async () => proc.exitCode !== null || proc.signalCode !== null, 15_000, 50);
    // Later starts use the normal config (appendonly yes): the keys come back from the new AOF.
    expect(existsSync(join(restored.dataDir, "appendonlydir"))).toBe(true);
    await restored.start(conf);
    expect(/DB loaded from append only file/.test(restored.log())).toBe(true);
    expect(await dataDigest(restoreHost, restored.localTarget, users.admin)).toEqual(before);
    console.log(`[bkr] restored ${before.keys} keys (digest ${before.sha1.slice(0, 12)}), kept across a restart with AOF on`);
  });
});

/** A textfile's samples by name (no labels in the job's textfile). */
function parseTextfile(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+) (\S+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

describe("the Redis snapshot job, as the program renders it", () => {
  let paths: RedisSnapshotJobPaths;
  let restored: RedisServer;
  let job: { proc: ChildProcess; log: string };
  const secrets = [backupUser.pass, s3Creds.s3KeySecret];
  const cipherPass = `${randomBytes(30).toString("base64url")}`;
  const series = "synaxic/redis/master/";
  const snapshotKeys = () => s3.objects(series).map((o) => o.key).filter((k) => k.endsWith(".rdb.enc"));
  const textfile = () => readFileSync(join(paths.textfile, REDIS_SNAPSHOT_TEXTFILE), "utf8");
  const metrics = () => parseTextfile(textfile());
  const runJob = (args: string[]) => jobHost.exec(["bash", paths.entrypoint, ...args], { allowFail: true, timeoutMs: 120_000 });
  const t0 = Math.floor(Date.now() / 1000);

  beforeAll(() => {
    const root = net.mkdir("redis-snapshot-job");
    // The redis user runs the install script from the state directory.
    chmodSync(root, 0o711);
    paths = {
      entrypoint: join(root, "bin", "synaxic-redis-backup"),
      snapshot: join(root, "lib", "snapshot.sh"),
      expire: join(root, "lib", "expire.sh"),
      fetch: join(root, "lib", "fetch.sh"),
      install: join(root, "lib", "install.sh"),
      caFile: ca.certFile,
      s3CaFile: ca.certFile,
      passwordFile: join(root, "secrets", "redis-password"),
      cipherPassFile: join(root, "secrets", "cipher-pass"),
      s3CredentialsFile: join(root, "secrets", "s3.curl"),
      state: join(root, "state"),
      textfile: join(root, "textfile"),
    };
    const cert = ca.issue("bkrrestore-job", [restoreHost.ip]);
    // Its own port: the earlier restore's server still runs on this host.
    restored = RedisServer.create(net, restoreHost, "bkjobrestored", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem }, 6381);
    const files = renderRedisSnapshotJobFiles({
      hostName: "bkjob",
      redis: { host: redisHost.ip, port: master.port },
      repository: { endpoint: s3.endpoint, bucket: BUCKET, region: "bk-rig-1", path: "/synaxic", hasCaCertificate: true },
      // The day's snapshot is due from 00:00 UTC: any time of the test is past it.
      hourUtc: 0,
      retention: 2,
      redisDataDir: restored.dataDir,
      redisUid: redisIds.uid,
      redisGid: redisIds.gid,
      paths,
      intervalSeconds: 1,
    });
    for (const d of ["bin", "lib", "secrets", "textfile"]) mkdirSync(join(root, d), { mode: 0o755 });
    for (const [file, script] of Object.entries(files)) {
      writeFileSync(file, script, { mode: 0o755 });
      for (const secret of secrets) expect(script, file).not.toContain(secret);
    }
    writeFileSync(paths.passwordFile, backupUser.pass, { mode: 0o600 });
    writeFileSync(paths.cipherPassFile, `${cipherPass}\n`, { mode: 0o600 });
    writeFileSync(paths.s3CredentialsFile, renderS3CurlCredentials(s3Creds), { mode: 0o600 });
  });

  afterAll(() => {
    if (job?.proc.exitCode === null) process.kill(-job.proc.pid!, "SIGKILL");
  });

  it("a scheduled pass: the loop takes a snapshot at once, uploads it encrypted, and writes its textfile (result 1, success, duration, size)", async () => {
    job = jobHost.spawnDaemon("redis-snapshot-job", ["bash", paths.entrypoint]);
    await waitFor("the job's first snapshot", async () => {
      if (job.proc.exitCode !== null) throw new Error(net.readLog(job.log));
      return existsSync(join(paths.textfile, REDIS_SNAPSHOT_TEXTFILE)) && metrics().synaxic_redis_snapshot_last_result_success === 1;
    }, 60_000, 200);
    const keys = snapshotKeys();
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(/^synaxic\/redis\/master\/\d{8}T\d{6}Z\.rdb\.enc$/);
    expect(readFileSync(join(s3.root, BUCKET, series, "LATEST"), "utf8")).toBe(keys[0]);
    const m = metrics();
    expect(m.synaxic_redis_snapshot_last_size_bytes).toBe(s3.objects(keys[0]!)[0]!.size);
    expect(m.synaxic_redis_snapshot_last_success_timestamp_seconds).toBeGreaterThanOrEqual(t0);
    expect(m.synaxic_redis_snapshot_last_duration_seconds).toBeGreaterThanOrEqual(0);
    expect(m.synaxic_redis_snapshot_expire_last_result_success).toBe(1);
    expect(m.synaxic_redis_snapshot_armed_timestamp_seconds).toBeGreaterThanOrEqual(t0);
    // Encrypted with the passphrase file's first line: openssl decrypts it into an RDB file.
    const rdb = execFileSync("openssl", [...OPENSSL_ENC, "-d", "-pass", `file:${paths.cipherPassFile}`, "-in", join(s3.root, BUCKET, keys[0]!)]);
    expect(rdb.subarray(0, 5).toString()).toBe("REDIS");
    const r = await promtool(["check", "metrics"], { input: textfile() });
    expect(r.stdout + r.stderr).not.toMatch(/error|parse/i);
    // The loop goes on (a heartbeat a second) without taking another: the day's is done.
    const beat = m.synaxic_redis_snapshot_heartbeat_timestamp_seconds!;
    await waitFor("the next heartbeat", async () => metrics().synaxic_redis_snapshot_heartbeat_timestamp_seconds! > beat, 10_000, 200);
    expect(snapshotKeys()).toHaveLength(1);
    expect(metrics().synaxic_redis_snapshot_last_start_timestamp_seconds).toBe(m.synaxic_redis_snapshot_last_start_timestamp_seconds);
  });

  it("the day's snapshot: once the last success is from before today's hour, the loop takes the next one", async () => {
    const before = snapshotKeys();
    const firstStart = metrics().synaxic_redis_snapshot_last_start_timestamp_seconds!;
    // As if the last snapshot had been taken yesterday.
    const yesterday = Math.floor(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate()) / 1000) - 3600;
    writeFileSync(join(paths.state, "snapshot.succeeded"), `${yesterday}\n`);
    // Done once the textfile reports a snapshot started after the first one as a success.
    await waitFor("the day's snapshot", async () => {
      const m = metrics();
      return m.synaxic_redis_snapshot_last_start_timestamp_seconds! > firstStart && m.synaxic_redis_snapshot_last_result_success === 1 && m.synaxic_redis_snapshot_last_success_timestamp_seconds! >= m.synaxic_redis_snapshot_last_start_timestamp_seconds!;
    }, 60_000, 200);
    expect(snapshotKeys()).toHaveLength(before.length + 1);
    expect(readFileSync(join(s3.root, BUCKET, series, "LATEST"), "utf8")).toBe(snapshotKeys().sort().at(-1));
    expect(net.readLog(job.log)).toMatch(/snapshot: synaxic\/redis\/master\/\d{8}T\d{6}Z\.rdb\.enc uploaded \(\d+ bytes\)/);
  });

  it("a stop removes the textfile (a job removed from a host that is no longer the master leaves nothing to age into an alert)", async () => {
    process.kill(-job.proc.pid!, "SIGTERM");
    await waitFor("the job to stop", async () => job.proc.exitCode !== null || job.proc.signalCode !== null, 15_000, 100);
    expect(existsSync(join(paths.textfile, REDIS_SNAPSHOT_TEXTFILE))).toBe(false);
    // Nothing secret in its log.
    for (const secret of [...secrets, cipherPass]) expect(net.readLog(job.log)).not.toContain(secret);
  });

  it("expiry keeps the newest snapshots (retention 2), listing through several pages, LATEST's among them", async () => {
    for (let i = 0; i < 2; i++) {
      // Keys are named by the second: one snapshot per second at most.
      await new Promise((r) => setTimeout(r, 1100));
      const r = await runJob(["now"]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(r.stdout).toMatch(/expire: kept \d+ snapshots, expired \d+/);
    }
    const keys = snapshotKeys();
    expect(keys).toHaveLength(2);
    const latest = readFileSync(join(s3.root, BUCKET, series, "LATEST"), "utf8");
    expect(keys).toContain(latest);
    expect(latest).toBe([...keys].sort().at(-1));
    expect(metrics().synaxic_redis_snapshot_expire_last_result_success).toBe(1);
    const stats = await s3.stats(jobHost);
    expect(stats.listContinuation ?? 0).toBeGreaterThan(0);
    expect(stats.denied ?? 0).toBe(0);
  });

  it("restore: fetch puts the newest snapshot and the install script in the state directory; the install script makes it the server's AOF; the server starts from it with the same keys", async () => {
    const dump = join(paths.state, "restore", "dump.rdb");
    // A key of another series is refused before anything is downloaded, and leaves nothing to install.
    const other = await runJob(["fetch", "elsewhere/20240101T000000Z.rdb.enc"]);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(/not a snapshot of synaxic\/redis\/master/);
    expect(existsSync(dump)).toBe(false);
    const fetched = await runJob(["fetch"]);
    expect(fetched.code, fetched.stderr).toBe(0);
    expect(readFileSync(dump).subarray(0, 5).toString()).toBe("REDIS");
    // As the runbook runs it: as the Redis user, with the server stopped (here: never started), its data directory in place.
    const conf = renderRedisConf({ role: "master", bind: [restoreHost.ip, "127.0.0.1"], port: restored.port, ...restored.paths });
    const install = await restoreHost.exec(["setpriv", "--reuid", "redis", "--regid", "redis", "--init-groups", "--", "bash", join(paths.state, "restore", "install.sh")], { allowFail: true, timeoutMs: 120_000 });
    expect(install.code, install.stderr + install.stdout).toBe(0);
    expect(install.stdout).toMatch(new RegExp(`installed ${before.keys} keys into ${restored.dataDir.replace(/[.]/g, "\\.")}`));
    await restored.start(conf, renderRedisAcl(users));
    expect(/DB loaded from append only file/.test(restored.log())).toBe(true);
    expect(await dataDigest(restoreHost, restored.localTarget, users.admin)).toEqual(before);
    console.log(`[bkr] the job's snapshot restored: ${before.keys} keys (digest ${before.sha1.slice(0, 12)}) from the AOF the install script wrote`);
  });

  it("the object storage down: the snapshot fails, the textfile says result 0 and keeps the last success; SynaxicRedisSnapshotFailed fires on it", async () => {
    const lastOk = metrics().synaxic_redis_snapshot_last_success_timestamp_seconds!;
    await s3.kill();
    const r = await runJob(["now"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/snapshot: FAILED with exit code \d+/);
    const m = metrics();
    expect(m.synaxic_redis_snapshot_last_result_success).toBe(0);
    expect(m.synaxic_redis_snapshot_last_success_timestamp_seconds).toBe(lastOk);
    // Nothing left behind in the work directory.
    expect(execFileSync("ls", [join(paths.state, "work")]).toString().split("\n").filter((f) => f.startsWith("snapshot-"))).toEqual([]);

    // The alert rules on what the job wrote, with node_exporter's labels.
    const dir = net.mkdir("redis-snapshot-rules");
    writeFileSync(join(dir, "backup.yml"), renderBackupAlertRules());
    const labels = 'job="node",instance="10.10.0.2:9100",host="main"';
    const sampleOf = (m2: Record<string, number>, name: string, n = 30) => ({ series: `${name}{${labels}}`, values: `${m2[name]}x${n}` });
    const rules = Object.fromEntries(backupAlertRules().map((x) => [x.alert, x]));
    const fill = (t: string) => t.replace(/\{\{ \$labels\.host \}\}/g, "main");
    const annotations = (alert: string) => ({ summary: fill(rules[alert]!.annotations.summary), description: fill(rules[alert]!.annotations.description) });
    const expLabels = { job: "node", instance: "10.10.0.2:9100", host: "main", severity: "warning" };
    const hours = DEFAULT_BACKUP_ALERT_THRESHOLDS.redisSnapshotMaxAgeHours;
    const tests = [
      {
        interval: "1m",
        input_series: [sampleOf(m, "synaxic_redis_snapshot_last_result_success")],
        alert_rule_test: [{ eval_time: "5m", alertname: "SynaxicRedisSnapshotFailed", exp_alerts: [{ exp_labels: expLabels, exp_annotations: annotations("SynaxicRedisSnapshotFailed") }] }],
      },
      { interval: "1m", input_series: [{ series: `synaxic_redis_snapshot_last_result_success{${labels}}`, values: "1x30" }], alert_rule_test: [{ eval_time: "5m", alertname: "SynaxicRedisSnapshotFailed", exp_alerts: [] }] },
      // Too old: a success at time 0 and none since fires past the age (and its 10m), not before; before the first, armed counts.
      { interval: "5m", input_series: [{ series: `synaxic_redis_snapshot_last_success_timestamp_seconds{${labels}}`, values: `0x${(hours + 2) * 12}` }], alert_rule_test: [{ eval_time: `${hours + 1}h`, alertname: "SynaxicRedisSnapshotTooOld", exp_alerts: [{ exp_labels: expLabels, exp_annotations: annotations("SynaxicRedisSnapshotTooOld") }] }] },
      { interval: "5m", input_series: [{ series: `synaxic_redis_snapshot_last_success_timestamp_seconds{${labels}}`, values: `0x${(hours + 2) * 12}` }], alert_rule_test: [{ eval_time: `${hours - 1}h`, alertname: "SynaxicRedisSnapshotTooOld", exp_alerts: [] }] },
      { interval: "5m", input_series: [{ series: `synaxic_redis_snapshot_armed_timestamp_seconds{${labels}}`, values: `0x${(hours + 2) * 12}` }], alert_rule_test: [{ eval_time: `${hours + 1}h`, alertname: "SynaxicRedisSnapshotTooOld", exp_alerts: [{ exp_labels: expLabels, exp_annotations: annotations("SynaxicRedisSnapshotTooOld") }] }] },
    ];
    writeFileSync(join(dir, "test.yml"), stringify({ rule_files: ["backup.yml"], evaluation_interval: "1m", tests }));
    const t = await promtool(["test", "rules", "test.yml"], { cwd: dir });
    expect(t.code, t.stdout + t.stderr).toBe(0);
  });
});

describe("the snapshot image's install step (templates/redis-backup-image.ts), run by this Debian host's sh and dpkg", () => {
  const installed = Object.fromEntries(
    execFileSync("dpkg-query", ["-W", "-f=${Package}=${Version}\\n", "curl", "openssl", "ca-certificates"]).toString().trim().split("\n").map((l) => l.split("=") as [string, string]),
  );
  const packages = { curl: installed.curl!, openssl: installed.openssl!, caCertificates: installed["ca-certificates"]! };

  /** The Dockerfile's RUN step, with apt-get a stub that records its arguments (and installs nothing). */
  function runStep(p: typeof packages) {
    const dockerfile = renderRedisBackupImageDockerfile({ baseImage: "redis:7.0.15-bookworm", packages: p });
    const body = dockerfile.split("\n").filter((l) => !/^(#|FROM |LABEL )/.test(l)).join("\n").replace(/^RUN /, "");
    const dir = net.mkdir("image-step");
    writeFileSync(join(dir, "apt-get"), `#!/bin/sh\necho "$*" >> ${dir}/apt-get.calls\n`, { mode: 0o755 });
    let code = 0;
    let err = "";
    try {
      execFileSync("sh", ["-c", body], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      code = (e as { status: number }).status;
      err = String((e as { stderr: Buffer }).stderr);
    }
    const calls = existsSync(join(dir, "apt-get.calls")) ? readFileSync(join(dir, "apt-get.calls"), "utf8") : "";
    return { code, err, calls };
  }

  it("pins that are what is installed: nothing downloaded (apt-get never runs), the tools answer", () => {
    const r = runStep(packages);
    expect(r.code, r.err).toBe(0);
    expect(r.calls).toBe("");
  });

  it("a pin that is not installed: apt-get update, then install of exactly that pin; a version still not there after it fails the step, naming it", () => {
    const r = runStep({ ...packages, curl: "7.88.1-10+deb12u0" });
    expect(r.calls.split("\n").filter(Boolean)).toEqual(["update", "install -y --no-install-recommends curl=7.88.1-10+deb12u0"]);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("curl is not installed at 7.88.1-10+deb12u0");
  });
});
