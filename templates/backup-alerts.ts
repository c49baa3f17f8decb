/**
 * Alert rules for backups and WAL archiving, a rules file of its own beside
 * the fleet's (templates/prometheus.ts), loaded by the same Prometheus. They
 * read the backup scheduler's textfile metrics (templates/backup-scheduler.ts,
 * through node_exporter, which adds `host` from its scrape target) and the
 * PostgreSQL exporter's pg_stat_archiver query (templates/postgres-exporter.ts,
 * synaxic_archiver_*).
 *
 * Backups are taken by whichever host is the primary, so "the newest backup"
 * is the newest over the whole fleet (max without host).
 *
 * The Redis snapshot rules read the snapshot job's textfile
 * (templates/redis-backup-scheduler.ts), which only the host running the job
 * (the Redis master's) writes, and which the job removes when it stops: per
 * host, with no textfile no alert.
 */
import { stringify } from "yaml";

export interface BackupAlertThresholds {
  /** Hours since the newest successful backup (full or differential): one daily run missed, plus its own length. */
  backupMaxAgeHours: number;
  /** Bytes in a host's asynchronous archive queue (WAL not yet in the repository). */
  archiveQueueBytes: number;
  /** Days since the last successful verify. */
  verifyMaxAgeDays: number;
  /** Days since the last successful restore drill (weekly), or since drills became due on the host that runs them. */
  drillMaxAgeDays: number;
  /** Hours since the last Redis snapshot that reached the object storage (daily), or since the job became due. */
  redisSnapshotMaxAgeHours: number;
}

export const DEFAULT_BACKUP_ALERT_THRESHOLDS: BackupAlertThresholds = {
  backupMaxAgeHours: 26,
  archiveQueueBytes: 512 * 1024 * 1024,
  verifyMaxAgeDays: 8,
  drillMaxAgeDays: 8,
  redisSnapshotMaxAgeHours: 26,
};

export interface BackupAlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: "warning" | "critical" };
  annotations: { summary: string; description: string };
}

