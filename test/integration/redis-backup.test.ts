/**
 * Redis snapshots with the rendered scripts, on real Redis 7.0 (Debian),
 * redis-cli, openssl and curl, into the rig's S3 stand-in (its own
 * namespace, HTTPS verified against the rig CA, AWS Signature V4 checked):
 * a snapshot through the backup ACL user, encrypted in the store; a restore
 * into a new server that starts with appendonly no, then turns AOF on and
 * keeps the keys across a restart with the normal config; and the two ways
 * it goes wrong (the replica user lacks SYNC; a plain start with AOF on
 * ignores the restored file).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { dataDigest, randomRedisUsers, redisCli, redisInfo, redisOk, RedisServer, type DataDigest } from "../rig/redis";
import { S3StandIn } from "../rig/s3";
import { setRigHosts } from "../rig/dns";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import {
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
const backupUser = { name: "snapshot", pass: randomBytes(18).toString("base64url") };
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
  s3 = await S3StandIn.start({ host: net.host("bkrs3"), ca, dnsName: S3_NAME, port: 9443, bucket: BUCKET, accessKey: s3Creds.s3Key, secretKey: s3Creds.s3KeySecret });
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
