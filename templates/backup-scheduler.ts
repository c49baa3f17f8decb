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
 * - with drills on, once a week (BackupDrillParams): restores the newest
 *   backup into a scratch directory, starts a throwaway PostgreSQL on it
 *   (Unix socket in a private directory, no TCP, no archiving, no
 *   replication), checks that it is promoted and answers a query, and
 *   removes it again, whatever happened;
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
  /** Restore drills; absent: none. */
  drill?: BackupDrillParams;
}

/**
 * A restore drill: proof that the newest backup restores and its server
 * answers. Run on schedule by the host that takes the backups, or on demand
 * (`synaxic-backup-scheduler drill`, inside the scheduler's container).
 */
export interface BackupDrillParams {
  /** Weekday (0 = Sunday) and UTC hour from which the week's drill runs (once that day); null: no scheduled drills. */
  schedule: { weekday: number; hourUtc: number } | null;
  /** The whole drill's bound, restore included; past it the drill fails as "timeout" and is cleaned up. */
  timeoutSeconds: number;
  /** The drill's own directory, created and removed by each drill: data/ (the restore), socket/, and the server's files. */
  scratchDir: string;
  /** pgBackRest restore of the newest backup into `<scratchDir>/data` with --archive-mode=off (restoreArgv in templates/pgbackrest.ts). */
  restoreArgv: string[];
  /** restore_command of the throwaway server (restoreCommand in templates/pgbackrest.ts, with the scratch data directory). */
  restoreCommand: string;
  /** The database the proof query runs in (the fleet's database). */
  database: string;
  /** Free space the drill needs beyond the backup's database size plus a tenth, in MiB (default 256): room for WAL and the server's files. */
  marginMiB?: number;
}

/**
 * The drill's schedule and bound by default (the backupDrill key): Saturday from 05:00 UTC, the day before the
 * weekly full backup, so it restores a full plus a differential; at most two hours.
 */
export const BACKUP_DRILL_DEFAULTS = { weekday: 6, hourUtc: 5, timeoutMinutes: 120 };

/** Why a drill failed, the reason label of synaxic_backup_drill_failure_info. */
export const DRILL_FAILURE_REASONS = ["busy", "info", "no-backup", "no-space", "restore", "start", "query", "timeout"] as const;

/** The throwaway server's Unix socket port (its socket file name; there is no TCP listener). */
export const DRILL_PORT = 5432;

/**
 * The throwaway server's command line. Every setting that keeps it away from
 * the fleet is given here, with -c: PostgreSQL's documentation (19.1.4,
 * "Parameter Interaction via the Shell") says settings given on the command
 * line override postgresql.conf and ALTER SYSTEM (postgresql.auto.conf),
 * which is where pgBackRest's restore writes its recovery settings and
 * archive_mode=off (src/command/restore/restore.c, restoreRecoveryWriteAutoConf,
 * release/2.45), and where the restored cluster keeps whatever ALTER SYSTEM set
 * on the fleet. config_file points at an empty file of the drill's own, so
 * nothing of the data directory's postgresql.conf applies either.
 */
