/**
 * What the status command knows about the fleet: what the stacks say should
 * exist (the expectation), what the servers report (the facts), and what is
 * wrong (the problems). Plain data, so that gathering, judging and printing
 * are separate functions that tests can drive one at a time.
 */

/** One row of pg_stat_replication on a primary, with lag computed from LSNs. */
export interface PgReplicationRow {
  applicationName: string;
  clientAddr: string | null;
  state: string;
  syncState: string;
  sentLsn: string | null;
  writeLsn: string | null;
  flushLsn: string | null;
  replayLsn: string | null;
  /** pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn): WAL the standby has not replayed yet. */
  lagBytes: number | null;
  /** The walsender's lag measurements in seconds; null once the standby has caught up and nothing new was written. */
  writeLagSeconds: number | null;
  flushLagSeconds: number | null;
  replayLagSeconds: number | null;
}

/** One row of pg_replication_slots. */
export interface PgSlotRow {
  slotName: string;
  slotType: string;
  active: boolean;
  /** reserved, extended, unreserved, lost; null when the slot never reserved WAL. */
  walStatus: string | null;
  restartLsn: string | null;
  /** pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn): WAL kept on disk for this slot. */
  retainedBytes: number | null;
}

/** pg_stat_wal_receiver on a standby. */
export interface PgWalReceiver {
  status: string;
  senderHost: string | null;
  senderPort: number | null;
  slotName: string | null;
}

/** pg_stat_archiver, with ages in seconds (now() - the view's times) instead of times. */
export interface PgArchiver {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedAgeSeconds: number | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedAgeSeconds: number | null;
}

/** What one PostgreSQL server reports, whatever its role. */
export interface PgFacts {
  inRecovery: boolean;
  /** pg_current_wal_lsn() on a primary; null on a standby. */
  currentLsn: string | null;
  /** pg_last_wal_receive_lsn() / pg_last_wal_replay_lsn() on a standby; null on a primary. */
  receiveLsn: string | null;
  replayLsn: string | null;
  /** pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) on a standby. */
  lagBytes: number | null;
  /** pg_is_wal_replay_paused() on a standby. */
  replayPaused: boolean | null;
  /** Timeline of the last checkpoint (restartpoint on a standby); null when the server did not say. */
  timeline: number | null;
  /** pg_postmaster_start_time() as PostgreSQL prints a timestamptz in JSON. */
  startedAt: string | null;
  uptimeSeconds: number | null;
  /** The archive_mode setting (off, on, always). */
  archiveMode: string | null;
  archiver: PgArchiver | null;
  walReceiver: PgWalReceiver | null;
  /** Standbys streaming from this server (the replicas, on the primary). */
  replication: PgReplicationRow[];
  slots: PgSlotRow[];
}

/** One replica line of a Redis master's INFO replication (slaveN). */
export interface RedisReplicaEntry {
  ip: string;
  port: number;
  state: string;
  offset: number;
  /** Seconds since the replica's last acknowledgement. */
  lag: number;
}

/** INFO replication, parsed. */
export interface RedisReplicationFacts {
  role: "master" | "slave";
  connectedSlaves: number;
  slaves: RedisReplicaEntry[];
  masterReplOffset: number;
  /** Replica only. */
  masterHost: string | null;
  masterPort: number | null;
  masterLinkStatus: string | null;
  slaveReplOffset: number | null;
  masterLastIoSecondsAgo: number | null;
  masterLinkDownSinceSeconds: number | null;
}

/** The outcome of asking one server something. */
export type Gathered<T> =
  | { ok: true; value: T }
  /** connection: the host itself could not be reached (SSH); otherwise the service did not answer. */
  | { ok: false; error: string; connection: boolean };

/** The backup repository as one host's pgBackRest sees it (`pgbackrest info --output=json`). */
export interface BackupFacts {
  stanza: string;
  /** The stanza's status: 0 ok, 2 no valid backups, ... (pgBackRest's info command). */
  status: { code: number; message: string };
  backupCount: number;
  /** The most recent backup (by stop time), if any. */
  newest: { label: string; type: "full" | "diff" | "incr"; stoppedAt: number; ageSeconds: number } | null;
  /** The newest WAL segment in the archive, if any. */
  archiveMax: string | null;
}

