/**
 * The Redis snapshot job: a small container beside the Redis master (from
 * the image templates/redis-backup-image.ts builds) whose loop
 * - takes a snapshot at once when it has recorded no successful one (a new
 *   job, or a new master after a failover), retried every 15 minutes while
 *   that fails;
 * - then one a day, from `hourUtc` on (a day whose hour passed while the job
 *   was down is caught up when it starts), retried every 15 minutes while it
 *   fails;
 * - after each successful snapshot, expires the series' old ones (the
 *   expire script, templates/redis-backup.ts);
 * - writes a node_exporter textfile with the last start, success, result,
 *   duration and size of the snapshots, the last expiry's result, since
 *   when this host has been due to take them, and its own heartbeat, which
 *   the alert rules (templates/backup-alerts.ts) read. On a stop it removes
 *   the textfile: a job removed because its host's Redis is no longer the
 *   master (a failover) leaves nothing behind that would age into an alert.
 *
 * `synaxic-redis-backup now` (inside the container) takes a snapshot at once
 * and exits with its result; `synaxic-redis-backup fetch [KEY]` fetches one
 * (LATEST by default) into `<stateDir>/restore` for a restore
 * (docs/runbook.md). Snapshots run one at a time (a lock). It runs as root
 * only to write the textfile (the node exporter's directory belongs to
 * root); results survive a restart in a state directory.
 */
import { shellQuote } from "../lib/shell";
import { SCHEDULER_STATE_FUNCTIONS } from "./backup-scheduler";
import {
  REDIS_BACKUP_USER,
  renderRedisRestoreFetchScript,
  renderRedisRestoreInstallScript,
  renderRedisSnapshotExpireScript,
  renderRedisSnapshotScript,
  type RedisS3Target,
} from "./redis-backup";

export const REDIS_SNAPSHOT_TEXTFILE = "redis-snapshot.prom";

export interface RedisSnapshotSchedulerParams {
  /** The host's name, for the log (node_exporter's scrape target labels the metrics with it). */
  hostName: string;
  /** UTC hour from which the day's snapshot is taken. */
  hourUtc: number;
  /** The rendered scripts, as files in the container (renderRedisSnapshotScript with sizeFile, renderRedisSnapshotExpireScript). */
  snapshotScript: string;
  expireScript: string;
  /** The file the snapshot script writes the uploaded object's size to (its sizeFile). */
  sizeFile: string;
  /** With `fetch`: the fetch script (renderRedisRestoreFetchScript into `<stateDir>/restore`) and the install script copied beside it. */
  restore: { fetchScript: string; installScript: string; ownerUid: number; ownerGid: number };
  /** Where the textfile goes (a directory the node exporter reads). */
  textfileDir: string;
  /** Kept across restarts: the last results, and the snapshot's work and restore directories. */
  stateDir: string;
  /** One snapshot pass's bound (snapshot and upload); default 3600. */
  timeoutSeconds?: number;
  /** Seconds between two passes of the loop (default 60). */
  intervalSeconds?: number;
  /** Seconds before a failed snapshot is tried again (default 900). */
  retrySeconds?: number;
}

function fail(what: string): never {
  throw new Error(`renderRedisSnapshotSchedulerScript: ${what}`);
}