export function drillServerArgv(scratchDir: string, restoreCommand: string): string[] {
  const d = absDir("drill.scratchDir", scratchDir);
  const settings: [string, string][] = [
    ["config_file", `${d}/postgresql.conf`],
    ["hba_file", `${d}/pg_hba.conf`],
    ["ident_file", `${d}/pg_ident.conf`],
    // No TCP at all; the socket in a directory only postgres (and root) can enter.
    ["listen_addresses", ""],
    ["port", String(DRILL_PORT)],
    ["unix_socket_directories", `${d}/socket`],
    ["unix_socket_permissions", "0700"],
    // Never archives into the real repository (also written by --archive-mode=off) and never replicates.
    ["archive_mode", "off"],
    ["archive_command", ""],
    ["restore_command", restoreCommand],
    ["primary_conninfo", ""],
    ["primary_slot_name", ""],
    ["max_wal_senders", "0"],
    ["max_replication_slots", "0"],
    ["synchronous_standby_names", ""],
    // No connections during recovery: PostgreSQL then skips its check that max_connections and its kin are at least the
    // primary's (CheckRequiredParameterValues, src/backend/access/transam/xlog.c: only with hot_standby), and
    // recovery_target_action must be promote (PostgreSQL's documentation of recovery_target_action: "If hot_standby is
    // not enabled, a setting of pause will act the same as shutdown").
    ["hot_standby", "off"],
    ["recovery_target_action", "promote"],
    // Small: it fits in the scheduler container's memory limit beside pgBackRest.
    ["shared_buffers", "16MB"],
    ["max_connections", "10"],
    ["max_worker_processes", "4"],
    ["max_parallel_workers_per_gather", "0"],
    ["max_wal_size", "64MB"],
    ["shared_preload_libraries", ""],
    ["autovacuum", "off"],
    ["jit", "off"],
    ["ssl", "off"],
    ["logging_collector", "off"],
    // A scratch copy that is deleted afterwards: no need to make its writes durable.
    ["fsync", "off"],
    ["cluster_name", "synaxic-drill"],
  ];
  return ["postgres", "-D", `${d}/data`, ...settings.flatMap(([k, v]) => ["-c", `${k}=${v}`])];
}

/** The fleet's hosts as /etc/hosts lines (address, then name). */
export function renderFleetHostsFile(entries: { name: string; address: string }[]): string {
  for (const h of entries) {
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(h.name)) throw new Error(`renderFleetHostsFile: host name ${JSON.stringify(h.name)} is not a DNS name`);
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(h.address)) throw new Error(`renderFleetHostsFile: address ${JSON.stringify(h.address)} of ${h.name} is not an IPv4 address`);
  }
  return entries.map((h) => `${h.address} ${h.name}\n`).join("");
}

/**
 * The shell functions both schedulers (this one and the Redis snapshot job,
 * templates/redis-backup-scheduler.ts) keep their state with: a timestamped
 * log line, and an operation's last start, end and result in $STATE_DIR.
 */
export const SCHEDULER_STATE_FUNCTIONS = `log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

# record OPERATION KEY VALUE: the last start, end and result of an operation, kept across restarts.
record() { printf '%s\\n' "$3" > "$STATE_DIR/$1.$2.tmp" && mv -f "$STATE_DIR/$1.$2.tmp" "$STATE_DIR/$1.$2"; }
recorded() { cat "$STATE_DIR/$1.$2" 2>/dev/null || true; }
`;

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
  const drill = p.drill ? checkDrill(p.drill) : undefined;
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
${SCHEDULER_STATE_FUNCTIONS}
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
    for op in ${[...BACKUP_OPERATIONS, ...(drill?.schedule ? ["drill"] : [])].join(" ")}; do
      v=$(recorded "$op" started); [ -n "$v" ] && echo "synaxic_backup_last_start_timestamp_seconds{operation=\\"$op\\"} $v"
      v=$(recorded "$op" succeeded); [ -n "$v" ] && echo "synaxic_backup_last_success_timestamp_seconds{operation=\\"$op\\"} $v"
      v=$(recorded "$op" result); [ -n "$v" ] && echo "synaxic_backup_last_result_success{operation=\\"$op\\"} $([ "$v" = 0 ] && echo 1 || echo 0)"
      v=$(recorded "$op" duration); [ -n "$v" ] && echo "synaxic_backup_last_duration_seconds{operation=\\"$op\\"} $v"
    done
${drill?.schedule ? renderDrillMetrics() : ""}    echo "# HELP synaxic_backup_archive_queue_bytes Bytes in pgBackRest's asynchronous archive queue on this host."
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

