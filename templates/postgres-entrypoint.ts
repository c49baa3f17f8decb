/**
 * Entrypoint scripts for the PostgreSQL containers. They run as root in the
 * container (official postgres:15 image: bash, gosu, binaries on PATH),
 * prepare and guard the data directory, then exec PostgreSQL as the
 * postgres user.
 *
 * Secrets never reach a command line or the environment: libpq reads the
 * replication and rewind passwords from a passfile (0600, owned by postgres).
 */
import { sh, shellQuote } from "../lib/shell";
import { replicaPrimaryConninfo } from "./postgres-conf";
import {
  renderConninfo,
  templateError,
  validateConnectHost,
  validateIdentifier,
  validateNonNegativeInt,
  validatePath,
  validatePort,
  validatePositiveInt,
  validateReplicaName,
  validateSlotName,
} from "./postgres-quote";

export interface EntrypointCommon {
  /** PGDATA (e.g. /var/lib/postgresql/data). */
  dataDir: string;
  /** postgresql.conf (e.g. /etc/synaxic/postgresql.conf). */
  configFile: string;
  /** OS user PostgreSQL runs as (default postgres, uid 999 in the image). */
  osUser?: string;
  /**
   * Command prefix that runs the rest of its argv as osUser, replacing
   * itself (default ["gosu", "postgres"] as in the official image).
   */
  asPostgres?: string[];
  /** The server command (default ["postgres", "-c", "config_file=<configFile>"]). */
  postgresArgv?: string[];
  /** Directory prepended to PATH for the PostgreSQL binaries (the image already has them on PATH). */
  binDir?: string;
}

export type ReplicaMode = "replica" | "promoted" | "rejoin";

export interface ReplicaEntrypointParams extends EntrypointCommon {
  /**
   * replica: follow the primary (clone it when the data directory is empty).
   * promoted: this replica was promoted; start its data as is, never clone.
   * rejoin: an old primary coming back as a replica; pg_rewind it onto the
   * primary's timeline (clone when empty).
   */
  mode: ReplicaMode;
  /** The server to follow (the primary, or the promoted replica for rejoin). */
  primary: { host: string; port?: number };
  replicationUser: string;
  /** Role pg_rewind connects with, to rewindDatabase (default postgres). */
  rewindUser: string;
  rewindDatabase?: string;
  /** This replica's slot on the primary. */
  slotName: string;
  /** This replica's name (application_name). */
  applicationName: string;
  /** .pgpass with the replication and rewind roles' passwords (0600, owned by osUser). */
  passfile: string;
  /** CA certificate that signed the primary's certificate. */
  caFile: string;
  /** Seconds libpq waits for a connection (default 10). */
  connectTimeoutSeconds?: number;
}

/**
 * What a one-shot bootstrap permit names: the cluster it lets the primary
 * entrypoint create, in which data directory, for which of the stack's
 * bootstrap generations. A permit that names anything else (another server,
 * an earlier generation) lets nothing happen.
 */
export interface BootstrapPermitParams {
  /** The server whose cluster it is (its host name, e.g. main). */
  cluster: string;
  /** The stack's bootstrapGeneration: raising it is how an operator asks for a new, empty cluster. */
  generation: number;
  /** PGDATA as the entrypoint sees it. */
  dataDir: string;
  /** A point-in-time restore's id: the permit then lets the primary restore this cluster from the backup repository, not initialise it. */
  restore?: number;
}

export interface PrimaryBootstrap {
  /** Where the permit appears (a host directory the container sees read-write, so that the entrypoint can remove it). */
  permitFile: string;
  cluster: string;
  generation: number;
}

/** Restore the cluster from the backup repository instead of initialising an empty one. */
export interface PrimaryRestore {
  /** The restore's id (backupRestore.id): part of the permit, so that each restore happens once. */
  id: number;
  /** What it restores to, for the log: "latest" or the target time. */
  target: string;
  /** The pgbackrest restore command (templates/pgbackrest.ts restoreArgv), run as the postgres user into the empty data directory. */
  argv: string[];
}