export function backupAlertRules(t: BackupAlertThresholds = DEFAULT_BACKUP_ALERT_THRESHOLDS): BackupAlertRule[] {
  for (const [k, v] of Object.entries(t)) if (!(typeof v === "number" && v > 0)) throw new Error(`backupAlertRules: ${k} must be a positive number, got ${v}`);
  const newest = 'max without (host) (synaxic_backup_last_success_timestamp_seconds{operation=~"backup-full|backup-diff"})';
  return [
    {
      alert: "SynaxicBackupTooOld",
      expr: `time() - ${newest} > ${t.backupMaxAgeHours * 3600}`,
      for: "10m",
      labels: { severity: "critical" },
      annotations: {
        summary: "The newest backup is {{ $value | humanizeDuration }} old",
        description: `No full or differential backup has succeeded for more than ${t.backupMaxAgeHours} hours: point-in-time recovery depends on ever older backups and ever more WAL. See the scheduler's log (docker logs synaxic-<primary>-backup).`,
      },
    },
    {
      alert: "SynaxicNoBackup",
      // Schedulers report (backups are on), but no backup ever succeeded.
      expr: `count(synaxic_backup_scheduler_heartbeat_timestamp_seconds) > 0 unless on() ${newest}`,
      for: "2h",
      labels: { severity: "critical" },
      annotations: {
        summary: "The fleet has never been backed up",
        description: "Backups are on, but none has succeeded yet: the scheduler that takes them (on the standby named by backupFrom, or the primary) starts a first full backup at once and retries every 15 minutes. Is that host up?",
      },
    },
    {
      alert: "SynaxicBackupFailed",
      // A failed drill has a rule of its own, with its reason.
      expr: 'synaxic_backup_last_result_success{operation!="drill"} == 0',
      for: "0m",
      labels: { severity: "warning" },
      annotations: {
        summary: "{{ $labels.operation }} failed on {{ $labels.host }}",
        description: "The last {{ $labels.operation }} run by the backup scheduler on {{ $labels.host }} failed; its log says why (docker logs synaxic-{{ $labels.host }}-backup).",
      },
    },
    {
      alert: "SynaxicBackupSchedulerDown",
      expr: "time() - synaxic_backup_scheduler_heartbeat_timestamp_seconds > 600",
      for: "5m",
      labels: { severity: "warning" },
      annotations: {
        summary: "The backup scheduler on {{ $labels.host }} stopped reporting",
        description: "Its textfile has not been written for more than 10 minutes: the scheduler container is stopped or stuck, and no backup will be taken on this host while it is primary.",
      },
    },
    {
      alert: "SynaxicWalArchivingFailing",
      expr: "synaxic_archiver_enabled == 1 and synaxic_archiver_last_failed_time > synaxic_archiver_last_archived_time",
      for: "10m",
      labels: { severity: "critical" },
      annotations: {
        summary: "WAL archiving fails on {{ $labels.host }}",
        description: "PostgreSQL's last attempt to archive WAL failed and none has succeeded since (pg_stat_archiver): the repository is unreachable or refuses the writes. WAL piles up locally until the archive queue limit drops it.",
      },
    },
    {
      alert: "SynaxicArchiveQueueLarge",
      expr: `synaxic_backup_archive_queue_bytes > ${t.archiveQueueBytes}`,
      for: "15m",
      labels: { severity: "warning" },
      annotations: {
        summary: "{{ $value | humanize1024 }}B of WAL waits to be archived on {{ $labels.host }}",
        description: `pgBackRest's asynchronous archive queue holds more than ${t.archiveQueueBytes} bytes: the repository is slow or unreachable. Past its limit pgBackRest drops the queued WAL, and point-in-time recovery has a gap until the next backup.`,
      },
    },
    {
      alert: "SynaxicBackupVerifyTooOld",
      expr: `time() - max without (host) (synaxic_backup_last_success_timestamp_seconds{operation="verify"}) > ${t.verifyMaxAgeDays * 86400}`,
      for: "1h",
      labels: { severity: "warning" },
      annotations: {
        summary: "The repository was last verified {{ $value | humanizeDuration }} ago",
        description: `pgBackRest verify has not succeeded for more than ${t.verifyMaxAgeDays} days.`,
      },
    },
    {
      alert: "SynaxicBackupDrillFailed",
      // Written while the last drill failed, with the step it failed at (templates/backup-scheduler.ts, DRILL_FAILURE_REASONS).
      expr: "synaxic_backup_drill_failure_info == 1",
      for: "0m",
      labels: { severity: "critical" },
      annotations: {
        summary: "The restore drill on {{ $labels.host }} failed ({{ $labels.reason }})",
        description:
          "The last restore drill could not prove that the newest backup restores: reason no-space (the scratch directory's disk is too small for the backup), info (the repository could not be read: cipher pass, keys, object storage), no-backup (the repository holds none), restore (pgBackRest could not restore it: a damaged backup or missing WAL), start (the restored server did not start or promote), query (it did not answer), timeout (backupDrill's timeoutMinutes), busy (another drill ran). The scheduler's log says more (docker logs synaxic-{{ $labels.host }}-backup); run it again with docker exec synaxic-{{ $labels.host }}-backup synaxic-backup-scheduler drill.",
      },
    },
    {
      alert: "SynaxicBackupDrillTooOld",
      // The newest successful drill of the fleet; before the first one, since when drills have been due (armed).
      expr: `time() - (max(synaxic_backup_last_success_timestamp_seconds{operation="drill"}) or max(synaxic_backup_drill_armed_timestamp_seconds)) > ${t.drillMaxAgeDays * 86400}`,
      for: "1h",
      labels: { severity: "warning" },
      annotations: {
        summary: `No restore drill has succeeded for more than ${t.drillMaxAgeDays} days`,
        description: `Restore drills are on (backupDrill), but none has succeeded for more than ${t.drillMaxAgeDays} days: nothing proves the backups restore. Is the scheduler of the host that takes the backups running, and is its drill failing (SynaxicBackupDrillFailed)?`,
      },
    },
    {
      alert: "SynaxicRedisSnapshotFailed",
      expr: "synaxic_redis_snapshot_last_result_success == 0",
      for: "0m",
      labels: { severity: "warning" },
      annotations: {
        summary: "The Redis snapshot on {{ $labels.host }} failed",
        description: "The last Redis snapshot could not be taken, checked, encrypted or uploaded (the object storage down or refusing the key, the backup user refused by Redis, a full disk); the job retries every 15 minutes. Its log says why (docker logs synaxic-{{ $labels.host }}-redis-backup); take one now with docker exec synaxic-{{ $labels.host }}-redis-backup synaxic-redis-backup now.",
      },
    },
    {
      alert: "SynaxicRedisSnapshotTooOld",
      // The newest snapshot this host's job took; before its first, since when it has been due (armed).
      expr: `time() - (synaxic_redis_snapshot_last_success_timestamp_seconds or synaxic_redis_snapshot_armed_timestamp_seconds) > ${t.redisSnapshotMaxAgeHours * 3600}`,
      for: "10m",
      labels: { severity: "warning" },
      annotations: {
        summary: `No Redis snapshot from {{ $labels.host }} for more than ${t.redisSnapshotMaxAgeHours} hours`,
        description: `No Redis snapshot has reached the object storage for more than ${t.redisSnapshotMaxAgeHours} hours: a restore would bring back older sessions and rate limits. See SynaxicRedisSnapshotFailed and the job's log (docker logs synaxic-{{ $labels.host }}-redis-backup).`,
      },
    },
    {
      alert: "SynaxicRedisSnapshotExpiryFailed",
      expr: "synaxic_redis_snapshot_expire_last_result_success == 0",
      for: "1h",
      labels: { severity: "warning" },
      annotations: {
        summary: "Old Redis snapshots could not be expired on {{ $labels.host }}",
        description: "The snapshots are taken, but the expiry after the last one failed to list or delete old ones: they pile up in the bucket until it works again (the access key may lack the right to list or delete). docker logs synaxic-{{ $labels.host }}-redis-backup says why.",
      },
    },
    {
      alert: "SynaxicRedisSnapshotJobDown",
      expr: "time() - synaxic_redis_snapshot_heartbeat_timestamp_seconds > 600",
      for: "5m",
      labels: { severity: "warning" },
      annotations: {
        summary: "The Redis snapshot job on {{ $labels.host }} stopped reporting",
        description: "Its textfile has not been written for more than 10 minutes: the job's container is stuck or was killed (a stopped job removes its textfile), and no Redis snapshot is taken meanwhile.",
      },
    },
  ];
}

export function renderBackupAlertRules(t?: BackupAlertThresholds): string {
  return `# Synaxic backup alert rules (rendered; edits are overwritten).\n${stringify({ groups: [{ name: "synaxic-backups", rules: backupAlertRules(t) }] }, { lineWidth: 0 })}`;
}