${drill ? `${renderDrillFunctions(drill, asPostgres, p.argv.info)}
trap 'log "stopping"; drill_interrupted; exit 0' TERM INT` : `trap 'log "stopping"; exit 0' TERM INT`}
${
  drill
    ? `# On demand: \`synaxic-backup-scheduler drill\` runs one drill now, reports it in the textfile, and exits with its result.
if [ "\${1:-}" = drill ]; then
  refresh_hosts
  run drill drill_run
  exit $?
fi
drill_leftovers
${
  drill.schedule
    ? ""
    : `# Drills off: forget when they were due and last succeeded, so that turning them on again counts from then
# (SynaxicBackupDrillTooOld), not from a drill before they were turned off.
rm -f "$STATE_DIR/drill.armed" "$STATE_DIR/drill.succeeded"
`
}`
    : ""
}log "scheduler ($ACTS): full backups on weekday ${fullDay}, differentials on the other days, at ${String(hour).padStart(2, "0")}:00 UTC; verify on weekday ${verifyDay}${
    drill?.schedule ? `; restore drill on weekday ${drill.schedule.weekday} from ${String(drill.schedule.hourUtc).padStart(2, "0")}:00 UTC` : drill ? "; no scheduled restore drills" : ""
  }"
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
    fi${
      drill?.schedule
        ? `
    # The week's restore drill: on its weekday, from its hour on (a backup running past the hour only delays it), once that day.
    [ -n "$(recorded drill armed)" ] || record drill armed "$(date +%s)"
    if [ "$(date -u +%w)" = ${drill.schedule.weekday} ] && [ "$(date -u +%H)" -ge ${drill.schedule.hourUtc} ] && [ "$(recorded drill day)" != "$(date -u +%Y%m%d)" ] && ! no_backup_yet; then
      record drill day "$(date -u +%Y%m%d)"
      run drill drill_run
    fi`
        : ""
    }
  fi
  write_metrics
  sleep ${interval} &
  wait $!
done
`;
}

function checkDrill(d: BackupDrillParams): Required<BackupDrillParams> {
  const scratch = absDir("drill.scratchDir", d.scratchDir);
  if (scratch.split("/").filter(Boolean).length < 2) throw new Error(`renderBackupSchedulerScript: drill.scratchDir ${JSON.stringify(scratch)} must be a directory of its own, at least two levels deep (each drill removes it)`);
  if (d.schedule !== null) {
    intIn("drill.schedule.weekday", d.schedule.weekday, 0, 6);
    intIn("drill.schedule.hourUtc", d.schedule.hourUtc, 0, 23);
  }
  intIn("drill.timeoutSeconds", d.timeoutSeconds, 60, 7 * 86400);
  const marginMiB = intIn("drill.marginMiB", d.marginMiB ?? 256, 0, 1024 * 1024);
  // The restore must go into the scratch directory and leave archiving off: refuse anything else.
  if (!d.restoreArgv.includes(`--pg1-path=${scratch}/data`)) throw new Error(`renderBackupSchedulerScript: drill.restoreArgv must restore into ${scratch}/data (--pg1-path)`);
  if (!d.restoreArgv.includes("--archive-mode=off")) throw new Error("renderBackupSchedulerScript: drill.restoreArgv must have --archive-mode=off: a drill never archives into the repository");
  if (d.restoreArgv.some((a) => a === "--delta" || a === "--force")) throw new Error("renderBackupSchedulerScript: drill.restoreArgv must not have --delta or --force: a drill restores into an empty directory");
  if (d.restoreArgv.at(-1) !== "restore") throw new Error("renderBackupSchedulerScript: drill.restoreArgv must be a pgBackRest restore");
  if (!d.restoreCommand.includes(`--pg1-path=${scratch}/data`) || d.restoreCommand.includes("'")) {
    throw new Error(`renderBackupSchedulerScript: drill.restoreCommand must fetch WAL for ${scratch}/data (--pg1-path), without single quotes`);
  }
  if (!/^[A-Za-z_][A-Za-z0-9_$-]{0,62}$/.test(d.database)) throw new Error(`renderBackupSchedulerScript: drill.database ${JSON.stringify(d.database)} is not a database name`);
  return { ...d, marginMiB };
}

/** The drill's series in the textfile, written while scheduled drills are on. */
function renderDrillMetrics(): string {
  return `    v=$(recorded drill label)
    if [ -n "$v" ]; then
      echo "# HELP synaxic_backup_drill_backup_timestamp_seconds When the backup the last restore drill restored finished (label: its pgBackRest label)."
      echo "# TYPE synaxic_backup_drill_backup_timestamp_seconds gauge"
      echo "synaxic_backup_drill_backup_timestamp_seconds{label=\\"$v\\"} $(recorded drill backup_stop)"
    fi
    v=$(recorded drill database_bytes)
    if [ -n "$v" ] && [ "$(recorded drill result)" = 0 ]; then
      echo "# HELP synaxic_backup_drill_database_bytes Size of the fleet's database in the last successful restore drill."
      echo "# TYPE synaxic_backup_drill_database_bytes gauge"
      echo "synaxic_backup_drill_database_bytes $v"
    fi
    v=$(recorded drill result)
    if [ -n "$v" ] && [ "$v" != 0 ]; then
      echo "# HELP synaxic_backup_drill_failure_info Present while the last restore drill failed; reason says at which step."
      echo "# TYPE synaxic_backup_drill_failure_info gauge"
      echo "synaxic_backup_drill_failure_info{reason=\\"$(recorded drill reason)\\"} 1"
    fi
    if [ "$active" = 1 ]; then
      v=$(recorded drill armed)
      if [ -n "$v" ]; then
        echo "# HELP synaxic_backup_drill_armed_timestamp_seconds Since when this host's scheduler has been due to run the weekly restore drill."
        echo "# TYPE synaxic_backup_drill_armed_timestamp_seconds gauge"
        echo "synaxic_backup_drill_armed_timestamp_seconds $v"
      fi
    fi