function intIn(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) fail(`${what} must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

function absPath(what: string, p: string): string {
  if (!/^\/[A-Za-z0-9._/-]*$/.test(p)) fail(`${what} ${JSON.stringify(p)} is not an absolute path`);
  return p;
}

export function renderRedisSnapshotSchedulerScript(p: RedisSnapshotSchedulerParams): string {
  const hour = intIn("hourUtc", p.hourUtc, 0, 23);
  const timeout = intIn("timeoutSeconds", p.timeoutSeconds ?? 3600, 10, 86_400);
  const interval = intIn("intervalSeconds", p.intervalSeconds ?? 60, 1, 3600);
  const retry = intIn("retrySeconds", p.retrySeconds ?? 900, 1, 86_400);
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(p.hostName)) fail(`hostName ${JSON.stringify(p.hostName)} is not a host name`);
  const q = (what: string, v: string) => shellQuote(absPath(what, v));
  const state = absPath("stateDir", p.stateDir);
  if (state.split("/").filter(Boolean).length < 2) fail(`stateDir ${JSON.stringify(state)} must be a directory of its own, at least two levels deep`);
  intIn("restore.ownerUid", p.restore.ownerUid, 0, 65_535);
  intIn("restore.ownerGid", p.restore.ownerGid, 0, 65_535);
  const metric = (name: string, help: string) => [`    echo "# HELP ${name} ${help}"`, `    echo "# TYPE ${name} gauge"`];
  return `#!/bin/bash
# Redis snapshot job for ${p.hostName}, rendered by the Synaxic deployment: do not edit by hand.
set -u
TEXTFILE_DIR=${q("textfileDir", p.textfileDir)}
TEXTFILE="$TEXTFILE_DIR/${REDIS_SNAPSHOT_TEXTFILE}"
STATE_DIR=${shellQuote(state)}
SNAPSHOT=${q("snapshotScript", p.snapshotScript)}
EXPIRE=${q("expireScript", p.expireScript)}
SIZE_FILE=${q("sizeFile", p.sizeFile)}
HOUR=${hour}
TIMEOUT=${timeout}
RETRY=${retry}
mkdir -p "$STATE_DIR/work"
${SCHEDULER_STATE_FUNCTIONS}
write_metrics() {
  local f="$TEXTFILE_DIR/.${REDIS_SNAPSHOT_TEXTFILE}.$$" v
  {
${[
  ...metric("synaxic_redis_snapshot_last_start_timestamp_seconds", "When the job last started a Redis snapshot."),
  '    v=$(recorded snapshot started); [ -n "$v" ] && echo "synaxic_redis_snapshot_last_start_timestamp_seconds $v"',
  ...metric("synaxic_redis_snapshot_last_success_timestamp_seconds", "When a Redis snapshot last reached the object storage."),
  '    v=$(recorded snapshot succeeded); [ -n "$v" ] && echo "synaxic_redis_snapshot_last_success_timestamp_seconds $v"',
  ...metric("synaxic_redis_snapshot_last_result_success", "1 when the last Redis snapshot succeeded, 0 when it failed."),
  '    v=$(recorded snapshot result); [ -n "$v" ] && echo "synaxic_redis_snapshot_last_result_success $([ "$v" = 0 ] && echo 1 || echo 0)"',
  ...metric("synaxic_redis_snapshot_last_duration_seconds", "How long the last Redis snapshot took (taken, checked, encrypted, uploaded), successful or not."),
  '    v=$(recorded snapshot duration); [ -n "$v" ] && echo "synaxic_redis_snapshot_last_duration_seconds $v"',
  ...metric("synaxic_redis_snapshot_last_size_bytes", "Size of the last successful snapshot as stored (encrypted)."),
  '    v=$(recorded snapshot size); [ -n "$v" ] && echo "synaxic_redis_snapshot_last_size_bytes $v"',
  ...metric("synaxic_redis_snapshot_expire_last_result_success", "1 when the last expiry of old snapshots succeeded, 0 when it failed."),
  '    v=$(recorded expire result); [ -n "$v" ] && echo "synaxic_redis_snapshot_expire_last_result_success $([ "$v" = 0 ] && echo 1 || echo 0)"',
  ...metric("synaxic_redis_snapshot_armed_timestamp_seconds", "Since when this host has been due to take Redis snapshots."),
  '    v=$(recorded job armed); [ -n "$v" ] && echo "synaxic_redis_snapshot_armed_timestamp_seconds $v"',
  ...metric("synaxic_redis_snapshot_heartbeat_timestamp_seconds", "When the Redis snapshot job last wrote this file."),
  '    echo "synaxic_redis_snapshot_heartbeat_timestamp_seconds $(date +%s)"',
].join("\n")}
  } > "$f" && chmod 0644 "$f" && mv -f "$f" "$TEXTFILE"
}

# One snapshot, then expiry; one at a time. Returns the snapshot's result.
take() {
  local started rc key
  exec 9> "$STATE_DIR/lock"
  if ! flock -n 9; then log "snapshot: another one is running"; exec 9>&-; return 1; fi
  started=$(date +%s)
  record snapshot started "$started"
  log "snapshot: starting"
  rm -f "$SIZE_FILE"
  # (9>&-: the lock stays with this shell.)
  key=$(timeout -k 10 "$TIMEOUT" bash "$SNAPSHOT" 9>&- 2> >(sed 's/^/snapshot: /' >&2))
  rc=$?
  record snapshot finished "$(date +%s)"
  record snapshot result "$rc"
  record snapshot duration "$(( $(date +%s) - started ))"
  if [ "$rc" -eq 0 ]; then
    record snapshot succeeded "$(date +%s)"
    record snapshot size "$(cat "$SIZE_FILE" 2>/dev/null || echo 0)"
    log "snapshot: $key uploaded ($(recorded snapshot size) bytes) in $(recorded snapshot duration)s"
    bash "$EXPIRE" 9>&- 2>&1 | sed 's/^/expire: /'
    record expire result "\${PIPESTATUS[0]}"
    [ "$(recorded expire result)" = 0 ] || log "expire: FAILED with exit code $(recorded expire result)"
  else
    [ "$rc" -eq 124 ] && log "snapshot: did not finish within $TIMEOUT s"
    log "snapshot: FAILED with exit code $rc"
  fi
  exec 9>&-
  write_metrics
  return "$rc"
}

# Due: no successful snapshot yet, or none since today's $HOUR:00 UTC once that has passed; not within $RETRY s of a failure.
due() {
  local now ok slot finished
  now=$(date +%s)
  ok=$(recorded snapshot succeeded)
  finished=$(recorded snapshot finished)
  if [ -n "$finished" ] && [ "$(recorded snapshot result)" != 0 ] && [ $(( now - finished )) -lt "$RETRY" ]; then return 1; fi
  [ -z "$ok" ] && return 0
  slot=$(date -u -d "$(date -u +%F) $(printf '%02d' "$HOUR"):00:00" +%s)
  [ "$now" -ge "$slot" ] && [ "$ok" -lt "$slot" ]
}

case "\${1:-}" in
  now)
    take
    exit $?
    ;;
  fetch)
    # A snapshot for a restore: downloaded, decrypted and checked into $STATE_DIR/restore, with the install script beside it.
    mkdir -p "$STATE_DIR/restore" && rm -f "$STATE_DIR/restore/dump.rdb" "$STATE_DIR/restore/install.sh"
    chown ${p.restore.ownerUid}:${p.restore.ownerGid} "$STATE_DIR/restore" && chmod 0700 "$STATE_DIR/restore"
    bash ${q("restore.fetchScript", p.restore.fetchScript)} "\${2:-}" || exit $?
    install -o ${p.restore.ownerUid} -g ${p.restore.ownerGid} -m 0500 ${q("restore.installScript", p.restore.installScript)} "$STATE_DIR/restore/install.sh"
    echo "fetched into $STATE_DIR/restore: dump.rdb and install.sh (docs/runbook.md, Redis)"
    exit 0
    ;;
  "") ;;
  *) echo "usage: synaxic-redis-backup [now | fetch [KEY]]" >&2; exit 2 ;;
