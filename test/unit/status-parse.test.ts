/**
 * Parsers of the status command: the PostgreSQL status query's JSON (outputs
 * captured from PostgreSQL 15 running PG_STATUS_SQL, a primary with one
 * standby whose replay was paused) and Redis INFO replication (Redis 7.0).
 */
import { describe, expect, it } from "vitest";
import { PG_STATUS_SQL, parsePgStatus } from "../../lib/status/postgres";
import { parseInfo, parseRedisReplication, parseReplicaEntry, redisCliScript } from "../../lib/status/redis";
import { StatusParseError } from "../../lib/status/errors";
import { parseInfo as rigParseInfo } from "../rig/redis";

const PRIMARY =
  '{"slots": [{"active": false, "slot_name": "synaxic_old", "slot_type": "physical", "wal_status": "reserved", "restart_lsn": "0/2000028", "retained_bytes": 18106192}, {"active": true, "slot_name": "synaxic_replica_1", "slot_type": "physical", "wal_status": "reserved", "restart_lsn": "0/3144778", "retained_bytes": 0}], "lag_bytes": null, "replay_lsn": null, "current_lsn": "0/3144778", "in_recovery": false, "receive_lsn": null, "replication": [{"state": "streaming", "sent_lsn": "0/3144778", "flush_lag": 0.016514, "flush_lsn": "0/3144778", "lag_bytes": 1329016, "write_lag": 0.015732, "write_lsn": "0/3144778", "replay_lag": 0.016514, "replay_lsn": "0/3000000", "sync_state": "async", "client_addr": "10.0.0.2", "application_name": "replica-1"}], "wal_receiver": null, "replay_paused": null}\n';
const STANDBY =
  '{"slots": [], "lag_bytes": 1329016, "replay_lsn": "0/3000000", "current_lsn": null, "in_recovery": true, "receive_lsn": "0/3144778", "replication": [], "wal_receiver": {"status": "streaming", "slot_name": "synaxic_replica_1", "sender_host": "10.0.0.1", "sender_port": 5432}, "replay_paused": true}\n';