`;
}

/**
 * The drill's shell functions. drill_run restores the newest backup into the
 * scratch directory, starts the throwaway server, waits for its promotion,
 * runs the proof query and always cleans up; on failure it records the step
 * (DRILL_FAILURE_REASONS) and logs why.
 */
function renderDrillFunctions(d: Required<BackupDrillParams>, asPostgres: (argv: string[]) => string, infoArgv: string[]): string {
  const dir = d.scratchDir;
  const psql = (db: string, sql: string) => asPostgres(["psql", "-X", "-At", "-h", `${dir}/socket`, "-p", String(DRILL_PORT), "-d", db, "-c", sql]);
  const proof =
    "SELECT pg_catalog.pg_is_in_recovery(), (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'), pg_catalog.pg_database_size(pg_catalog.current_database())";
  return `# --- Restore drill -----------------------------------------------------------
DRILL_DIR=${shellQuote(dir)}
DRILL_TIMEOUT=${d.timeoutSeconds}
DRILL_MARGIN_MIB=${d.marginMiB}
DRILL_PID=
DRILL_CHILD=
DRILL_RUNNING=0
DRILL_REASON=
DRILL_DEADLINE=0
DRILL_BEAT=0

# Seconds left of the drill's bound.
drill_left() { echo $(( DRILL_DEADLINE - $(date +%s) )); }
# The textfile's heartbeat goes on during a long drill (SynaxicBackupSchedulerDown watches it): once a minute.
drill_heartbeat() {
  if [ $(( $(date +%s) - DRILL_BEAT )) -ge 60 ]; then DRILL_BEAT=$(date +%s); write_metrics; fi
}
# drill_bounded COMMAND...: runs it within what is left of the bound (exit code 124 past it), in the background so that
# a stop signal is handled at once, beating the heartbeat meanwhile.
drill_bounded() {
  local left rc
  left=$(drill_left)
  [ "$left" -gt 0 ] || return 124
  # (8>&-: the drill's lock stays with this shell, never with what it starts.)
  timeout -k 10 "$left" "$@" 8>&- &
  DRILL_CHILD=$!
  while kill -0 "$DRILL_CHILD" 2>/dev/null; do
    sleep 1 &
    wait $!
    drill_heartbeat
  done
  wait "$DRILL_CHILD"
  rc=$?
  DRILL_CHILD=
  return "$rc"
}
drill_fail() { DRILL_REASON="$1"; shift; log "drill: FAILED ($DRILL_REASON): $*"; }

