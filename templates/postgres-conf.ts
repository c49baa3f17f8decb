/**
 * postgresql.conf for the Synaxic primary and its streaming replicas.
 *
 * Every server gets the same WAL and TLS settings, so that any replica can be
 * promoted and any old primary can rejoin (pg_rewind needs wal_log_hints).
 * A hot standby refuses to start when max_connections, max_worker_processes
 * or max_wal_senders are lower than its primary's. Since any replica may be
 * promoted, pass every server's sizing as `clusterTunes`: those settings then
 * take the highest value in the cluster on every server (and keep
 * maxWalSenders the same everywhere).
 */
import { pgTune, pgTuneSettings, type PgTuneInput } from "../lib/pgtune";
import {
  pgConfString,
  renderConninfo,
  templateError,
  validateConnectHost,
  validateHostAddress,
  validateIdentifier,
  validateNonNegativeInt,
  validatePath,
  validatePort,
  validatePositiveInt,
  validateReplicaName,
  validateSlotName,
} from "./postgres-quote";

export interface PostgresTlsFiles {
  /** Server certificate (PEM); its SANs must name every address clients use. */
  certFile: string;
  /** Server key: 0600 owned by postgres, or 0640 owned by root with postgres's group. */
  keyFile: string;
  /** CA certificate that signed the servers' certificates. */
  caFile: string;
}

export interface PostgresConfCommon {
  /** Name of this server (cluster_name, shown in process titles and logs). */
  name: string;
  /** PGDATA, e.g. /var/lib/postgresql/data. */
  dataDir: string;
  /** pg_hba.conf location, e.g. /etc/synaxic/hba/pg_hba.conf. */
  hbaFile: string;
  /** Addresses to listen on: IP addresses, or ["*"] for all of the container's interfaces. */
  listenAddresses: string[];
  port?: number;
  /** Unix socket directory (default /var/run/postgresql). */
  unixSocketDir?: string;
  /** Sizing inputs for PGTune's web profile. */
  tune: PgTuneInput;
  /**
   * The sizing inputs of every server in the cluster (primary and replicas):
   * max_connections and max_worker_processes become the highest among them,
   * so that any server can follow any other. Without it, this server's own.
   */
  clusterTunes?: PgTuneInput[];
  tls: PostgresTlsFiles;
  /** max_wal_senders (default 10). */
  maxWalSenders?: number;
  /** max_replication_slots (default 10). */
  maxReplicationSlots?: number;
  /** Most WAL a replication slot may hold back, in MB; past it the slot is lost and its replica must be re-cloned. */
  maxSlotWalKeepSizeMB: number;
  /** WAL kept regardless of slots, in MB (helps pg_rewind and short outages). */
  walKeepSizeMB: number;
  /**
   * Synchronous replication: the other servers' application_names (each
   * replica's name, given in its primary_conninfo). Rendered as
   * synchronous_standby_names = 'ANY 1 (...)': while this server is the
   * primary, a commit returns only once one of them has flushed its WAL
   * (synchronous_commit on, the default). A standby ignores the setting, so
   * every server carries it and a promoted one waits for the others at once.
   * Absent: asynchronous.
   */
  synchronousStandbyNames?: string[];
  /**
   * WAL archiving into the backup repository, as [setting, value] pairs
   * (archive_mode, archive_command, archive_timeout, restore_command from
   * templates/pgbackrest.ts); values are quoted here. Absent: no archiving.
   */
  archive?: [string, string][];
}

export interface PrimaryConfParams extends PostgresConfCommon {
  role: "primary";
}

export interface ReplicaConfParams extends PostgresConfCommon {
  role: "replica";
  /** The server to stream from. */
  primary: { host: string; port?: number };
  /** Replication role on the primary. */
  replicationUser: string;
  /** .pgpass holding the replication role's password (0600, owned by postgres). */
  passfile: string;
  /** This replica's name: application_name on the primary. */
  applicationName: string;
  /** Physical slot on the primary reserved for this replica. */
  slotName: string;
}

export type PostgresConfParams = PrimaryConfParams | ReplicaConfParams;

function line(name: string, value: string): string {
  return `${name} = ${value}`;
}

function listenAddresses(addresses: readonly string[]): string {
  if (addresses.length === 0) templateError("listenAddresses is empty: give the addresses PostgreSQL should listen on");
  for (const a of addresses) {
    if (a === "*" || a === "localhost") continue;
    validateHostAddress("listen address", a);
  }
  if (addresses.includes("*") && addresses.length > 1) templateError(`listenAddresses ["*"] cannot be combined with other addresses`);
  return addresses.join(",");
}

