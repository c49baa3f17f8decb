/**
 * The one query the status command runs on every PostgreSQL server, and its
 * parser. It works whatever the server's role: a primary reports its
 * walsenders (pg_stat_replication) and slots; a standby reports its receive
 * and replay positions and its WAL receiver. Lag is measured in bytes from
 * LSNs and from the walsender's own lag columns, never from
 * now() - pg_last_xact_replay_timestamp(), which grows on an idle primary.
 *
 * Per server it also reports the timeline of the last checkpoint
 * (pg_control_checkpoint(), PostgreSQL docs "System Information Functions",
 * Table "pg_control_checkpoint Output Columns": timeline_id), when the server
 * started (pg_postmaster_start_time()) and the WAL archiver's counters
 * (pg_stat_archiver: archived_count, last_archived_time, failed_count,
 * last_failed_time; docs "Monitoring Database Activity").
 *
 * The query returns one JSON document on one line (jsonb's text form, with
 * psql --no-align --tuples-only), so the output needs no column splitting
 * and NULLs stay NULLs.
 */
import { z } from "zod";
import { StatusParseError } from "./errors";
import type { PgFacts } from "./types";

/**
 * The WAL position lag is measured against: what this server has written,
 * or (on a cascading standby) what it has received. pg_current_wal_lsn()
 * fails during recovery, so it is only reached on a primary.
 */
const POSITION = "CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() ELSE pg_catalog.pg_current_wal_lsn() END";

export const PG_STATUS_SQL = `-- Replication status of this server (status command).
SELECT pg_catalog.json_build_object(
  'in_recovery', pg_catalog.pg_is_in_recovery(),
  'current_lsn', CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_lsn() END,
  'receive_lsn', pg_catalog.pg_last_wal_receive_lsn(),
  'replay_lsn', pg_catalog.pg_last_wal_replay_lsn(),
  'lag_bytes', pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn()),
  'replay_paused', CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() END,
  -- The timeline of the last checkpoint (restartpoint on a standby), from pg_control.
  'timeline', (pg_catalog.pg_control_checkpoint()).timeline_id,
  'started_at', pg_catalog.pg_postmaster_start_time(),
  'uptime_seconds', extract(epoch FROM pg_catalog.now() - pg_catalog.pg_postmaster_start_time()),
  'archive_mode', pg_catalog.current_setting('archive_mode'),
  'archiver', (
    SELECT pg_catalog.row_to_json(a) FROM (
      SELECT archived_count,
             last_archived_wal,
             extract(epoch FROM pg_catalog.now() - last_archived_time) AS last_archived_age,
             failed_count,
             last_failed_wal,
             extract(epoch FROM pg_catalog.now() - last_failed_time) AS last_failed_age
      FROM pg_catalog.pg_stat_archiver
    ) a
  ),
  'wal_receiver', (
    SELECT pg_catalog.row_to_json(w) FROM (
      SELECT status, sender_host, sender_port, slot_name FROM pg_catalog.pg_stat_wal_receiver
    ) w
  ),
  'replication', (
    SELECT coalesce(pg_catalog.json_agg(r ORDER BY r.application_name, r.client_addr), '[]'::json) FROM (
      SELECT application_name,
             pg_catalog.host(client_addr) AS client_addr,
             state,
             sync_state,
             sent_lsn, write_lsn, flush_lsn, replay_lsn,
             pg_catalog.pg_wal_lsn_diff(${POSITION}, replay_lsn) AS lag_bytes,
             extract(epoch FROM write_lag) AS write_lag,
             extract(epoch FROM flush_lag) AS flush_lag,
             extract(epoch FROM replay_lag) AS replay_lag
      FROM pg_catalog.pg_stat_replication
    ) r
  ),
  'slots', (
    SELECT coalesce(pg_catalog.json_agg(s ORDER BY s.slot_name), '[]'::json) FROM (
      SELECT slot_name,
             slot_type,
             active,
             wal_status,
             restart_lsn,
             pg_catalog.pg_wal_lsn_diff(${POSITION}, restart_lsn) AS retained_bytes
      FROM pg_catalog.pg_replication_slots
    ) s
  )
)::jsonb::text;
`;