# Stops the throwaway server and removes the scratch directory: after every drill, whatever happened.
drill_cleanup() {
  local pid n
  [ -n "$DRILL_CHILD" ] && kill -TERM "$DRILL_CHILD" 2>/dev/null && wait "$DRILL_CHILD" 2>/dev/null
  DRILL_CHILD=
  pid="$DRILL_PID"
  # A server left by a drill this scheduler did not start (it was stopped mid-drill): its postmaster.pid names it, and
  # its command line must name the scratch directory before it is signalled.
  if [ -z "$pid" ] && [ -r "$DRILL_DIR/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$DRILL_DIR/data/postmaster.pid" 2>/dev/null)
    case "$(tr '\\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in *"$DRILL_DIR/data"*) ;; *) pid= ;; esac
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL: the data is thrown away anyway.
    kill -INT "$pid" 2>/dev/null
    n=0; while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 30 ]; do sleep 1; n=$((n + 1)); done
    kill -0 "$pid" 2>/dev/null && kill -QUIT "$pid" 2>/dev/null && sleep 5
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  DRILL_PID=
  rm -rf "$DRILL_DIR"
}
# A stop signal during a drill: clean up before the scheduler exits.
drill_interrupted() { [ "$DRILL_RUNNING" = 1 ] && drill_cleanup; }
# At start: what a drill interrupted by a stopped container left behind.
drill_leftovers() {
  exec 8> "$STATE_DIR/drill.lock"
  if flock -n 8 && [ -e "$DRILL_DIR" ]; then log "drill: removing the scratch directory a stopped drill left"; drill_cleanup; fi
  exec 8>&-
}