export interface PrimaryConninfoParams {
  primary: { host: string; port?: number };
  replicationUser: string;
  passfile: string;
  applicationName: string;
  caFile: string;
  /** Seconds a connection attempt may take (default 10), so an unreachable primary is retried promptly. */
  connectTimeoutSeconds?: number;
}

/** The conninfo a replica streams with: TLS verified against the CA, password from the passfile. */
export function replicaPrimaryConninfo(p: PrimaryConninfoParams): string {
  return renderConninfo([
    ["host", validateConnectHost("primary host", p.primary.host)],
    ["port", validatePort("primary port", p.primary.port ?? 5432)],
    ["user", validateIdentifier("replication user", p.replicationUser)],
    ["passfile", validatePath("passfile", p.passfile)],
    ["sslmode", "verify-full"],
    ["sslrootcert", validatePath("TLS CA file", p.caFile)],
    ["application_name", validateReplicaName(p.applicationName)],
    ["connect_timeout", validatePositiveInt("connectTimeoutSeconds", p.connectTimeoutSeconds ?? 10)],
  ]);
}

/**
 * synchronous_standby_names for a quorum of one among the named standbys:
 * `ANY 1 ("a", "b")`. Each name is double-quoted (a name with '-' is not a
 * plain identifier). An empty list is refused: with no standby named, no
 * commit could ever be confirmed.
 */
export function synchronousStandbyNames(names: readonly string[]): string {
  if (names.length === 0) templateError("synchronousStandbyNames is empty: a quorum of one needs at least one standby, or no commit would ever return");
  const seen = new Set<string>();
  for (const n of names) {
    validateReplicaName(n);
    if (seen.has(n)) templateError(`synchronousStandbyNames names ${JSON.stringify(n)} twice`);
    seen.add(n);
  }
  return `ANY 1 (${names.map((n) => `"${n}"`).join(", ")})`;
}

const ARCHIVE_SETTINGS = ["archive_mode", "archive_command", "archive_timeout", "restore_command"];

function archiveLines(settings: [string, string][]): string[] {
  return settings.map(([k, v]) => {
    if (!ARCHIVE_SETTINGS.includes(k)) templateError(`archive: ${JSON.stringify(k)} is not an archiving setting (${ARCHIVE_SETTINGS.join(", ")})`);
    if (k === "archive_mode" && !["on", "off", "always"].includes(v)) templateError(`archive: archive_mode must be on, off or always, got ${JSON.stringify(v)}`);
    return line(k, k === "archive_mode" ? v : pgConfString(v));
  });
}

/** Renders postgresql.conf for the primary or for a streaming replica. */
/** The OpenSSL cipher list PostgreSQL offers for TLS 1.2. */
export const PG_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1:!SHA256:!SHA384";

