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
  /** argv of each operation, run as postgres (from templates/pgbackrest.ts), with this host's server as pg1. */
  argv: { full: string[]; diff: string[]; expire: string[]; verify: string[]; info: string[] };
  /**
   * When this host's scheduler takes the backups:
   * - whenPrimary: while its server is the primary (no standby is named for backups);
   * - always: it is the standby named for backups: while a standby, from it
   *   (`standbyArgv`: backup-standby, the primary reached over its TLS
   *   server), and while it is the primary (after a failover), from itself;
   * - never: another host is named for backups.
   */
  acts: "whenPrimary" | "always" | "never";
  /** With acts "always": the backups taken while this server is a standby. */
  standbyArgv?: { full: string[]; diff: string[] };
  /**
   * A file (renderFleetHostsFile) whose names this container must resolve,
   * put first in its /etc/hosts on every pass: the fleet's hosts (a standby
   * reaches the primary's pgBackRest TLS server by the DNS name its
   * certificate carries). A file, not part of the script, so that a replica
   * added or removed changes it without re-creating the container.
   */
  fleetHostsFile?: string;
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

/** The fleet's hosts as /etc/hosts lines (address, then name). */
export function renderFleetHostsFile(entries: { name: string; address: string }[]): string {
  for (const h of entries) {
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(h.name)) throw new Error(`renderFleetHostsFile: host name ${JSON.stringify(h.name)} is not a DNS name`);
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(h.address)) throw new Error(`renderFleetHostsFile: address ${JSON.stringify(h.address)} of ${h.name} is not an IPv4 address`);
  }
  return entries.map((h) => `${h.address} ${h.name}\n`).join("");
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
  if (!["whenPrimary", "always", "never"].includes(p.acts)) throw new Error(`renderBackupSchedulerScript: acts must be whenPrimary, always or never, got ${JSON.stringify(p.acts)}`);
  if ((p.acts === "always") !== (p.standbyArgv !== undefined)) throw new Error("renderBackupSchedulerScript: standbyArgv goes with acts \"always\" (the standby named for backups), and only with it");
  if (p.fleetHostsFile !== undefined) absDir("fleetHostsFile", p.fleetHostsFile);
  const asPostgres = (argv: string[]) => sh(["gosu", "postgres", ...argv]);
  return `#!/bin/bash
# Backup scheduler for ${p.hostName}, rendered by the Synaxic deployment: do not edit by hand.
set -u
TEXTFILE_DIR=${shellQuote(absDir("textfileDir", p.textfileDir))}
STATE_DIR=${shellQuote(absDir("stateDir", p.stateDir))}
SPOOL_DIR=${shellQuote(absDir("spoolDir", p.spoolDir))}
HOST=${shellQuote(p.hostName)}
ACTS=${shellQuote(p.acts)}
mkdir -p "$STATE_DIR"
${
  p.fleetHostsFile
    ? `# The fleet's names first in this container's own copy of /etc/hosts, refreshed on every pass.
FLEET_HOSTS=${shellQuote(p.fleetHostsFile)}
refresh_hosts() {
  local rest
  [ -r "$FLEET_HOSTS" ] || return 0
  rest=$(sed '/^# synaxic fleet$/,/^# end synaxic fleet$/d' /etc/hosts)
  { echo '# synaxic fleet'; cat "$FLEET_HOSTS"; echo '# end synaxic fleet'; printf '%s\\n' "$rest"; } > /tmp/hosts.synaxic && cat /tmp/hosts.synaxic > /etc/hosts && rm -f /tmp/hosts.synaxic
}
`
    : `refresh_hosts() { :; }
`
}
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

# primary, standby, or down (the server does not answer).
server_role() {
  case "$(${asPostgres(p.inRecoveryArgv)} 2>/dev/null)" in f) echo primary ;; t) echo standby ;; *) echo down ;; esac
}
# Whether this host takes the backups now, with its server in role $1.
acting() {
  case "$ACTS:$1" in whenPrimary:primary | always:primary | always:standby) return 0 ;; *) return 1 ;; esac
}
# backup TYPE ROLE: a full or differential backup, from this server as a primary or as a standby.
backup() {
  case "$1:$2" in
    full:primary) run backup-full ${asPostgres(p.argv.full)} ;;
    diff:primary) run backup-diff ${asPostgres(p.argv.diff)} ;;${
      p.standbyArgv
        ? `
    full:standby) run backup-full ${asPostgres(p.standbyArgv.full)} ;;
    diff:standby) run backup-diff ${asPostgres(p.standbyArgv.diff)} ;;`
        : ""
    }
    *) log "no $1 backup from a $2"; return 1 ;;
  esac
}

# No backup of the current cluster in the repository yet (pgBackRest's JSON: "backup":[]).
no_backup_yet() {
  local info
  info=$(${asPostgres(p.argv.info)} 2>/dev/null) || return 1
  case "$info" in *'"backup":[]'*) return 0 ;; *) return 1 ;; esac
}

write_metrics() {
  local f="$TEXTFILE_DIR/.${BACKUP_TEXTFILE}.$$" op v queue active
  queue=$(du -sb "$SPOOL_DIR" 2>/dev/null | cut -f1)
  if acting "$(server_role)"; then active=1; else active=0; fi
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
    echo "# HELP synaxic_backup_scheduler_active 1 while this host's scheduler takes the fleet's backups."
    echo "# TYPE synaxic_backup_scheduler_active gauge"
    echo "synaxic_backup_scheduler_active $active"
    echo "# HELP synaxic_backup_scheduler_heartbeat_timestamp_seconds When the scheduler last wrote this file."
    echo "# TYPE synaxic_backup_scheduler_heartbeat_timestamp_seconds gauge"
    echo "synaxic_backup_scheduler_heartbeat_timestamp_seconds $(date +%s)"
  } > "$f" && chmod 0644 "$f" && mv -f "$f" "$TEXTFILE_DIR/${BACKUP_TEXTFILE}"
}

trap 'log "stopping"; exit 0' TERM INT
log "scheduler ($ACTS): full backups on weekday ${fullDay}, differentials on the other days, at ${String(hour).padStart(2, "0")}:00 UTC; verify on weekday ${verifyDay}"
while true; do
  refresh_hosts
  role=$(server_role)
  if acting "$role"; then
    slot=$(date -u +%Y%m%d%H)
    if no_backup_yet; then
      first_backup_due && backup full "$role" && run expire ${asPostgres(p.argv.expire)}
    elif [ "$(date -u +%H)" = ${shellQuote(String(hour).padStart(2, "0"))} ] && [ "$(recorded schedule slot)" != "$slot" ]; then
      record schedule slot "$slot"
      if [ "$(date -u +%w)" = ${fullDay} ]; then type=full; else type=diff; fi
      backup "$type" "$role" && run expire ${asPostgres(p.argv.expire)}
      if [ "$(date -u +%w)" = ${verifyDay} ]; then run verify ${asPostgres(p.argv.verify)}; fi
    fi
  fi
  write_metrics
  sleep ${interval} &
  wait $!
done
`;
}
