import { describe, expect, it } from "vitest";
import {
  REDIS_SNAPSHOT_PATHS,
  REDIS_SNAPSHOT_SERIES,
  REDIS_SNAPSHOT_TEXTFILE,
  redisSnapshotTarget,
  renderRedisSnapshotJobFiles,
  renderRedisSnapshotSchedulerScript,
  type RedisSnapshotSchedulerParams,
} from "../../../templates/redis-backup-scheduler";
import { REDIS_BACKUP_USER } from "../../../templates/redis-backup";

const P: RedisSnapshotSchedulerParams = {
  hostName: "main",
  hourUtc: 2,
  snapshotScript: "/usr/local/lib/synaxic-redis-backup/snapshot.sh",
  expireScript: "/usr/local/lib/synaxic-redis-backup/expire.sh",
  sizeFile: "/var/lib/synaxic-redis-backup/work/size",
  restore: { fetchScript: "/usr/local/lib/synaxic-redis-backup/fetch.sh", installScript: "/usr/local/lib/synaxic-redis-backup/install.sh", ownerUid: 999, ownerGid: 999 },
  textfileDir: "/textfile",
  stateDir: "/var/lib/synaxic-redis-backup",
};
const REPO = { endpoint: "fsn1.your-objectstorage.com", bucket: "acme-synaxic", region: "fsn1", path: "/synaxic", hasCaCertificate: false };

describe("the Redis snapshot job's loop", () => {
  it("renders", () => {
    expect(renderRedisSnapshotSchedulerScript(P)).toMatchSnapshot();
  });

  it("is due with no success yet, or none since today's hour once it has passed; never within the retry delay of a failure", () => {
    const s = renderRedisSnapshotSchedulerScript({ ...P, hourUtc: 4, retrySeconds: 600 });
    expect(s).toContain("HOUR=4");
    expect(s).toContain("RETRY=600");
    expect(s).toContain('[ -z "$ok" ] && return 0');
    expect(s).toContain('slot=$(date -u -d "$(date -u +%F) $(printf \'%02d\' "$HOUR"):00:00" +%s)');
    expect(s).toContain('[ "$now" -ge "$slot" ] && [ "$ok" -lt "$slot" ]');
  });

  it("expires only after a successful snapshot, one snapshot at a time, bounded; records result, duration and size; removes its textfile when stopped", () => {
    const s = renderRedisSnapshotSchedulerScript(P);
    const take = s.slice(s.indexOf("take() {"), s.indexOf("# Due:"));
    expect(take).toContain("flock -n 9");
    expect(take).toContain('timeout -k 10 "$TIMEOUT" bash "$SNAPSHOT"');
    expect(take.indexOf('bash "$EXPIRE"')).toBeGreaterThan(take.indexOf('if [ "$rc" -eq 0 ]; then'));
    expect(take.indexOf('bash "$EXPIRE"')).toBeLessThan(take.indexOf("else"));
    for (const k of ["started", "finished", "result", "duration", "succeeded", "size"]) expect(take).toContain(`record snapshot ${k}`);
    expect(s).toContain(`trap 'log "stopping"; rm -f "$TEXTFILE"; exit 0' TERM INT`);
    expect(s).toContain(`TEXTFILE="$TEXTFILE_DIR/${REDIS_SNAPSHOT_TEXTFILE}"`);
  });

  it("writes every metric the alert rules read", () => {
    const s = renderRedisSnapshotSchedulerScript(P);
    for (const m of [
      "synaxic_redis_snapshot_last_success_timestamp_seconds",
      "synaxic_redis_snapshot_last_result_success",
      "synaxic_redis_snapshot_last_duration_seconds",
      "synaxic_redis_snapshot_last_size_bytes",
      "synaxic_redis_snapshot_expire_last_result_success",
      "synaxic_redis_snapshot_armed_timestamp_seconds",
      "synaxic_redis_snapshot_heartbeat_timestamp_seconds",
    ]) {
      expect(s).toContain(`# TYPE ${m} gauge`);
    }
  });

  it("fetch puts a snapshot and the install script in the state directory, owned by the Redis user", () => {
    const s = renderRedisSnapshotSchedulerScript(P);
    expect(s).toContain('bash /usr/local/lib/synaxic-redis-backup/fetch.sh "${2:-}" || exit $?');
    expect(s).toContain('install -o 999 -g 999 -m 0500 /usr/local/lib/synaxic-redis-backup/install.sh "$STATE_DIR/restore/install.sh"');
  });

  it.each([
    ["an hour past 23", { ...P, hourUtc: 24 }, /hourUtc must be an integer from 0 to 23/],
    ["a relative textfile directory", { ...P, textfileDir: "textfile" }, /textfileDir/],
    ["a state directory at the root", { ...P, stateDir: "/state" }, /stateDir .* at least two levels deep/],
    ["a host name with a quote", { ...P, hostName: "main'" }, /hostName/],
    ["a negative owner", { ...P, restore: { ...P.restore, ownerUid: -1 } }, /restore.ownerUid/],
  ])("refuses %s", (_what, params, message) => {
    expect(() => renderRedisSnapshotSchedulerScript(params)).toThrow(message);
  });
});

describe("the job's files", () => {
  const files = renderRedisSnapshotJobFiles({ hostName: "main", redis: { host: "127.0.0.1", port: 6380 }, repository: REPO, hourUtc: 2, retention: 7, redisDataDir: "/data", redisUid: 999, redisGid: 999 });

  it("one script per path, the loop as the entrypoint", () => {
    const P2 = REDIS_SNAPSHOT_PATHS;
    expect(Object.keys(files).sort()).toEqual([P2.entrypoint, P2.snapshot, P2.expire, P2.fetch, P2.install].sort());
    expect(files[P2.entrypoint]).toContain(`SNAPSHOT=${P2.snapshot}`);
  });

  it("the snapshot logs in as the backup user over TLS on loopback, reads every secret from its file, and goes below the repository's path", () => {
    const snap = files[REDIS_SNAPSHOT_PATHS.snapshot]!;
    expect(snap).toContain(`--user ${REDIS_BACKUP_USER}`);
    expect(snap).toContain("-h 127.0.0.1 -p 6380");
    expect(snap).toContain(`REDISCLI_AUTH=$(cat ${REDIS_SNAPSHOT_PATHS.passwordFile})`);
    expect(snap).toContain(`-pass file:${REDIS_SNAPSHOT_PATHS.cipherPassFile}`);
    expect(snap).toContain(`PREFIX=synaxic/redis/${REDIS_SNAPSHOT_SERIES}`);
    expect(files[REDIS_SNAPSHOT_PATHS.expire]).toContain("KEEP=7");
  });

  it("the snapshots' place: redis/ below the repository's path, the endpoint's CA only when given", () => {
    expect(redisSnapshotTarget(REPO).prefix).toBe("synaxic/redis");
    expect(redisSnapshotTarget({ ...REPO, path: "/" }).prefix).toBe("redis");
    expect(redisSnapshotTarget({ ...REPO, path: "/a/b" }).prefix).toBe("a/b/redis");
    expect(redisSnapshotTarget(REPO).caFile).toBeUndefined();
    expect(redisSnapshotTarget({ ...REPO, hasCaCertificate: true }).caFile).toBe(REDIS_SNAPSHOT_PATHS.s3CaFile);
  });
});