export interface PrimaryEntrypointParams extends EntrypointCommon {
  /**
   * The one-shot permit that alone lets an empty data directory be
   * initialised (see renderBootstrapPermit): without it, an empty data
   * directory is a lost cluster, not a new one.
   */
  bootstrap: PrimaryBootstrap;
  /** With a permit: restore from the backup repository (a new timeline that takes writes) instead of initdb. */
  restore?: PrimaryRestore;
  /** Extra initdb arguments for a new cluster (e.g. ["--wal-segsize=16"]). */
  initdbArgs?: string[];
  /** Locale of a new cluster (default C.UTF-8). */
  locale?: string;
}

interface Resolved {
  dataDir: string;
  configFile: string;
  osUser: string;
  asPostgres: string[];
  postgresArgv: string[];
  binDir?: string;
}

function resolveCommon(p: EntrypointCommon): Resolved {
  const dataDir = validatePath("dataDir", p.dataDir);
  const configFile = validatePath("configFile", p.configFile);
  const osUser = p.osUser ?? "postgres";
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(osUser)) templateError(`osUser ${JSON.stringify(osUser)} is not a valid user name`);
  const asPostgres = p.asPostgres ?? ["gosu", osUser];
  if (asPostgres.length === 0) templateError("asPostgres is empty: give the command that switches to the postgres user");
  const postgresArgv = p.postgresArgv ?? ["postgres", "-c", `config_file=${configFile}`];
  if (postgresArgv.length === 0) templateError("postgresArgv is empty");
  return { dataDir, configFile, osUser, asPostgres, postgresArgv, binDir: p.binDir === undefined ? undefined : validatePath("binDir", p.binDir) };
}

function header(title: string, r: Resolved): string[] {
  return [
    "#!/usr/bin/env bash",
    `# ${title}`,
    "# Rendered by the Synaxic deployment: do not edit by hand.",
    "set -euo pipefail",
    "umask 0077",
    "",
    `readonly DATA_DIR=${shellQuote(r.dataDir)}`,
    `readonly CONFIG_FILE=${shellQuote(r.configFile)}`,
    `readonly PG_OS_USER=${shellQuote(r.osUser)}`,
    `export PGDATA="$DATA_DIR"`,
    "# libpq looks for client certificates under $HOME: make it postgres's home, as gosu does.",
    "HOME=\"$(getent passwd \"$PG_OS_USER\" | cut -d: -f6)\" || true",
    "export HOME=\"${HOME:-/var/lib/postgresql}\"",
    ...(r.binDir ? [`export PATH=${shellQuote(r.binDir)}:"$PATH"`] : []),
    "",
    "log() { printf 'synaxic-postgres: %s\\n' \"$*\" >&2; }",
    "fail() { log \"FATAL: $*\"; exit 1; }",
    `as_postgres() { ${sh(r.asPostgres)} "$@"; }`,
    "",
    "# The data directory belongs to the postgres user and nobody else can enter it.",
    "prepare_data_dir() {",
    "  mkdir -p \"$DATA_DIR\"",
    "  find \"$DATA_DIR\" \\! -user \"$PG_OS_USER\" -exec chown \"$PG_OS_USER:\" {} +",
    "  chmod 0700 \"$DATA_DIR\"",
    "}",
    "data_dir_empty() { [ -z \"$(ls -A \"$DATA_DIR\")\" ]; }",
    "has_cluster() { [ -s \"$DATA_DIR/PG_VERSION\" ]; }",
    "",
  ];
}

function footer(r: Resolved, what: string): string[] {
  return ["", `log ${shellQuote(`starting PostgreSQL (${what})`)}`, `exec ${sh([...r.asPostgres, ...r.postgresArgv])}`, ""];
}

