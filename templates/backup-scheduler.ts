/**
 * The backup scheduler: a small container on every host, beside PostgreSQL
 * and from the same image (so the same pgBackRest), that
 * - acts only while its host's server is the fleet's primary (it asks the
 *   server, `pg_is_in_recovery()`), so after a failover the new primary's
 *   scheduler takes over without any change of configuration;
 * - takes a full backup at once when the repository has none for the
 *   current cluster (a new fleet, or a new stanza after a restore), so
 *   point-in-time recovery is possible from the first hour;
 * - then, at `hourUtc` every day: a full backup on `fullWeekday`, a
 *   differential on the other days, each followed by `expire` (retention),
 *   and `verify` on `verifyWeekday`;
 * - writes, every minute, a node_exporter textfile with the last start,
 *   success and result of each operation, the archive queue's size and its
 *   own heartbeat, which the backup alert rules (templates/backup-alerts.ts)
 *   read.
 *
 * It runs as root only to write the textfile (the node exporter's directory
 * belongs to root) and runs every pgBackRest command as postgres (gosu, from
 * the official image). Results survive a restart in a state directory.
 */
import { shellQuote, sh } from "../lib/shell";

export interface BackupSchedulerParams {
  /** argv of each operation, run as postgres (from templates/pgbackrest.ts). */
  argv: { full: string[]; diff: string[]; expire: string[]; verify: string[]; info: string[] };
  schedule: { fullWeekday: number; hourUtc: number; verifyWeekday: number };
  /** psql argv that prints `t` on a standby and `f` on a primary (run as postgres). */
  inRecoveryArgv: string[];
  /** Where the textfile goes (a directory the node exporter reads). */
  textfileDir: string;
  /** Directory kept across restarts for the last results. */
  stateDir: string;
  /** pgBackRest's asynchronous archive queue (spool-path), measured for the queue-size metric. */
  spoolDir: string;
  /** The host's name, for the log (node_exporter's scrape target labels the metrics with it). */
  hostName: string;
  /** Seconds between two passes of the loop (default 60). */
  intervalSeconds?: number;
}

export const BACKUP_OPERATIONS = ["backup-full", "backup-diff", "expire", "verify"] as const;
export const BACKUP_TEXTFILE = "pgbackrest.prom";

function intIn(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new Error(`renderBackupSchedulerScript: ${what} must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

function absDir(what: string, p: string): string {
  if (!/^\/[A-Za-z0-9._/-]*$/.test(p)) throw new Error(`renderBackupSchedulerScript: ${what} ${JSON.stringify(p)} is not an absolute path`);
  return p;
}

export function renderBackupSchedulerScript(p: BackupSchedulerParams): string {
  const fullDay = intIn("schedule.fullWeekday", p.schedule.fullWeekday, 0, 6);
  const verifyDay = intIn("schedule.verifyWeekday", p.schedule.verifyWeekday, 0, 6);
  const hour = intIn("schedule.hourUtc", p.schedule.hourUtc, 0, 23);
  const interval = intIn("intervalSeconds", p.intervalSeconds ?? 60, 1, 3600);
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(p.hostName)) throw new Error(`renderBackupSchedulerScript: hostName ${JSON.stringify(p.hostName)} is not a host name`);
  for (const [k, argv] of Object.entries(p.argv)) if (argv.length === 0) throw new Error(`renderBackupSchedulerScript: argv.${k} is empty`);
  const asPostgres = (argv: string[]) => sh(["gosu", "postgres", ...argv]);
  return `#!/bin/bash
# Backup scheduler for ${p.hostName}, rendered by the Synaxic deployment: do not edit by hand.
set -u
TEXTFILE_DIR=${shellQuote(absDir("textfileDir", p.textfileDir))}
STATE_DIR=${shellQuote(absDir("stateDir", p.stateDir))}
SPOOL_DIR=${shellQuote(absDir("spoolDir", p.spoolDir))}
HOST=${shellQuote(p.hostName)}
mkdir -p "$STATE_DIR"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

# record OPERATION KEY VALUE: the last start, end and result of an operation, kept across restarts.
record() { printf '%s\\n' "$3" > "$STATE_DIR/$1.$2.tmp" && mv -f "$STATE_DIR/$1.$2.tmp" "$STATE_DIR/$1.$2"; }
recorded() { cat "$STATE_DIR/$1.$2" 2>/dev/null || true; }

# run OPERATION: runs it as postgres, logs its output, records its outcome.
run() {
  local op="$1" started rc
  shift
  started=$(date +%s)
  record "$op" started "$started"
  log "$op: starting"
  "$@"
  rc=$?
  record "$op" finished "$(date +%s)"
  record "$op" result "$rc"
  if [ "$rc" -eq 0 ]; then
    record "$op" succeeded "$(date +%s)"
    record "$op" duration "$(( $(date +%s) - started ))"
    log "$op: done in $(( $(date +%s) - started ))s"
  else
    log "$op: FAILED with exit code $rc"
  fi
  write_metrics
  return "$rc"
}

# A failed first backup is retried every 15 minutes, not on every pass.
first_backup_due() {
  local finished
  finished=$(recorded backup-full finished)
  [ -z "$finished" ] || [ "$(recorded backup-full result)" = 0 ] || [ $(( $(date +%s) - finished )) -ge 900 ]
}

is_primary() { [ "$(${asPostgres(p.inRecoveryArgv)} 2>/dev/null)" = f ]; }

# No backup of the current cluster in the repository yet (pgBackRest's JSON: "backup":[]).
no_backup_yet() {
  local info
  info=$(${asPostgres(p.argv.info)} 2>/dev/null) || return 1
  case "$info" in *'"backup":[]'*) return 0 ;; *) return 1 ;; esac
}

