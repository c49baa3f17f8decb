import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import {
  REDIS_BACKUP_ACL_RULES,
  REDIS_RESTORE_ENABLE_AOF,
  RedisBackupTemplateError,
  redisRestoreFirstStartArgv,
  renderRedisBackupAclLine,
  renderRedisRestoreFetchScript,
  renderRedisSnapshotScript,
  renderS3CurlCredentials,
  type RedisS3Target,
  type RedisSnapshotParams,
} from "../../../templates/redis-backup";

const s3: RedisS3Target = {
  endpoint: "fsn1.your-objectstorage.com",
  bucket: "synaxic-backups",
  region: "fsn1",
  prefix: "synaxic/redis",
  credentialsFile: "/run/secrets/s3.curl",
};
const snapshot: RedisSnapshotParams = {
  name: "main",
  redis: { host: "10.0.0.2", caFile: "/etc/synaxic/tls/ca.crt", user: "snapshot", passwordFile: "/run/secrets/redis-snapshot" },
  workDir: "/var/lib/redis-backup",
  encryptionPassFile: "/run/secrets/redis-backup-pass",
  s3,
};

describe("renderRedisBackupAclLine", () => {
  it("gives the backup user SYNC, REPLCONF and PING only, with a hashed password", () => {
    const hash = createHash("sha256").update("a-long-backup-password").digest("hex");
    expect(renderRedisBackupAclLine({ name: "snapshot", passwordSha256Hex: hash })).toBe(`user snapshot reset on #${hash} -@all +sync +replconf +ping`);
    expect(REDIS_BACKUP_ACL_RULES).not.toContain("~*");
  });

  it("refuses a clear-text password and a bad name", () => {
    expect(() => renderRedisBackupAclLine({ name: "snapshot", passwordSha256Hex: "secret" })).toThrow(/SHA-256/);
    expect(() => renderRedisBackupAclLine({ name: "snap shot", passwordSha256Hex: "0".repeat(64) })).toThrow(RedisBackupTemplateError);
  });
});

describe("renderS3CurlCredentials", () => {
  it("quotes the secret for curl's config syntax", () => {
    expect(renderS3CurlCredentials({ s3Key: "AKIA1", s3KeySecret: 'se"cr\\et' })).toBe('user = "AKIA1:se\\"cr\\\\et"\n');
  });

  it.each([
    ["a line break", { s3Key: "AKIA1", s3KeySecret: "a\nurl = http://elsewhere" }, /line break/],
    ["a ':' in the key", { s3Key: "AK:IA", s3KeySecret: "x" }, /must not contain ':'/],
    ["an empty secret", { s3Key: "AKIA1", s3KeySecret: "" }, /s3KeySecret is empty/],
  ])("refuses %s", (_what, creds, message) => {
    expect(() => renderS3CurlCredentials(creds)).toThrow(message);
  });
});

describe("renderRedisSnapshotScript", () => {
  it("renders the snapshot script", () => {
    expect(renderRedisSnapshotScript(snapshot)).toMatchSnapshot();
  });

  it("keeps every secret in files: REDISCLI_AUTH from the password file, openssl -pass file:, curl -K", () => {
    const script = renderRedisSnapshotScript(snapshot);
    expect(script).toContain("REDISCLI_AUTH=$(cat /run/secrets/redis-snapshot)");
    expect(script).toContain("-pass file:/run/secrets/redis-backup-pass");
    expect(script).toContain("-K /run/secrets/s3.curl");
    expect(script).toContain("--aws-sigv4 aws:amz:fsn1:s3");
    expect(script).not.toMatch(/--pass |-a /);
  });

  it.each([
    ["an IP address as the endpoint", { ...snapshot, s3: { ...s3, endpoint: "10.0.0.9:9000" } }, /must be a DNS name/],
    ["a scheme in the endpoint", { ...snapshot, s3: { ...s3, endpoint: "https://s3.example.com" } }, /must be a DNS name/],
    ["a prefix with a leading '/'", { ...snapshot, s3: { ...s3, prefix: "/synaxic" } }, /s3.prefix/],
    ["a relative work directory", { ...snapshot, workDir: "tmp" }, /workDir .* absolute/],
    ["a name with spaces", { ...snapshot, name: "main host" }, /name "main host"/],
    ["a bad port", { ...snapshot, redis: { ...snapshot.redis, port: 0 } }, /redis.port 0/],
  ])("refuses %s", (_what, params, message) => {
    expect(() => renderRedisSnapshotScript(params as RedisSnapshotParams)).toThrow(message);
  });
});

describe("restore", () => {
  const fetch = { name: "main", dataDir: "/data", encryptionPassFile: "/run/secrets/redis-backup-pass", s3 };

  it("renders the fetch script for the latest snapshot", () => {
    expect(renderRedisRestoreFetchScript({ ...fetch, owner: { uid: 999, gid: 999 } })).toMatchSnapshot();
  });

  it("removes the AOF directory (it would win over dump.rdb) and fetches a named snapshot", () => {
    const script = renderRedisRestoreFetchScript({ ...fetch, objectKey: "synaxic/redis/main/20240102T030405Z.rdb.enc", appendDirName: "aof" });
    expect(script).toContain('rm -rf "$DATA"/aof');
    expect(script).toContain("key=synaxic/redis/main/20240102T030405Z.rdb.enc");
    expect(script).not.toContain("LATEST");
  });

  it("refuses a key outside the server's prefix and a path as the AOF directory name", () => {
    expect(() => renderRedisRestoreFetchScript({ ...fetch, objectKey: "other/x.rdb.enc" })).toThrow(/must be a snapshot key under synaxic\/redis\/main\//);
    expect(() => renderRedisRestoreFetchScript({ ...fetch, appendDirName: "../etc" })).toThrow(/plain directory name/);
    expect(() => renderRedisRestoreFetchScript({ ...fetch, owner: { uid: -1, gid: 0 } })).toThrow(/owner.uid/);
  });

  it("starts the first time with AOF off, then turns it on", () => {
    expect(redisRestoreFirstStartArgv("/etc/synaxic/redis.conf")).toEqual(["redis-server", "/etc/synaxic/redis.conf", "--appendonly", "no"]);
    expect(REDIS_RESTORE_ENABLE_AOF).toEqual([["CONFIG", "SET", "appendonly", "yes"]]);
    expect(() => redisRestoreFirstStartArgv("redis.conf")).toThrow(/absolute path/);
  });
});