describe("PostgreSQL status query", () => {
  it("measures lag from LSNs and the walsender, never from the last replayed transaction's timestamp", () => {
    expect(PG_STATUS_SQL).toContain("pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() ELSE pg_catalog.pg_current_wal_lsn() END, replay_lsn) AS lag_bytes");
    expect(PG_STATUS_SQL).toContain("pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn())");
    expect(PG_STATUS_SQL).toContain("extract(epoch FROM replay_lag) AS replay_lag");
    expect(PG_STATUS_SQL).toContain("restart_lsn) AS retained_bytes");
    expect(PG_STATUS_SQL).not.toMatch(/last_xact_replay_timestamp/);
    // now() only for the server's uptime and the archiver's ages, never for lag.
    expect([...PG_STATUS_SQL.matchAll(/now\(\) - ([a-z_.]+(\(\))?)/g)].map((m) => m[1])).toEqual(["pg_catalog.pg_postmaster_start_time()", "last_archived_time", "last_failed_time"]);
    expect(PG_STATUS_SQL.match(/now\(\)/g)).toHaveLength(3);
  });

  it("asks for the checkpoint's timeline, the start time and the archiver", () => {
    expect(PG_STATUS_SQL).toContain("'timeline', (pg_catalog.pg_control_checkpoint()).timeline_id");
    expect(PG_STATUS_SQL).toContain("'started_at', pg_catalog.pg_postmaster_start_time()");
    expect(PG_STATUS_SQL).toContain("FROM pg_catalog.pg_stat_archiver");
    expect(PG_STATUS_SQL).toContain("'archive_mode', pg_catalog.current_setting('archive_mode')");
  });

  it("parses the timeline, uptime and archiver; their absence (an older query) reads as unknown", () => {
    const withExtras = JSON.parse(PRIMARY) as Record<string, unknown>;
    Object.assign(withExtras, {
      timeline: 2,
      started_at: "2026-11-30T14:02:11.093114+00:00",
      uptime_seconds: 125.000513,
      archive_mode: "on",
      archiver: { archived_count: 7, last_archived_wal: "000000020000000000000007", last_archived_age: 3.5, failed_count: 1, last_failed_wal: "000000010000000000000003", last_failed_age: 600.25 },
    });
    const f = parsePgStatus(JSON.stringify(withExtras));
    expect([f.timeline, f.startedAt, f.uptimeSeconds, f.archiveMode]).toEqual([2, "2026-11-30T14:02:11.093114+00:00", 125.000513, "on"]);
    expect(f.archiver).toEqual({ archivedCount: 7, lastArchivedWal: "000000020000000000000007", lastArchivedAgeSeconds: 3.5, failedCount: 1, lastFailedWal: "000000010000000000000003", lastFailedAgeSeconds: 600.25 });
    const old = parsePgStatus(PRIMARY);
    expect([old.timeline, old.startedAt, old.uptimeSeconds, old.archiveMode, old.archiver]).toEqual([null, null, null, null, null]);
    expect(() => parsePgStatus(JSON.stringify({ ...withExtras, timeline: "two" }))).toThrow(/timeline/);
  });

  it("parses a primary: walsenders with LSNs, lag bytes and lag seconds; slots with retained WAL", () => {
    const f = parsePgStatus(PRIMARY);
    expect(f).toEqual({
      inRecovery: false,
      currentLsn: "0/3144778",
      receiveLsn: null,
      replayLsn: null,
      lagBytes: null,
      replayPaused: null,
      timeline: null,
      startedAt: null,
      uptimeSeconds: null,
      archiveMode: null,
      archiver: null,
      walReceiver: null,
      replication: [
        {
          applicationName: "replica-1",
          clientAddr: "10.0.0.2",
          state: "streaming",
          syncState: "async",
          sentLsn: "0/3144778",
          writeLsn: "0/3144778",
          flushLsn: "0/3144778",
          replayLsn: "0/3000000",
          lagBytes: 1329016,
          writeLagSeconds: 0.015732,
          flushLagSeconds: 0.016514,
          replayLagSeconds: 0.016514,
        },
      ],
      slots: [
        { slotName: "synaxic_old", slotType: "physical", active: false, walStatus: "reserved", restartLsn: "0/2000028", retainedBytes: 18106192 },
        { slotName: "synaxic_replica_1", slotType: "physical", active: true, walStatus: "reserved", restartLsn: "0/3144778", retainedBytes: 0 },
      ],
    });
  });

  it("parses a standby: receive and replay LSNs, their difference, paused replay, the WAL receiver", () => {
    const f = parsePgStatus(STANDBY);
    expect(f).toMatchObject({ inRecovery: true, currentLsn: null, receiveLsn: "0/3144778", replayLsn: "0/3000000", lagBytes: 1329016, replayPaused: true });
    expect(f.walReceiver).toEqual({ status: "streaming", senderHost: "10.0.0.1", senderPort: 5432, slotName: "synaxic_replica_1" });
    expect(f.replication).toEqual([]);
    // 0x3144778 - 0x3000000
    expect(f.lagBytes).toBe(0x3144778 - 0x3000000);
  });

  it("accepts the JSON spread over several lines (json_agg's text form)", () => {
    const spread = PRIMARY.replace('}, {"active": true', '}, \n {"active": true');
    expect(spread.split("\n").length).toBeGreaterThan(2);
    expect(parsePgStatus(spread)).toEqual(parsePgStatus(PRIMARY));
  });

  it("refuses output that is empty, not JSON, or not the query's shape, naming the field", () => {
    expect(() => parsePgStatus("")).toThrow(/unexpected psql output: no output/);
    expect(() => parsePgStatus("psql: error: connection refused")).toThrow(/not JSON: psql: error/);
    expect(() => parsePgStatus(PRIMARY.replace('"in_recovery": false', '"in_recovery": "f"'))).toThrow(/in_recovery/);
    expect(() => parsePgStatus(PRIMARY.replace('"replay_lsn": "0/3000000"', '"replay_lsn": "yesterday"'))).toThrow(/replication\.0\.replay_lsn: expected an LSN/);
    expect(() => parsePgStatus(STANDBY.replace('"slots": [], ', ""))).toThrow(StatusParseError);
  });
});

// Captured from redis-server 7.0.15 (INFO replication uses CRLF line ends).
const MASTER_INFO = [
  "# Replication",
  "role:master",
  "connected_slaves:2",
  "slave0:ip=10.0.0.2,port=6380,state=online,offset=5012,lag=0",
  "slave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=1",
  "master_failover_state:no-failover",
  "master_replid:7b4eb1c56c0bc7aa665812da63c15bf3d0f186c1",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:5026",
  "second_repl_offset:-1",
  "repl_backlog_active:1",
  "repl_backlog_size:1048576",
  "repl_backlog_first_byte_offset:1",
  "repl_backlog_histlen:5026",
  "",
].join("\r\n");