write_metrics() {
  local f="$TEXTFILE_DIR/.${BACKUP_TEXTFILE}.$$" op v queue primary
  queue=$(du -sb "$SPOOL_DIR" 2>/dev/null | cut -f1)
  if is_primary; then primary=1; else primary=0; fi
  {
    echo "# HELP synaxic_backup_last_start_timestamp_seconds When the scheduler last started the operation."
    echo "# TYPE synaxic_backup_last_start_timestamp_seconds gauge"
    echo "# HELP synaxic_backup_last_success_timestamp_seconds When the operation last succeeded."
    echo "# TYPE synaxic_backup_last_success_timestamp_seconds gauge"
    echo "# HELP synaxic_backup_last_result_success 1 when the operation's last run succeeded, 0 when it failed."
    echo "# TYPE synaxic_backup_last_result_success gauge"
    echo "# HELP synaxic_backup_last_duration_seconds How long the operation's last successful run took."
    echo "# TYPE synaxic_backup_last_duration_seconds gauge"
    for op in ${BACKUP_OPERATIONS.join(" ")}; do
      v=$(recorded "$op" started); [ -n "$v" ] && echo "synaxic_backup_last_start_timestamp_seconds{operation=\\"$op\\"} $v"
      v=$(recorded "$op" succeeded); [ -n "$v" ] && echo "synaxic_backup_last_success_timestamp_seconds{operation=\\"$op\\"} $v"
      v=$(recorded "$op" result); [ -n "$v" ] && echo "synaxic_backup_last_result_success{operation=\\"$op\\"} $([ "$v" = 0 ] && echo 1 || echo 0)"
      v=$(recorded "$op" duration); [ -n "$v" ] && echo "synaxic_backup_last_duration_seconds{operation=\\"$op\\"} $v"
    done
    echo "# HELP synaxic_backup_archive_queue_bytes Bytes in pgBackRest's asynchronous archive queue on this host."
    echo "# TYPE synaxic_backup_archive_queue_bytes gauge"
    echo "synaxic_backup_archive_queue_bytes \${queue:-0}"
    echo "# HELP synaxic_backup_scheduler_primary 1 while this host's server is the primary (its scheduler takes the backups)."
    echo "# TYPE synaxic_backup_scheduler_primary gauge"
    echo "synaxic_backup_scheduler_primary $primary"
    echo "# HELP synaxic_backup_scheduler_heartbeat_timestamp_seconds When the scheduler last wrote this file."
    echo "# TYPE synaxic_backup_scheduler_heartbeat_timestamp_seconds gauge"
    echo "synaxic_backup_scheduler_heartbeat_timestamp_seconds $(date +%s)"
  } > "$f" && chmod 0644 "$f" && mv -f "$f" "$TEXTFILE_DIR/${BACKUP_TEXTFILE}"
}

trap 'log "stopping"; exit 0' TERM INT
log "scheduler: full backups on weekday ${fullDay}, differentials on the other days, at ${String(hour).padStart(2, "0")}:00 UTC; verify on weekday ${verifyDay}"
while true; do
  if is_primary; then
    slot=$(date -u +%Y%m%d%H)
    if no_backup_yet; then
      first_backup_due && run backup-full ${asPostgres(p.argv.full)} && run expire ${asPostgres(p.argv.expire)}
    elif [ "$(date -u +%H)" = ${shellQuote(String(hour).padStart(2, "0"))} ] && [ "$(recorded schedule slot)" != "$slot" ]; then
      record schedule slot "$slot"
      if [ "$(date -u +%w)" = ${fullDay} ]; then type=full; else type=diff; fi
      if [ "$type" = full ]; then
        run backup-full ${asPostgres(p.argv.full)}
      else
        run backup-diff ${asPostgres(p.argv.diff)}
      fi && run expire ${asPostgres(p.argv.expire)}
      if [ "$(date -u +%w)" = ${verifyDay} ]; then run verify ${asPostgres(p.argv.verify)}; fi
    fi
  fi
  write_metrics
  sleep ${interval} &
  wait $!
done
`;
}