const lsn = z.string().regex(/^[0-9A-F]+\/[0-9A-F]+$/i, { message: "expected an LSN" }).nullable();
const num = z.number().nullable();

const statusSchema = z.object({
  in_recovery: z.boolean(),
  current_lsn: lsn,
  receive_lsn: lsn,
  replay_lsn: lsn,
  lag_bytes: num,
  replay_paused: z.boolean().nullable(),
  // Absent from the output of an older status query: read as unknown.
  timeline: z.number().int().nullable().optional(),
  started_at: z.string().nullable().optional(),
  uptime_seconds: num.optional(),
  archive_mode: z.string().nullable().optional(),
  archiver: z
    .object({
      archived_count: z.number(),
      last_archived_wal: z.string().nullable(),
      last_archived_age: num,
      failed_count: z.number(),
      last_failed_wal: z.string().nullable(),
      last_failed_age: num,
    })
    .nullable()
    .optional(),
  wal_receiver: z
    .object({ status: z.string(), sender_host: z.string().nullable(), sender_port: z.number().nullable(), slot_name: z.string().nullable() })
    .nullable(),
  replication: z.array(
    z.object({
      application_name: z.string(),
      client_addr: z.string().nullable(),
      state: z.string(),
      sync_state: z.string(),
      sent_lsn: lsn,
      write_lsn: lsn,
      flush_lsn: lsn,
      replay_lsn: lsn,
      lag_bytes: num,
      write_lag: num,
      flush_lag: num,
      replay_lag: num,
    }),
  ),
  slots: z.array(
    z.object({
      slot_name: z.string(),
      slot_type: z.string(),
      active: z.boolean(),
      wal_status: z.string().nullable(),
      restart_lsn: lsn,
      retained_bytes: num,
    }),
  ),
});

/** Parses psql's output of PG_STATUS_SQL: the whole output is one JSON document. */
export function parsePgStatus(stdout: string): PgFacts {
  const line = stdout.trim();
  if (!line) throw new StatusParseError("psql", "no output");
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw new StatusParseError("psql", `not JSON: ${line.slice(0, 200)}`);
  }
  const r = statusSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new StatusParseError("psql", `${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  const d = r.data;
  return {
    inRecovery: d.in_recovery,
    currentLsn: d.current_lsn,
    receiveLsn: d.receive_lsn,
    replayLsn: d.replay_lsn,
    lagBytes: d.in_recovery ? d.lag_bytes : null,
    replayPaused: d.replay_paused,
    timeline: d.timeline ?? null,
    startedAt: d.started_at ?? null,
    uptimeSeconds: d.uptime_seconds ?? null,
    archiveMode: d.archive_mode ?? null,
    archiver: d.archiver
      ? {
          archivedCount: d.archiver.archived_count,
          lastArchivedWal: d.archiver.last_archived_wal,
          lastArchivedAgeSeconds: d.archiver.last_archived_age,
          failedCount: d.archiver.failed_count,
          lastFailedWal: d.archiver.last_failed_wal,
          lastFailedAgeSeconds: d.archiver.last_failed_age,
        }
      : null,
    walReceiver: d.wal_receiver
      ? { status: d.wal_receiver.status, senderHost: d.wal_receiver.sender_host, senderPort: d.wal_receiver.sender_port, slotName: d.wal_receiver.slot_name }
      : null,
    replication: d.replication.map((x) => ({
      applicationName: x.application_name,
      clientAddr: x.client_addr,
      state: x.state,
      syncState: x.sync_state,
      sentLsn: x.sent_lsn,
      writeLsn: x.write_lsn,
      flushLsn: x.flush_lsn,
      replayLsn: x.replay_lsn,
      lagBytes: x.lag_bytes,
      writeLagSeconds: x.write_lag,
      flushLagSeconds: x.flush_lag,
      replayLagSeconds: x.replay_lag,
    })),
    slots: d.slots.map((s) => ({
      slotName: s.slot_name,
      slotType: s.slot_type,
      active: s.active,
      walStatus: s.wal_status,
      restartLsn: s.restart_lsn,
      retainedBytes: s.retained_bytes,
    })),
  };
}