/**
 * The replica container's entrypoint (bash). See ReplicaMode for what each
 * mode does; it refuses, with a message naming the fix, whenever starting
 * could turn a replica host into a second writable primary.
 */
export function renderReplicaEntrypoint(params: ReplicaEntrypointParams): string {
  const r = resolveCommon(params);
  const mode = params.mode;
  if (mode !== "replica" && mode !== "promoted" && mode !== "rejoin") {
    templateError(`mode must be "replica", "promoted" or "rejoin", got ${JSON.stringify(mode)}`);
  }
  const slot = validateSlotName(params.slotName);
  const passfile = validatePath("passfile", params.passfile);
  const caFile = validatePath("caFile", params.caFile);
  const timeout = validatePositiveInt("connectTimeoutSeconds", params.connectTimeoutSeconds ?? 10);
  const host = validateConnectHost("primary host", params.primary.host);
  const port = validatePort("primary port", params.primary.port ?? 5432);
  const appName = validateReplicaName(params.applicationName);
  const replicationConninfo = replicaPrimaryConninfo({
    primary: { host, port },
    replicationUser: params.replicationUser,
    passfile,
    applicationName: appName,
    caFile,
    connectTimeoutSeconds: timeout,
  });
  const rewindConninfo = renderConninfo([
    ["host", host],
    ["port", port],
    ["user", validateIdentifier("rewind user", params.rewindUser)],
    ["dbname", validateIdentifier("rewind database", params.rewindDatabase ?? "postgres")],
    ["passfile", passfile],
    ["sslmode", "verify-full"],
    ["sslrootcert", caFile],
    ["application_name", `${appName}-rewind`],
    ["connect_timeout", timeout],
  ]);

  const lines = [
    ...header(`PostgreSQL replica entrypoint for ${appName} (mode: ${mode}).`, r),
    `readonly MODE=${shellQuote(mode)}`,
    `readonly SLOT=${shellQuote(slot)}`,
    `readonly PASSFILE=${shellQuote(passfile)}`,
    `readonly CA_FILE=${shellQuote(caFile)}`,
    `readonly PRIMARY=${shellQuote(`${host}:${port}`)}`,
    `readonly REPLICATION_CONNINFO=${shellQuote(replicationConninfo)}`,
    `readonly REWIND_CONNINFO=${shellQuote(rewindConninfo)}`,
    "",
    "# libpq ignores a passfile that others can read; the postgres user must own it.",
    "check_secrets() {",
    "  [ -f \"$PASSFILE\" ] || fail \"passfile $PASSFILE is missing\"",
    "  [ -r \"$CA_FILE\" ] || fail \"CA certificate $CA_FILE is missing\"",
    "  if [ \"$(stat -c %U \"$PASSFILE\")\" != \"$PG_OS_USER\" ] || [ \"$(stat -c %a \"$PASSFILE\")\" != 600 ]; then",
    "    chown \"$PG_OS_USER:\" \"$PASSFILE\" 2>/dev/null && chmod 0600 \"$PASSFILE\" 2>/dev/null ||",
    "      fail \"passfile $PASSFILE must be owned by $PG_OS_USER with mode 0600 (it is $(stat -c '%U %a' \"$PASSFILE\"))\"",
    "  fi",
    "}",
    "",
    "# A slot left by an earlier copy of this replica (perhaps lost, or holding old WAL) is replaced.",
    "drop_stale_slot() {",
    "  local out",
    "  if out=$(as_postgres pg_receivewal --drop-slot --slot=\"$SLOT\" --no-password --dbname=\"$REPLICATION_CONNINFO\" 2>&1); then",
    "    log \"dropped stale replication slot $SLOT on $PRIMARY\"",
    "  elif grep -q 'does not exist' <<<\"$out\"; then",
    "    log \"no stale replication slot $SLOT on $PRIMARY\"",
    "  else",
    "    fail \"could not drop replication slot $SLOT on $PRIMARY: $out\"",
    "  fi",
    "}",
    "",
    "ensure_slot() {",
    "  as_postgres pg_receivewal --create-slot --if-not-exists --slot=\"$SLOT\" --no-password --dbname=\"$REPLICATION_CONNINFO\" ||",
    "    fail \"could not create replication slot $SLOT on $PRIMARY\"",
    "}",
    "",
    "# Empty data directory: copy the primary over TLS through this replica's own slot.",
    "# The slot is created, reserving WAL, before the backup starts: pg_basebackup -C would",
    "# create it only after the backup's checkpoint, and a checkpoint in between (another",
    "# replica's clone) could remove WAL the backup still needs.",
    "clone() {",
    "  check_secrets",
    "  drop_stale_slot",
    "  # dbname=replication as pg_basebackup and pg_receivewal set it (streamutil.c GetConnection):",
    "  # libpq looks the password up in the passfile under the connection's dbname, which",
    "  # would otherwise default to the user name; a physical replication connection ignores it.",
    "  as_postgres psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 --dbname=\"$REPLICATION_CONNINFO dbname=replication replication=true\" \\",
    "    --command=\"CREATE_REPLICATION_SLOT $SLOT PHYSICAL (RESERVE_WAL)\" >/dev/null ||",
    "    fail \"could not create replication slot $SLOT on $PRIMARY (see above)\"",
    "  log \"cloning the primary $PRIMARY into $DATA_DIR (slot $SLOT)\"",
    "  as_postgres pg_basebackup --pgdata=\"$DATA_DIR\" --dbname=\"$REPLICATION_CONNINFO\" --no-password \\",
    "    --wal-method=stream --checkpoint=fast --slot=\"$SLOT\" ||",
    "    fail \"pg_basebackup from $PRIMARY failed (see above); the data directory was left empty, the next start retries\"",
    "  as_postgres touch \"$DATA_DIR/standby.signal\"",
    "  log \"clone complete\"",
    "}",
    "",
    "# Old primary: wind its data back to where the new primary's timeline forked off.",
    "rewind() {",
    "  check_secrets",
    "  # pg_rewind (PostgreSQL 15) takes the source's timeline from its control file, which a",
    "  # promotion updates only at its next checkpoint: have it written first.",
    "  as_postgres psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 --dbname=\"$REWIND_CONNINFO\" --command=CHECKPOINT ||",
    "    fail \"could not run CHECKPOINT on $PRIMARY as the rewind role (see above)\"",
    "  log \"rewinding $DATA_DIR onto the timeline of $PRIMARY with pg_rewind\"",
    "  if ! as_postgres pg_rewind --target-pgdata=\"$DATA_DIR\" --source-server=\"$REWIND_CONNINFO\" --config-file=\"$CONFIG_FILE\"; then",
    "    fail \"pg_rewind could not bring $DATA_DIR onto the timeline of $PRIMARY (see above), so this server cannot rejoin with its data. Re-initialise it: empty $DATA_DIR and start again, and this entrypoint clones a fresh copy.\"",
    "  fi",
    "  ensure_slot",
    "  as_postgres touch \"$DATA_DIR/standby.signal\"",
    "  log \"rewind complete: starting as a standby of $PRIMARY\"",
    "}",
    "",
    "prepare_data_dir",
    "if data_dir_empty; then",
    "  case \"$MODE\" in",
    "    promoted)",
    "      fail \"mode promoted but $DATA_DIR is empty: refusing to create a new, empty primary on a replica host. Restore the promoted data, or deploy this host as a replica to clone the current primary.\" ;;",
    "    *) clone ;;",
    "  esac",
    "elif ! has_cluster; then",
    "  fail \"$DATA_DIR holds files but no PostgreSQL cluster (no PG_VERSION): refusing to touch it. Empty it to clone the primary.\"",
    "elif [ ! -e \"$DATA_DIR/standby.signal\" ]; then",
    "  case \"$MODE\" in",
    "    replica)",
    "      fail \"$DATA_DIR holds a cluster without standby.signal: a primary's data or an interrupted clone. Refusing to start it writable on a replica host. Empty $DATA_DIR to clone the primary again, or deploy in mode rejoin to rewind an old primary.\" ;;",
    "    rejoin) rewind ;;",
    "    promoted) log \"promoted data: starting as a primary\" ;;",
    "  esac",
    "else",
    "  log \"existing standby data in $DATA_DIR: starting without cloning\"",
    "fi",
    ...footer(r, `mode ${mode}`),
  ];
  return lines.join("\n");
}

