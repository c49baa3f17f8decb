import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import {
  REDIS_BACKUP_ACL_RULES,
  REDIS_RESTORE_ENABLE_AOF,
  RedisBackupTemplateError,
  redisRestoreFirstStartArgv,
  renderRedisBackupAclLine,
  renderRedisRestoreFetchScript,
  renderRedisRestoreInstallScript,
  renderRedisSnapshotExpireScript,
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

  it("writes the uploaded object's size to sizeFile when asked, after the upload and before LATEST", () => {
    expect(renderRedisSnapshotScript(snapshot)).not.toContain("stat -c %s");
    const script = renderRedisSnapshotScript({ ...snapshot, sizeFile: "/var/lib/redis-backup/size" });
    const lines = script.split("\n");
    const size = lines.indexOf('stat -c %s "$rdb.enc" > /var/lib/redis-backup/size');
    expect(size).toBeGreaterThan(lines.findIndex((l) => l.includes('-T "$rdb.enc" "$BASE_URL$key"')));
    expect(size).toBeLessThan(lines.findIndex((l) => l.includes("$PREFIX/LATEST")));
  });

  it("takes a prefix with capitals (backupRepository.path allows them), never one needing percent-encoding", () => {
    expect(renderRedisSnapshotScript({ ...snapshot, s3: { ...s3, prefix: "Synaxic/redis" } })).toContain("PREFIX=Synaxic/redis/main");
    expect(() => renderRedisSnapshotScript({ ...snapshot, s3: { ...s3, prefix: "a b/redis" } })).toThrow(/s3.prefix/);
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

  it("with no objectKey, fetches the snapshot named by its first argument, or else LATEST's, and only one of its own series", () => {
    const script = renderRedisRestoreFetchScript(fetch);
    expect(script).toContain('key="${1:-}"');
    expect(script).toMatch(/\[ -n "\$key" \] \|\| key=\$\(curl .*synaxic\/redis\/main\/LATEST\)/);
    expect(script).toContain('[[ "${key#"$PREFIX/"}" =~ ^[0-9]{8}T[0-9]{6}Z\\.rdb\\.enc$ ]] && [ "${key%/*}" = "$PREFIX" ]');
  });

  it("renders the install script", () => {
    expect(renderRedisRestoreInstallScript({ dumpFile: "/var/lib/synaxic-redis-backup/restore/dump.rdb", dataDir: "/data" })).toMatchSnapshot();
  });

  it("the install script keeps what was there, starts a throwaway server with the template's first-start flags on a private socket, turns AOF on and waits for the rewrite", () => {
    const script = renderRedisRestoreInstallScript({ dumpFile: "/restore/dump.rdb", dataDir: "/data", appendDirName: "aof" });
    expect(script).toContain('mv "$DATA/$AOF_DIR" "$DATA/$AOF_DIR.before-restore-$ts"');
    expect(script).toContain("AOF_DIR=aof");
    expect(script).toContain('redis-server "$WORK/redis.conf" --appendonly no');
    expect(script).toMatch(/^port 0$/m);
    expect(script).toMatch(/^unixsocketperm 700$/m);
    expect(script).toMatch(/^save ""$/m);
    expect(script).toContain('[ "$(redis-cli -s "$WORK/redis.sock" CONFIG SET appendonly yes)" = OK ]');
    expect(script).toContain("aof_rewrite_in_progress:0");
    expect(() => renderRedisRestoreInstallScript({ dumpFile: "/r/dump.rdb", dataDir: "/da ta" })).toThrow(/dataDir/);
    expect(() => renderRedisRestoreInstallScript({ dumpFile: "/r/dump.rdb", dataDir: "/data", appendFileName: "../x" })).toThrow(/appendFileName/);
  });

  it("starts the first time with AOF off, then turns it on", () => {
    expect(redisRestoreFirstStartArgv("/etc/synaxic/redis.conf")).toEqual(["redis-server", "/etc/synaxic/redis.conf", "--appendonly", "no"]);
    expect(REDIS_RESTORE_ENABLE_AOF).toEqual([["CONFIG", "SET", "appendonly", "yes"]]);
    expect(() => redisRestoreFirstStartArgv("redis.conf")).toThrow(/absolute path/);
  });
});

describe("renderRedisSnapshotExpireScript", () => {
  const expire = { name: "master", s3, retention: 3 };

  it("renders the expire script", () => {
    expect(renderRedisSnapshotExpireScript(expire)).toMatchSnapshot();
  });

  it("lists every page with the query in SigV4's canonical form (sorted, encoded), keeps the newest snapshots and LATEST's, deletes with a signed empty payload", () => {
    const script = renderRedisSnapshotExpireScript(expire);
    expect(script).toContain('query="list-type=2&prefix=$(urlencode "$PREFIX/")"');
    expect(script).toContain('query="continuation-token=$(urlencode "$token")&$query"');
    expect(script).toContain("KEEP=3");
    expect(script).toContain('for k in "${snapshots[@]:KEEP}"; do');
    expect(script).toContain('[ "$k" = "$latest" ] && continue');
    expect(script).toContain("-X DELETE -H \"x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"");
    expect(script).toContain("-K /run/secrets/s3.curl");
  });

  it("refuses a retention outside 1 to 1000", () => {
    expect(() => renderRedisSnapshotExpireScript({ ...expire, retention: 0 })).toThrow(/retention 0/);
    expect(() => renderRedisSnapshotExpireScript({ ...expire, retention: 1.5 })).toThrow(/retention/);
  });
});