esac

trap 'log "stopping"; rm -f "$TEXTFILE"; exit 0' TERM INT
# What a snapshot cut short by a stop left in the work directory.
rm -f "$STATE_DIR"/work/snapshot-*
[ -n "$(recorded job armed)" ] || record job armed "$(date +%s)"
log "Redis snapshots: one at once when none has succeeded, then daily from $(printf '%02d' "$HOUR"):00 UTC; failures retried after $RETRY s"
while true; do
  if due; then take; fi
  write_metrics
  sleep ${interval} &
  wait $!
done
`;
}

/** Where the job's files live in its container. */
export interface RedisSnapshotJobPaths {
  /** The loop (renderRedisSnapshotSchedulerScript), the container's entrypoint. */
  entrypoint: string;
  snapshot: string;
  expire: string;
  fetch: string;
  install: string;
  /** The CA that signed the Redis server's certificate (the fleet's). */
  caFile: string;
  /** The object storage's CA, when it is not a public one. */
  s3CaFile: string;
  /** The backup user's password. */
  passwordFile: string;
  /** The encryption passphrase: the first line of this file (openssl -pass file:). */
  cipherPassFile: string;
  /** The S3 key, as a curl config file (renderS3CurlCredentials). */
  s3CredentialsFile: string;
  /** The state directory (a volume): results, the work directory, a fetched snapshot. */
  state: string;
  /** The node exporter's textfile directory. */
  textfile: string;
}

export const REDIS_SNAPSHOT_PATHS: RedisSnapshotJobPaths = {
  entrypoint: "/usr/local/bin/synaxic-redis-backup",
  snapshot: "/usr/local/lib/synaxic-redis-backup/snapshot.sh",
  expire: "/usr/local/lib/synaxic-redis-backup/expire.sh",
  fetch: "/usr/local/lib/synaxic-redis-backup/fetch.sh",
  install: "/usr/local/lib/synaxic-redis-backup/install.sh",
  caFile: "/etc/synaxic/redis-backup/ca.crt",
  s3CaFile: "/etc/synaxic/redis-backup/s3-ca.crt",
  passwordFile: "/etc/synaxic/redis-backup/redis-password",
  cipherPassFile: "/etc/synaxic/redis-backup/cipher-pass",
  s3CredentialsFile: "/etc/synaxic/redis-backup/s3.curl",
  state: "/var/lib/synaxic-redis-backup",
  textfile: "/textfile",
};

/**
 * The series every master's job writes to: one for the fleet, so that after
 * a failover the promoted master's snapshots continue it, LATEST names the
 * newest whichever host took it, and retention spans them all.
 */
export const REDIS_SNAPSHOT_SERIES = "master";

/** The object storage as the job reaches it: the repository's endpoint, bucket and region. */
export interface RedisSnapshotRepository {
  endpoint: string;
  bucket: string;
  region: string;
  /** The repository's path (backupRepository.path, e.g. /synaxic): the snapshots go below it, in redis/. */
  path: string;
  /** Whether the endpoint's CA is given (then at paths.s3CaFile). */
  hasCaCertificate: boolean;
}

/** The snapshots' place in the bucket: `redis/` below the repository's path (beside pgBackRest's archive/ and backup/). */
export function redisSnapshotTarget(repository: RedisSnapshotRepository, paths: RedisSnapshotJobPaths = REDIS_SNAPSHOT_PATHS): RedisS3Target {
  const base = repository.path.replace(/^\/+|\/+$/g, "");
  return {
    endpoint: repository.endpoint,
    bucket: repository.bucket,
    region: repository.region,
    prefix: base ? `${base}/redis` : "redis",
    ...(repository.hasCaCertificate ? { caFile: paths.s3CaFile } : {}),
    credentialsFile: paths.s3CredentialsFile,
  };
}

export interface RedisSnapshotJobParams {
  hostName: string;
  /** The master as the job reaches it over TLS (loopback beside it). */
  redis: { host: string; port: number };
  repository: RedisSnapshotRepository;
  hourUtc: number;
  retention: number;
  /** The Redis server's data directory, where the install script puts a restored snapshot (in a one-off container with the server's volume). */
  redisDataDir: string;
  /** Owner of a fetched snapshot: the Redis server's user. */
  redisUid: number;
  redisGid: number;
  paths?: RedisSnapshotJobPaths;
  intervalSeconds?: number;
  retrySeconds?: number;
}

/** Every script of the job, by its path in the container: what components/RedisSnapshots.ts uploads. */
export function renderRedisSnapshotJobFiles(p: RedisSnapshotJobParams): Record<string, string> {
  const paths = p.paths ?? REDIS_SNAPSHOT_PATHS;
  const target = redisSnapshotTarget(p.repository, paths);
  const sizeFile = `${paths.state}/work/size`;
  return {
    [paths.entrypoint]: renderRedisSnapshotSchedulerScript({
      hostName: p.hostName,
      hourUtc: p.hourUtc,
      snapshotScript: paths.snapshot,
      expireScript: paths.expire,
      sizeFile,
      restore: { fetchScript: paths.fetch, installScript: paths.install, ownerUid: p.redisUid, ownerGid: p.redisGid },
      textfileDir: paths.textfile,
      stateDir: paths.state,
      ...(p.intervalSeconds !== undefined ? { intervalSeconds: p.intervalSeconds } : {}),
      ...(p.retrySeconds !== undefined ? { retrySeconds: p.retrySeconds } : {}),
    }),
    [paths.snapshot]: renderRedisSnapshotScript({
      name: REDIS_SNAPSHOT_SERIES,
      redis: { host: p.redis.host, port: p.redis.port, caFile: paths.caFile, user: REDIS_BACKUP_USER, passwordFile: paths.passwordFile },
      workDir: `${paths.state}/work`,
      encryptionPassFile: paths.cipherPassFile,
      s3: target,
      sizeFile,
    }),
    [paths.expire]: renderRedisSnapshotExpireScript({ name: REDIS_SNAPSHOT_SERIES, s3: target, retention: p.retention }),
    [paths.fetch]: renderRedisRestoreFetchScript({
      name: REDIS_SNAPSHOT_SERIES,
      dataDir: `${paths.state}/restore`,
      encryptionPassFile: paths.cipherPassFile,
      s3: target,
      owner: { uid: p.redisUid, gid: p.redisGid },
    }),
    [paths.install]: renderRedisRestoreInstallScript({ dumpFile: `${paths.state}/restore/dump.rdb`, dataDir: p.redisDataDir }),
  };
}