function validateCluster(cluster: string): string {
  if (typeof cluster !== "string" || !/^[a-z0-9][a-z0-9_-]{0,47}$/.test(cluster)) {
    templateError(`bootstrap cluster ${JSON.stringify(cluster)} is not valid: use the server's host name (1-48 lower-case letters, digits, '-' or '_')`);
  }
  return cluster;
}

/**
 * The text of a bootstrap permit: one line naming the cluster, the
 * generation and the data directory. The stack writes it (PostgresMaster's
 * permit step) and the primary entrypoint accepts exactly this text.
 */
export function renderBootstrapPermit(p: BootstrapPermitParams): string {
  const cluster = validateCluster(p.cluster);
  const generation = validateNonNegativeInt("bootstrap generation", p.generation);
  const dataDir = validatePath("dataDir", p.dataDir);
  const restore = p.restore === undefined ? "" : ` restore=${validatePositiveInt("restore id", p.restore)}`;
  return `synaxic-bootstrap-permit v1 cluster=${cluster} generation=${generation} data_dir=${dataDir}${restore}\n`;
}

/**
 * The primary container's entrypoint (bash). It initialises an empty data
 * directory (peer for the local superuser, no network access until
 * pg_hba.conf allows it) only when the stack's one-shot bootstrap permit for
 * this cluster and generation is present, and removes the permit once initdb
 * has succeeded. An empty data directory without a permit is a lost cluster
 * (a re-created server, a lost disk): it refuses to start an empty, writable
 * primary that replicas would clone, and says how to proceed. A data
 * directory that holds a cluster starts as it is, and a permit left next to
 * it is removed so that it can never fire later. A replica's data directory
 * (standby.signal present) is refused.
 */