const REPLICA_INFO = (link: "up" | "down", downSince: number) =>
  [
    "# Replication",
    "role:slave",
    "master_host:10.0.0.1",
    "master_port:6380",
    `master_link_status:${link}`,
    "master_last_io_seconds_ago:1",
    "master_sync_in_progress:0",
    "slave_read_repl_offset:5012",
    "slave_repl_offset:5012",
    ...(link === "down" ? [`master_link_down_since_seconds:${downSince}`] : []),
    "slave_priority:100",
    "slave_read_only:1",
    "replica_announced:1",
    "connected_slaves:0",
    "master_failover_state:no-failover",
    "master_replid:7b4eb1c56c0bc7aa665812da63c15bf3d0f186c1",
    "master_repl_offset:5012",
    "",
  ].join("\r\n");

describe("Redis INFO replication", () => {
  it("parseInfo gives field → value, skipping section headers; the rig uses the same parser", () => {
    expect(parseInfo("# Replication\r\nrole:master\r\nmaster_replid:ab:cd\r\n")).toEqual({ role: "master", master_replid: "ab:cd" });
    expect(rigParseInfo).toBe(parseInfo);
  });

  it("reads a master: its replicas with ip, port, state, offset and lag, and its offset", () => {
    expect(parseRedisReplication(MASTER_INFO)).toEqual({
      role: "master",
      connectedSlaves: 2,
      slaves: [
        { ip: "10.0.0.2", port: 6380, state: "online", offset: 5012, lag: 0 },
        { ip: "10.0.0.3", port: 6380, state: "wait_bgsave", offset: 0, lag: 1 },
      ],
      masterReplOffset: 5026,
      masterHost: null,
      masterPort: null,
      masterLinkStatus: null,
      slaveReplOffset: null,
      masterLastIoSecondsAgo: null,
      masterLinkDownSinceSeconds: null,
    });
  });

  it("reads a replica: its master, link status, offsets, and how long the link has been down", () => {
    expect(parseRedisReplication(REPLICA_INFO("up", 0))).toMatchObject({
      role: "slave",
      masterHost: "10.0.0.1",
      masterPort: 6380,
      masterLinkStatus: "up",
      slaveReplOffset: 5012,
      masterReplOffset: 5012,
      masterLinkDownSinceSeconds: null,
      slaves: [],
    });
    expect(parseRedisReplication(REPLICA_INFO("down", 17))).toMatchObject({ masterLinkStatus: "down", masterLinkDownSinceSeconds: 17 });
  });

  it("orders replicas by their slaveN index, not by text (slave10 after slave9)", () => {
    const lines = ["role:master", "connected_slaves:11", "master_repl_offset:1"];
    for (let i = 10; i >= 0; i--) lines.push(`slave${i}:ip=10.0.1.${i},port=6380,state=online,offset=${i},lag=0`);
    expect(parseRedisReplication(lines.join("\n")).slaves.map((s) => s.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("refuses replies that are not INFO replication: an error reply, an unknown role, a broken replica entry", () => {
    expect(() => parseRedisReplication("NOAUTH Authentication required.\n")).toThrow(/no role field \(NOAUTH Authentication required\.\)/);
    expect(() => parseRedisReplication("")).toThrow(/empty reply/);
    expect(() => parseRedisReplication("role:sentinel\n")).toThrow(/role "sentinel"/);
    expect(() => parseReplicaEntry("ip=10.0.0.2,port=6380,state=online,lag=0")).toThrow(/no numeric offset/);
    expect(() => parseRedisReplication("role:master\nmaster_repl_offset:lots\n")).toThrow(/master_repl_offset is "lots"/);
  });
});

describe("redis-cli script", () => {
  it("reads the password from standard input into REDISCLI_AUTH and runs redis-cli over TLS with quoted arguments", () => {
    const s = redisCliScript({ caFile: "/etc/synaxic/tls/ca.crt", port: 6380, user: "admin", args: ["INFO", "replication"] });
    expect(s).toBe(
      "IFS= read -r REDISCLI_AUTH || [ -n \"$REDISCLI_AUTH\" ] || { echo 'no password on standard input' >&2; exit 2; }; export REDISCLI_AUTH; " +
        "exec redis-cli --tls --cacert /etc/synaxic/tls/ca.crt -h 127.0.0.1 -p 6380 --user admin --no-auth-warning INFO replication </dev/null",
    );
    expect(redisCliScript({ caFile: "/x y/ca.crt", port: 1, user: "a", args: ["GET", "it's"] })).toContain("--cacert '/x y/ca.crt'");
    expect(redisCliScript({ caFile: "/ca", port: 1, user: "a", args: ["GET", "it's"] })).toContain(`GET 'it'\\''s'`);
    expect(() => redisCliScript({ caFile: "/ca", port: 1, user: "a", args: [] })).toThrow(/no command/);
  });
});
