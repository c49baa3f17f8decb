/**
 * Custom queries for prometheus-postgres-exporter (0.11, --extend.query-path).
 *
 * The exporter names a metric <query key>_<column>, and every LABEL column of
 * a query labels every metric of that query; queries are split so that each
 * metric carries exactly its own labels. All queries work on a primary and on
 * a standby (functions that fail during recovery are only reached on the
 * primary). Replication lag is measured in WAL bytes and from the walsender's
 * replay_lag, never from now() - pg_last_xact_replay_timestamp(), which grows
 * on an idle primary.
 */
import { stringify } from "yaml";

interface MetricColumn {
  usage: "LABEL" | "GAUGE" | "COUNTER";
  description: string;
}

interface ExporterQuery {
  query: string;
  master: boolean;
  metrics: Record<string, MetricColumn>[];
}

const CURRENT_LSN =
  "CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() ELSE pg_catalog.pg_current_wal_lsn() END";

function sql(lines: string[]): string {
  return lines.join("\n");
}

/** The queries, keyed by metric prefix (exported for tests and dashboards). */
export function postgresExporterQueries(): Record<string, ExporterQuery> {
  return {
    synaxic_replication: {
      query: sql([
        "SELECT application_name,",
        "       COALESCE(pg_catalog.host(client_addr), 'local') AS client_addr,",
        "       state,",
        `       pg_catalog.pg_wal_lsn_diff(${CURRENT_LSN}, replay_lsn)::float8 AS lag_bytes`,
        "FROM pg_catalog.pg_stat_replication",
      ]),
      master: true,
      metrics: [
        { application_name: { usage: "LABEL", description: "Replica's application_name" } },
        { client_addr: { usage: "LABEL", description: "Replica's address" } },
        { state: { usage: "LABEL", description: "Walsender state (streaming, catchup, ...)" } },
        { lag_bytes: { usage: "GAUGE", description: "WAL bytes written on this server but not yet replayed by the replica" } },
      ],
    },
    synaxic_replication_replay: {
      query: sql([
        "SELECT application_name,",
        "       COALESCE(pg_catalog.host(client_addr), 'local') AS client_addr,",
        "       COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 AS lag_seconds",
        "FROM pg_catalog.pg_stat_replication",
      ]),
      master: true,
      metrics: [
        { application_name: { usage: "LABEL", description: "Replica's application_name" } },
        { client_addr: { usage: "LABEL", description: "Replica's address" } },
        { lag_seconds: { usage: "GAUGE", description: "Walsender's replay_lag in seconds (0 when there is nothing to replay)" } },
      ],
    },
    synaxic_slot: {
      query: sql([
        "SELECT slot_name,",
        `       COALESCE(pg_catalog.pg_wal_lsn_diff(${CURRENT_LSN}, restart_lsn), 0)::float8 AS retained_bytes,`,
        "       CASE WHEN active THEN 1 ELSE 0 END AS active,",
        "       CASE WHEN wal_status = 'lost' THEN 1 ELSE 0 END AS lost",
        "FROM pg_catalog.pg_replication_slots",
        // Temporary slots (pg_basebackup's while it clones) end with their session.
        "WHERE slot_type = 'physical' AND NOT temporary",
      ]),
      master: true,
      metrics: [
        { slot_name: { usage: "LABEL", description: "Replication slot" } },
        { retained_bytes: { usage: "GAUGE", description: "WAL bytes the slot holds back on this server" } },
        { active: { usage: "GAUGE", description: "1 when a replica is connected through the slot" } },
        { lost: { usage: "GAUGE", description: "1 when the slot lost WAL its replica needs (max_slot_wal_keep_size): re-initialise the replica" } },
      ],
    },
    synaxic_recovery: {
      query: sql([
        "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN 1 ELSE 0 END AS in_recovery,",
        "       CASE WHEN pg_catalog.pg_is_in_recovery()",
        "            THEN GREATEST(COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn()), 0), 0)",
        "            ELSE 0 END::float8 AS replay_lag_bytes",
      ]),
      master: true,
      metrics: [
        { in_recovery: { usage: "GAUGE", description: "1 on a replica (in recovery), 0 on a primary" } },
        { replay_lag_bytes: { usage: "GAUGE", description: "On a replica: WAL bytes received but not yet replayed" } },
      ],
    },
    // Synchronous replication (synchronous_standby_names, PostgreSQL 15 docs
    // 20.6.2 and 27.2.8): on a primary that has it set, the standbys that can
    // confirm a commit (sync_state sync or quorum, streaming) and the sessions
    // waiting for one (wait_event SyncRep). 0/0/0 on a standby.
    synaxic_synchronous: {
      query: sql([
        "SELECT CASE WHEN NOT pg_catalog.pg_is_in_recovery() AND pg_catalog.current_setting('synchronous_standby_names') <> '' THEN 1 ELSE 0 END AS required,",
        "       (SELECT count(*) FROM pg_catalog.pg_stat_replication WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))::float8 AS standbys,",
        "       (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE wait_event = 'SyncRep')::float8 AS waiting",
      ]),
      master: true,
      metrics: [
        { required: { usage: "GAUGE", description: "1 on a primary whose commits wait for a synchronous standby (synchronous_standby_names set)" } },
        { standbys: { usage: "GAUGE", description: "Streaming standbys that can confirm a commit (sync_state sync or quorum)" } },
        { waiting: { usage: "GAUGE", description: "Sessions whose commit waits for a synchronous standby (wait_event SyncRep)" } },
      ],
    },
    // WAL archiving (pg_stat_archiver, PostgreSQL 15 docs 28.2.13): times as
    // Unix seconds, 0 when never. Archiving fails while the last failure is
    // newer than the last success.
    synaxic_archiver: {
      query: sql([
        "SELECT archived_count::float8 AS archived_count,",
        "       failed_count::float8 AS failed_count,",
        "       COALESCE(EXTRACT(EPOCH FROM last_archived_time), 0)::float8 AS last_archived_time,",
        "       COALESCE(EXTRACT(EPOCH FROM last_failed_time), 0)::float8 AS last_failed_time,",
        "       CASE WHEN pg_catalog.current_setting('archive_mode') = 'off' THEN 0 ELSE 1 END AS enabled",
        "FROM pg_catalog.pg_stat_archiver",
      ]),
      master: true,
      metrics: [
        { archived_count: { usage: "COUNTER", description: "WAL files archived since the statistics were reset" } },
        { failed_count: { usage: "COUNTER", description: "Failed attempts to archive a WAL file" } },
        { last_archived_time: { usage: "GAUGE", description: "Unix time of the last WAL file archived (0: never)" } },
        { last_failed_time: { usage: "GAUGE", description: "Unix time of the last failed archive attempt (0: never)" } },
        { enabled: { usage: "GAUGE", description: "1 when archive_mode is on" } },
      ],
    },
  };
}

/** The queries file for --extend.query-path (YAML). */
export function renderPostgresExporterQueries(): string {
  return (
    "# Custom queries for prometheus-postgres-exporter, rendered by the Synaxic deployment.\n" +
    stringify(postgresExporterQueries(), { lineWidth: 0 })
  );
}