export function renderPostgresqlConf(params: PostgresConfParams): string {
  const p = params;
  if (p.role !== "primary" && p.role !== "replica") templateError(`role must be "primary" or "replica", got ${JSON.stringify((p as { role: unknown }).role)}`);
  validateReplicaName(p.name);
  const tune = pgTune(p.tune);
  const settings = pgTuneSettings(tune);
  if (p.clusterTunes !== undefined) {
    // Hot-standby-critical settings: the highest in the cluster, on every server.
    const all = [tune, ...p.clusterTunes.map((t) => pgTune(t))];
    const maxConnections = Math.max(...all.map((t) => t.maxConnections));
    const maxWorkers = Math.max(...all.map((t) => t.parallel?.maxWorkerProcesses ?? 8));
    const set = (name: string, value: string) => {
      const row = settings.find(([k]) => k === name);
      if (row) row[1] = value;
      else settings.push([name, value]);
    };
    set("max_connections", String(maxConnections));
    set("max_worker_processes", String(maxWorkers));
  }
  const maxWalSenders = validatePositiveInt("maxWalSenders", p.maxWalSenders ?? 10);
  const maxSlots = validatePositiveInt("maxReplicationSlots", p.maxReplicationSlots ?? 10);
  const out: string[] = [
    `# postgresql.conf for ${p.name} (${p.role}), rendered by the Synaxic deployment: do not edit by hand.`,
    "",
    "# Files and connections",
    line("data_directory", pgConfString(validatePath("dataDir", p.dataDir))),
    line("hba_file", pgConfString(validatePath("hbaFile", p.hbaFile))),
    line("cluster_name", pgConfString(p.name)),
    line("listen_addresses", pgConfString(listenAddresses(p.listenAddresses))),
    line("port", String(validatePort("port", p.port ?? 5432))),
    line("unix_socket_directories", pgConfString(validatePath("unixSocketDir", p.unixSocketDir ?? "/var/run/postgresql"))),
    "",
    "# TLS: required for every network connection (see pg_hba.conf)",
    line("ssl", "on"),
    line("ssl_min_protocol_version", pgConfString("TLSv1.2")),
    // TLS 1.2 suites: forward secrecy and AEAD only (no CBC, no SHA-1 MACs),
    // as the balancer offers; TLS 1.3's suites are all AEAD already and are
    // not governed by ssl_ciphers.
    line("ssl_ciphers", pgConfString(PG_TLS12_CIPHERS)),
    line("ssl_cert_file", pgConfString(validatePath("TLS certificate file", p.tls.certFile))),
    line("ssl_key_file", pgConfString(validatePath("TLS key file", p.tls.keyFile))),
    line("ssl_ca_file", pgConfString(validatePath("TLS CA file", p.tls.caFile))),
    line("password_encryption", pgConfString("scram-sha-256")),
    "",
    `# Sizing: PGTune web profile, ${p.tune.memoryMiB} MiB, ${p.tune.cpus} CPUs, ${p.tune.maxConnections} connections, SSD`,
    ...settings.map(([k, v]) => line(k, /^[0-9.]+$/.test(v) ? v : pgConfString(v))),
    "",
    "# WAL and streaming replication",
    line("wal_level", "replica"),
    line("max_wal_senders", String(maxWalSenders)),
    line("max_replication_slots", String(maxSlots)),
    line("max_slot_wal_keep_size", pgConfString(`${validateNonNegativeInt("maxSlotWalKeepSizeMB", p.maxSlotWalKeepSizeMB)}MB`)),
    line("wal_keep_size", pgConfString(`${validateNonNegativeInt("walKeepSizeMB", p.walKeepSizeMB)}MB`)),
    line("wal_log_hints", "on"),
    line("hot_standby", "on"),
    ...(p.synchronousStandbyNames !== undefined
      ? [
          "# Synchronous replication: as primary, a commit waits until one of these standbys has flushed it",
          line("synchronous_standby_names", pgConfString(synchronousStandbyNames(p.synchronousStandbyNames))),
        ]
      : []),
    ...(p.archive?.length ? ["", "# WAL archiving into the backup repository (pgBackRest; a standby archives once promoted)", ...archiveLines(p.archive)] : []),
    "",
    "# Logging",
    line("log_connections", "on"),
    line("log_disconnections", "on"),
    line("log_replication_commands", "on"),
    line("log_line_prefix", pgConfString("%m [%p] %q%u@%d ")),
  ];
  if (p.role === "replica") {
    out.push(
      "",
      "# Standby: follow the primary through this replica's own slot (standby.signal marks the data as a standby's)",
      line("primary_conninfo", pgConfString(replicaPrimaryConninfo({ ...p, caFile: p.tls.caFile }))),
      line("primary_slot_name", pgConfString(validateSlotName(p.slotName))),
      line("recovery_target_timeline", pgConfString("latest")),
      line("hot_standby_feedback", "on"),
    );
  }
  return out.join("\n") + "\n";
}

/**
 * The settings of ours that PostgreSQL 15 reads only at server start
 * (context "postmaster" in pg_settings; src/backend/utils/misc/guc.c): a
 * change to any of them needs a restart, every other change a reload. The
 * integration suite checks this list against a real server's pg_settings.
 */
export const RESTART_SETTINGS: readonly string[] = [
  "archive_mode",
  "autovacuum_max_workers",
  "cluster_name",
  "data_directory",
  "hba_file",
  "hot_standby",
  "huge_pages",
  "listen_addresses",
  "max_connections",
  "max_replication_slots",
  "max_wal_senders",
  "max_worker_processes",
  "port",
  "recovery_target_timeline",
  "shared_buffers",
  "unix_socket_directories",
  "wal_buffers",
  "wal_level",
  "wal_log_hints",
];

/** The `name = value` settings of a rendered postgresql.conf, in order. */
export function parsePostgresqlConf(conf: string): [string, string][] {
  const out: [string, string][] = [];
  for (const raw of conf.split("\n")) {
    const m = /^\s*([a-z_][a-z0-9_.]*)\s*=\s*(.*?)\s*$/.exec(raw);
    if (m) out.push([m[1]!, m[2]!]);
  }
  return out;
}

/** The names of the restart-only settings a postgresql.conf sets. */
export function restartSettingNames(conf: string): string[] {
  return parsePostgresqlConf(conf)
    .map(([k]) => k)
    .filter((k) => RESTART_SETTINGS.includes(k));
}

/** The restart-only settings with their values, one per line: what a restart depends on. */
export function restartSettings(conf: string): string {
  return parsePostgresqlConf(conf)
    .filter(([k]) => RESTART_SETTINGS.includes(k))
    .map(([k, v]) => `${k} = ${v}`)
    .join("\n");
}