export function renderPrimaryEntrypoint(params: PrimaryEntrypointParams): string {
  const r = resolveCommon(params);
  const locale = params.locale ?? "C.UTF-8";
  if (!/^[A-Za-z0-9_.@-]+$/.test(locale)) templateError(`locale ${JSON.stringify(locale)} is not a locale name`);
  if (!params.bootstrap) templateError("bootstrap is missing: give the permit file, cluster and generation");
  const permitFile = validatePath("bootstrap permitFile", params.bootstrap.permitFile);
  const generation = validateNonNegativeInt("bootstrap generation", params.bootstrap.generation);
  const restore = params.restore;
  if (restore && restore.argv.length === 0) templateError("restore argv is empty");
  const permit = renderBootstrapPermit({ cluster: params.bootstrap.cluster, generation, dataDir: r.dataDir, ...(restore ? { restore: restore.id } : {}) }).trimEnd();
  const initdb = [
    "initdb",
    `--pgdata=${r.dataDir}`,
    `--username=${r.osUser}`,
    "--auth-local=peer",
    "--auth-host=reject",
    "--encoding=UTF8",
    `--locale=${locale}`,
    "--data-checksums",
    ...(params.initdbArgs ?? []),
  ];
  const next = `pulumi config set bootstrapGeneration ${generation + 1}`;
  const lines = [
    ...header("PostgreSQL primary entrypoint.", r),
    `readonly PERMIT_FILE=${shellQuote(permitFile)}`,
    `readonly PERMIT=${shellQuote(permit)}`,
    "",
    "# The stack's one-shot permit to initialise this cluster: written when the stack is first",
    "# deployed or its bootstrapGeneration changes, never by a plain update, and removed here.",
    "permit_valid() { [ -f \"$PERMIT_FILE\" ] && [ \"$(cat \"$PERMIT_FILE\")\" = \"$PERMIT\" ]; }",
    "remove_permit() { rm -f \"$PERMIT_FILE\" || fail \"could not remove the bootstrap permit $PERMIT_FILE\"; }",
    "",
    "prepare_data_dir",
    "if [ -e \"$PERMIT_FILE.restoring\" ] && ! data_dir_empty; then",
    "  fail \"a restore into $DATA_DIR from the backup repository was cut short ($PERMIT_FILE.restoring is there): refusing to start what it left. Remove the container and its volume (docker rm -f, docker volume rm), then pulumi up to restore again\"",
    "fi",
    "rm -f \"$PERMIT_FILE.restoring\"",
    "if has_cluster && [ -e \"$PERMIT_FILE\" ]; then",
    "  remove_permit",
    "  log \"removed the bootstrap permit $PERMIT_FILE: $DATA_DIR already holds a cluster, which is never initialised again\"",
    "fi",
    "if [ -e \"$DATA_DIR/standby.signal\" ]; then",
    "  fail \"$DATA_DIR holds a replica's data (standby.signal present): refusing to start it as the primary. Promote the replica it belongs to instead, or restore the primary's data.\"",
    "fi",
    "if data_dir_empty; then",
    "  if permit_valid; then",
    ...(restore
      ? [
          `    log ${shellQuote(`restoring the cluster into ${r.dataDir} from the backup repository, to ${restore.target} (restore ${restore.id}); it then starts a new timeline`)}`,
          // A marker beside the permit (the data directory must be empty for pgBackRest) says a restore began: one cut short is never started as a cluster.
          "    touch \"$PERMIT_FILE.restoring\" || fail \"could not write $PERMIT_FILE.restoring\"",
          `    as_postgres ${sh(restore.argv)} || fail "the restore from the backup repository failed (see above); $DATA_DIR holds part of it and will not be started: remove the container and its volume (docker rm -f, docker volume rm), then pulumi up"`,
          "    rm -f \"$PERMIT_FILE.restoring\"",
        ]
      : [`    log ${shellQuote(`initialising a new cluster in ${r.dataDir} (bootstrap permit for generation ${generation})`)}`, `    as_postgres ${sh(initdb)}`]),
    "    remove_permit",
    "    log \"bootstrap permit $PERMIT_FILE used and removed\"",
    "  elif [ -e \"$PERMIT_FILE\" ]; then",
    `    fail "$DATA_DIR is empty, and the bootstrap permit $PERMIT_FILE is not for this cluster: it reads \\"$(head -n 1 "$PERMIT_FILE" | cut -c 1-300 | tr -c '[:print:]\\n' '?')\\", this server accepts only \\"$PERMIT\\". Refusing to initialise a new cluster. Restore the data into the data volume mounted at $DATA_DIR and start again, or, to knowingly start a new, empty cluster: ${next}, then pulumi up."`,
    "  else",
    `    fail "$DATA_DIR is empty, but this stack has already initialised its cluster (bootstrap generation ${generation}; there is no bootstrap permit at $PERMIT_FILE). Refusing to start an empty, writable primary: replicas re-initialised from it would clone nothing, and the app would write into an empty database. Restore the data (the old volume or disk, or a backup) into the data volume mounted at $DATA_DIR and start again; or, to knowingly start a new, empty cluster: ${next}, then pulumi up."`,
    "  fi",
    "elif ! has_cluster; then",
    "  fail \"$DATA_DIR holds files but no PostgreSQL cluster (no PG_VERSION): refusing to touch it\"",
    "fi",
    ...footer(r, "primary"),
  ];
  return lines.join("\n");
}