# The steps; on failure DRILL_REASON says which.
drill_steps() {
  local info status label size stop avail need out rc
  # gosu keeps the working directory, and psql and pg_ctl as postgres must be
  # able to enter it (psql prints "could not change directory" otherwise).
  cd /
  # The newest backup, from pgBackRest's JSON: jsonWriteVar (src/common/type/json.c, release/2.45 as today) writes an
  # object's keys sorted, so a backup's info.size (info's last key) is followed by its label, and its timestamp by its
  # type; the backup list is oldest first.
  info=$(drill_bounded ${asPostgres(infoArgv)} 2>&1) || { drill_fail info "pgbackrest info: $(printf '%s' "$info" | tail -n 3)"; return 1; }
  label=$(printf '%s' "$info" | grep -o '"label":"[^"]*"' | tail -n 1 | cut -d '"' -f 4)
  size=$(printf '%s' "$info" | grep -o '"size":[0-9]*},"label"' | tail -n 1 | tr -dc 0-9)
  stop=$(printf '%s' "$info" | grep -o '"stop":[0-9]*},"type"' | tail -n 1 | tr -dc 0-9)
  # The stanza's status: 0 ok, 2 no valid backup; any other (a wrong cipher pass, an unreachable store) fails the drill here.
  status=$(printf '%s' "$info" | grep -o '"status":{"code":[0-9]*' | tail -n 1 | tr -dc 0-9)
  case "$status" in
    0) ;;
    2) drill_fail no-backup "the repository holds no backup to restore"; return 1 ;;
    *) drill_fail info "pgbackrest info reports status \${status:-unknown}: $(printf '%s' "$info" | grep -o '"message":"[^"]*"' | cut -d '"' -f 4 | paste -s -d ';') (pgbackrest info in this container says more: a wrong cipher pass or keys, or the object storage unreachable)"; return 1 ;;
  esac
  if [ -z "$label" ]; then drill_fail no-backup "the repository holds no backup to restore"; return 1; fi
  if [ -z "$size" ]; then drill_fail info "pgbackrest info names backup $label but not its size"; return 1; fi
  record drill label "$label"
  record drill backup_stop "\${stop:-0}"
  # Disk: the database's size plus a tenth, plus the margin, free where the scratch directory goes.
  mkdir -p "$(dirname "$DRILL_DIR")"
  avail=$(df -Pk "$(dirname "$DRILL_DIR")" | awk 'NR == 2 { print $4 }')
  need=$(( size / 1024 * 11 / 10 + DRILL_MARGIN_MIB * 1024 ))
  if [ -z "$avail" ] || [ "$avail" -lt "$need" ]; then
    drill_fail no-space "restoring backup $label needs $(( need / 1024 )) MiB free next to $DRILL_DIR, there are $(( \${avail:-0} / 1024 )) MiB"
    return 1
  fi
  log "drill: restoring backup $label ($(( size / 1048576 )) MiB) into $DRILL_DIR"
  mkdir -m 0700 "$DRILL_DIR" "$DRILL_DIR/data" "$DRILL_DIR/socket" || { drill_fail restore "cannot create $DRILL_DIR"; return 1; }
  : > "$DRILL_DIR/postgresql.conf"
  : > "$DRILL_DIR/pg_ident.conf"
  # Only the socket, in a directory only postgres may enter: no password needed.
  printf 'local all all trust\\n' > "$DRILL_DIR/pg_hba.conf"
  chown -R postgres:postgres "$DRILL_DIR"
  out=$(drill_bounded ${asPostgres(d.restoreArgv)} 2>&1)
  rc=$?
  printf '%s\\n' "$out" | grep -E 'ERROR|WARN|restore command end' | sed 's/^/drill: /'
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && { drill_fail timeout "the restore did not finish within the bound ($DRILL_TIMEOUT s)"; return 1; }
    drill_fail restore "pgbackrest restore exited with $rc"
    return 1
  fi
  # pgBackRest wrote archive_mode = 'off' into postgresql.auto.conf (--archive-mode=off); the server's command line says so too.
  grep -q "^archive_mode = 'off'" "$DRILL_DIR/data/postgresql.auto.conf" || { drill_fail restore "postgresql.auto.conf does not turn archiving off"; return 1; }
  gosu postgres ${sh(drillServerArgv(dir, d.restoreCommand))} > "$DRILL_DIR/server.log" 2>&1 8>&- &
  DRILL_PID=$!
  # Recovery to the end of the backup, then promotion: the server accepts connections once it is a primary.
  until [ "$(PGCONNECT_TIMEOUT=5 ${psql("postgres", "SELECT pg_catalog.pg_is_in_recovery()")} 2>/dev/null)" = f ]; do
    if ! kill -0 "$DRILL_PID" 2>/dev/null; then
      drill_fail start "the restored server stopped: $(tail -n 5 "$DRILL_DIR/server.log" | tr '\\n' ' ')"
      return 1
    fi
    if [ "$(drill_left)" -le 0 ]; then drill_fail timeout "the restored server did not accept connections within the bound ($DRILL_TIMEOUT s)"; return 1; fi
    drill_heartbeat
    sleep 2 &
    wait $!
  done
  out=$(PGCONNECT_TIMEOUT=5 drill_bounded ${psql(d.database, proof)} 2>&1)
  case "$out" in
    f\\|*\\|*) ;;
    *) drill_fail query "the proof query in ${d.database} answered: $(printf '%s' "$out" | head -n 3 | tr '\\n' ' ')"; return 1 ;;
  esac
  record drill database_bytes "\${out##*|}"
  log "drill: backup $label restored and promoted; database ${d.database}: $(printf '%s' "$out" | cut -d '|' -f 2) tables, $(( \${out##*|} / 1048576 )) MiB"
}

# drill_run: one drill, within its bound, one at a time (a lock), cleaned up afterwards.
drill_run() {
  local rc
  exec 8> "$STATE_DIR/drill.lock"
  if ! flock -n 8; then drill_fail busy "another drill is running"; record drill reason busy; exec 8>&-; return 1; fi
  DRILL_RUNNING=1
  DRILL_REASON=
  DRILL_DEADLINE=$(( $(date +%s) + DRILL_TIMEOUT ))
  DRILL_BEAT=$(date +%s)
  drill_cleanup
  drill_steps
  rc=$?
  drill_cleanup
  DRILL_RUNNING=0
  exec 8>&-
  [ -e "$DRILL_DIR" ] && log "drill: the scratch directory $DRILL_DIR could not be removed"
  record drill reason "\${DRILL_REASON:-none}"
  return "$rc"
}
`;
}