export interface HostFacts {
  name: string;
  postgres: Gathered<PgFacts>;
  redis: Gathered<RedisReplicationFacts>;
  /** null: the fleet has no backups (the main stack's fleet.backup is null). */
  backup: Gathered<BackupFacts> | null;
}

export type PostgresMode = "replica" | "promoted" | "rejoin";

/** A replica as the main stack lists it, plus what its own stack says when it was named on the command line. */
export interface ExpectedReplica {
  name: string;
  privateIp: string;
  slotName: string;
  /** Whether this replica's host is checked too (its stack was given). */
  checked: boolean;
  /** From the replica stack's postgresMode output; "replica" when its stack was not given. */
  postgresMode: PostgresMode;
  /** From the replica stack's redisRole output; "replica" when its stack was not given. */
  redisRole: "master" | "replica";
  /** The control generation its stack was last deployed under (output controlGeneration); absent when not known. */
  controlGeneration?: number;
}

/** The control stack's decision, as the status command read it (lib/control.ts ControlInfo). */
export interface ControlExpectation {
  /** The control stack's name. */
  stack: string;
  /** The host that is to be the primary. */
  primary: string;
  generation: number;
  previousPrimary: string | null;
  /** Former primaries, how and in which generation each was fenced. */
  fenced: Record<string, { method: string; generation: number }>;
}

/** What should exist, from the stacks' outputs. */
export interface FleetExpectation {
  /** The main host; controlGeneration as for a replica. */
  main: { name: string; privateIp: string; controlGeneration?: number };
  /**
   * Under a control stack (host stacks name it in controlStack): which host
   * is to be the primary, and who was fenced. The report then judges every
   * host against it. Absent or null: main is the primary.
   */
  control?: ControlExpectation | null;
  redisPort: number;
  replicas: ExpectedReplica[];
  /** Replica stacks given on the command line whose replica the main stack does not list. */
  unknownReplicaStacks: { stack: string; replicaName: string }[];
  /** The fleet backs up (the main stack's fleet.backup is set): each host's pgBackRest is asked. */
  backups?: boolean;
}

export interface FleetFacts {
  main: HostFacts;
  replicas: HostFacts[];
}

export interface Thresholds {
  /** Largest acceptable replication lag in bytes (primary and standby views). */
  maxLagBytes: number;
  /** Largest acceptable replay_lag in seconds. */
  maxReplayLagSeconds: number;
  /** Largest acceptable Redis offset difference in bytes. */
  maxRedisOffsetLag: number;
  /** Oldest acceptable newest backup in seconds; null: backups are shown, not judged. */
  maxBackupAgeSeconds: number | null;
}

export const DEFAULT_THRESHOLDS: Thresholds = {
  maxLagBytes: 16 * 1024 * 1024,
  maxReplayLagSeconds: 30,
  maxRedisOffsetLag: 1024 * 1024,
  maxBackupAgeSeconds: null,
};

export type ProblemKind =
  | "host-unreachable"
  | "postgres-unavailable"
  | "primary-in-recovery"
  | "replica-missing"
  | "replica-not-streaming"
  | "slot-missing"
  | "slot-inactive"
  | "slot-wal-status"
  | "slot-unexpected"
  | "lag-bytes"
  | "replay-lag"
  | "not-in-recovery"
  | "promotion-incomplete"
  | "wal-receiver"
  | "replay-paused"
  | "redis-unavailable"
  | "redis-role"
  | "redis-link-down"
  | "redis-replica-missing"
  | "redis-offset-lag"
  | "replica-stack-unknown"
  | "archive-failing"
  | "backup-stale"
  /** Under a control stack: a host other than the recorded primary accepts writes. */
  | "two-primaries"
  /** Under a control stack: a fenced former primary that is not back as a standby yet. */
  | "fenced"
  /** Under a control stack: a host stack last deployed under an older generation. */
  | "control-stale"
  /** Under a control stack: the recorded primary's stack was not read (--replica named others). */
  | "primary-not-checked";

export interface Problem {
  kind: ProblemKind;
  /** The host whose server reported it. */
  host: string;
  /** What it is about (a replica, a slot), when not the host itself. */
  subject?: string;
  message: string;
}

export interface StatusReport {
  healthy: boolean;
  /** Some host could not be reached: the picture is incomplete. */
  incomplete: boolean;
  problems: Problem[];
  thresholds: Thresholds;
  expectation: FleetExpectation;
  facts: FleetFacts;
}
