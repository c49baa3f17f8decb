/**
 * The evaluator (one case per problem kind, each against an otherwise
 * healthy fleet, plus the thresholds' edges) and the report's text (snapshots)
 * and JSON.
 */
import { describe, expect, it } from "vitest";
import { evaluate, formatBytes } from "../../lib/status/evaluate";
import { buildReport, formatReport, formatReportJson, table, verdictOf } from "../../lib/status/format";
import type { FleetExpectation, FleetFacts, HostFacts, PgFacts, Problem, RedisReplicationFacts, Thresholds } from "../../lib/status/types";

const T: Thresholds = { maxLagBytes: 1000, maxReplayLagSeconds: 5, maxRedisOffsetLag: 500, maxBackupAgeSeconds: null };
const R = [
  { name: "replica-1", ip: "10.0.0.2", slot: "synaxic_replica_1" },
  { name: "replica-2", ip: "10.0.0.3", slot: "synaxic_replica_2" },
];

function expectation(): FleetExpectation {
  return {
    main: { name: "main", privateIp: "10.0.0.1" },
    redisPort: 6380,
    replicas: R.map((r) => ({ name: r.name, privateIp: r.ip, slotName: r.slot, checked: true, postgresMode: "replica", redisRole: "replica" })),
    unknownReplicaStacks: [],
  };
}

function primaryPg(): PgFacts {
  return {
    inRecovery: false,
    currentLsn: "0/3000148",
    receiveLsn: null,
    replayLsn: null,
    lagBytes: null,
    replayPaused: null,
    timeline: 1,
    startedAt: "2026-11-28T09:00:00.000+00:00",
    uptimeSeconds: 2 * 86400 + 3 * 3600 + 125,
    archiveMode: "on",
    archiver: { archivedCount: 42, lastArchivedWal: "00000001000000000000002A", lastArchivedAgeSeconds: 35, failedCount: 0, lastFailedWal: null, lastFailedAgeSeconds: null },
    walReceiver: null,
    replication: R.map((r, i) => ({
      applicationName: r.name,
      clientAddr: r.ip,
      state: "streaming",
      syncState: "async",
      sentLsn: "0/3000148",
      writeLsn: "0/3000148",
      flushLsn: "0/3000148",
      replayLsn: i === 0 ? "0/3000148" : "0/3000060",
      lagBytes: i === 0 ? 0 : 232,
      writeLagSeconds: i === 0 ? null : 0.0012,
      flushLagSeconds: i === 0 ? null : 0.0021,
      replayLagSeconds: i === 0 ? null : 0.0034,
    })),
    slots: R.map((r, i) => ({ slotName: r.slot, slotType: "physical", active: true, walStatus: "reserved", restartLsn: i === 0 ? "0/3000148" : "0/3000060", retainedBytes: i === 0 ? 0 : 232 })),
  };
}

function standbyPg(i: number): PgFacts {
  return {
    inRecovery: true,
    currentLsn: null,
    receiveLsn: "0/3000148",
    replayLsn: i === 0 ? "0/3000148" : "0/3000060",
    lagBytes: i === 0 ? 0 : 232,
    replayPaused: false,
    timeline: 1,
    startedAt: "2026-11-30T08:00:00.000+00:00",
    uptimeSeconds: 3600 * (i + 1) + 60,
    archiveMode: "on",
    archiver: { archivedCount: 0, lastArchivedWal: null, lastArchivedAgeSeconds: null, failedCount: 0, lastFailedWal: null, lastFailedAgeSeconds: null },
    walReceiver: { status: "streaming", senderHost: "10.0.0.1", senderPort: 5432, slotName: R[i]!.slot },
    replication: [],
    slots: [],
  };
}

function masterRedis(): RedisReplicationFacts {
  return {
    role: "master",
    connectedSlaves: 2,
    slaves: R.map((r, i) => ({ ip: r.ip, port: 6380, state: "online", offset: 9000 - i * 100, lag: i })),
    masterReplOffset: 9000,
    masterHost: null,
    masterPort: null,
    masterLinkStatus: null,
    slaveReplOffset: null,
    masterLastIoSecondsAgo: null,
    masterLinkDownSinceSeconds: null,
  };
}

function replicaRedis(i: number): RedisReplicationFacts {
  return {
    role: "slave",
    connectedSlaves: 0,
    slaves: [],
    masterReplOffset: 9000 - i * 100,
    masterHost: "10.0.0.1",
    masterPort: 6380,
    masterLinkStatus: "up",
    slaveReplOffset: 9000 - i * 100,
    masterLastIoSecondsAgo: 0,
    masterLinkDownSinceSeconds: null,
  };
}

function healthy(): FleetFacts {
  const ok = <V>(value: V) => ({ ok: true as const, value });
  return {
    main: { name: "main", postgres: ok(primaryPg()), redis: ok(masterRedis()), backup: null },
    replicas: R.map((r, i) => ({ name: r.name, postgres: ok(standbyPg(i)), redis: ok(replicaRedis(i)), backup: null })),
  };
}

/** Mutable views into the facts, for the cases below. */
function pgOf(h: HostFacts): PgFacts {
  if (!h.postgres.ok) throw new Error("no pg");
  return h.postgres.value;
}
function redisOf(h: HostFacts): RedisReplicationFacts {
  if (!h.redis.ok) throw new Error("no redis");
  return h.redis.value;
}

const summary = (ps: Problem[]) => ps.map((p) => [p.kind, p.host, p.subject ?? null]);

function problemsAfter(change: (f: FleetFacts, e: FleetExpectation) => void, t: Thresholds = T): Problem[] {
  const f = healthy();
  const e = expectation();
  change(f, e);
  return evaluate(e, f, t);
}

describe("evaluator", () => {
  it("finds nothing wrong in a healthy fleet", () => {
    expect(evaluate(expectation(), healthy(), T)).toEqual([]);
  });

  it("host-unreachable: once per host, instead of each service's failure", () => {
    const ps = problemsAfter((f) => {
      f.replicas[0]!.postgres = { ok: false, error: "cannot reach replica-1: ssh: connect to host 203.0.113.2 port 22: Connection timed out", connection: true };
      f.replicas[0]!.redis = { ok: false, error: "cannot reach replica-1: ssh: connect to host 203.0.113.2 port 22: Connection timed out", connection: true };
    });
    expect(summary(ps)).toEqual([["host-unreachable", "replica-1", null]]);
    expect(ps[0]!.message).toMatch(/Connection timed out/);
  });

  it("postgres-unavailable and redis-unavailable: the host answered, its server did not", () => {
    const ps = problemsAfter((f) => {
      f.replicas[1]!.postgres = { ok: false, error: "psql on replica-2 failed: exit 1: Error response from daemon: container is not running", connection: false };
      f.main.redis = { ok: false, error: "redis-cli INFO replication on main failed: exit 1: Could not connect to Redis at 127.0.0.1:6380: Connection refused", connection: false };
    });
    expect(summary(ps)).toEqual([
      ["redis-unavailable", "main", null],
      ["postgres-unavailable", "replica-2", null],
    ]);
    expect(ps[1]!.message).toContain("container is not running");
  });

  it("primary-in-recovery: main's PostgreSQL is a standby (and its walsender view is not judged)", () => {
    const ps = problemsAfter((f) => {
      Object.assign(pgOf(f.main), { inRecovery: true, replication: [], slots: [] });
    });
    expect(summary(ps)).toEqual([["primary-in-recovery", "main", null]]);
  });

  it("replica-missing and replica-not-streaming", () => {
    const ps = problemsAfter((f) => {
      const pg = pgOf(f.main);
      pg.replication = pg.replication.filter((r) => r.applicationName !== "replica-2");
      pg.replication[0]!.state = "catchup";
    });
    expect(summary(ps)).toEqual([
      ["replica-not-streaming", "main", "replica-1"],
      ["replica-missing", "main", "replica-2"],
    ]);
    expect(ps[0]!.message).toContain("catchup");
    expect(ps[1]!.message).toContain("10.0.0.3");
  });

  it("matches a walsender by client address when its application_name differs", () => {
    expect(problemsAfter((f) => (pgOf(f.main).replication[1]!.applicationName = "walreceiver"))).toEqual([]);
  });

  it("slot-missing, slot-inactive, slot-wal-status (lost, unreserved) and slot-unexpected", () => {
    const ps = problemsAfter((f) => {
      const pg = pgOf(f.main);
      pg.slots = [
        { ...pg.slots[0]!, active: false, walStatus: "lost", retainedBytes: null, restartLsn: null },
        { slotName: "synaxic_gone", slotType: "physical", active: false, walStatus: "extended", restartLsn: "0/1000000", retainedBytes: 3 * 1024 * 1024 },
      ];
    });
    expect(summary(ps)).toEqual([
      ["slot-inactive", "main", "synaxic_replica_1"],
      ["slot-wal-status", "main", "synaxic_replica_1"],
      ["slot-missing", "main", "synaxic_replica_2"],
      ["slot-unexpected", "main", "synaxic_gone"],
    ]);
    expect(ps[1]!.message).toMatch(/lost WAL.*re-initialise replica-1/);
    expect(ps[3]!.message).toContain("3.0 MiB");
    const unreserved = problemsAfter((f) => (pgOf(f.main).slots[1]!.walStatus = "unreserved"));
    expect(summary(unreserved)).toEqual([["slot-wal-status", "main", "synaxic_replica_2"]]);
    expect(unreserved[0]!.message).toMatch(/unreserved/);
    // "extended" is WAL kept past max_wal_size within max_slot_wal_keep_size: not a problem.
    expect(problemsAfter((f) => (pgOf(f.main).slots[1]!.walStatus = "extended"))).toEqual([]);
  });

  it("lag-bytes: over the threshold only, on the primary's view and the standby's", () => {
    expect(problemsAfter((f) => (pgOf(f.main).replication[1]!.lagBytes = T.maxLagBytes))).toEqual([]);
    expect(problemsAfter((f) => (pgOf(f.replicas[1]!).lagBytes = T.maxLagBytes))).toEqual([]);
    const ps = problemsAfter((f) => {
      pgOf(f.main).replication[1]!.lagBytes = T.maxLagBytes + 1;
      pgOf(f.replicas[0]!).lagBytes = 5 * 1024 * 1024;
    });
    expect(summary(ps)).toEqual([
      ["lag-bytes", "main", "replica-2"],
      ["lag-bytes", "replica-1", null],
    ]);
    expect(ps[0]!.message).toContain("1001 bytes > 1000");
    expect(ps[1]!.message).toContain("5.0 MiB");
    // A larger threshold accepts the same lag.
    expect(problemsAfter((f) => (pgOf(f.replicas[0]!).lagBytes = 5 * 1024 * 1024), { ...T, maxLagBytes: 16 * 1024 * 1024 })).toEqual([]);
  });

  it("replay-lag: the walsender's replay_lag over the threshold; null (caught up, idle) is fine", () => {
    expect(problemsAfter((f) => (pgOf(f.main).replication[0]!.replayLagSeconds = null))).toEqual([]);
    expect(problemsAfter((f) => (pgOf(f.main).replication[0]!.replayLagSeconds = 5))).toEqual([]);
    const ps = problemsAfter((f) => (pgOf(f.main).replication[0]!.replayLagSeconds = 12.3456));
    expect(summary(ps)).toEqual([["replay-lag", "main", "replica-1"]]);
    expect(ps[0]!.message).toContain("12.346 s (> 5 s)");
  });

  it("not-in-recovery: a replica host that accepts writes while its stack says replica", () => {
    const ps = problemsAfter((f) => Object.assign(pgOf(f.replicas[0]!), { inRecovery: false, walReceiver: null, lagBytes: null }));
    expect(summary(ps)).toEqual([["not-in-recovery", "replica-1", null]]);
  });

  it("a promoted replica is expected out of recovery and off the primary; promotion-incomplete while it is still in recovery", () => {
    const promote = (f: FleetFacts, e: FleetExpectation) => {
      e.replicas[1]!.postgresMode = "promoted";
      const pg = pgOf(f.main);
      pg.replication = pg.replication.filter((r) => r.applicationName !== "replica-2");
      pg.slots[1]!.active = false;
    };
    expect(problemsAfter((f, e) => {
      promote(f, e);
      Object.assign(pgOf(f.replicas[1]!), { inRecovery: false, walReceiver: null, lagBytes: null });
    })).toEqual([]);
    expect(summary(problemsAfter(promote))).toEqual([["promotion-incomplete", "replica-2", null]]);
  });

  it("wal-receiver: absent or not streaming", () => {
    expect(summary(problemsAfter((f) => (pgOf(f.replicas[0]!).walReceiver = null)))).toEqual([["wal-receiver", "replica-1", null]]);
    const ps = problemsAfter((f) => (pgOf(f.replicas[1]!).walReceiver!.status = "waiting"));
    expect(summary(ps)).toEqual([["wal-receiver", "replica-2", null]]);
    expect(ps[0]!.message).toContain("waiting");
  });

  it("replay-paused", () => {
    expect(summary(problemsAfter((f) => (pgOf(f.replicas[1]!).replayPaused = true)))).toEqual([["replay-paused", "replica-2", null]]);
  });

  it("redis-link-down: master_link_status is not up", () => {
    const ps = problemsAfter((f) => Object.assign(redisOf(f.replicas[0]!), { masterLinkStatus: "down", masterLinkDownSinceSeconds: 42 }));
    expect(summary(ps)).toEqual([["redis-link-down", "replica-1", null]]);
    expect(ps[0]!.message).toBe("master_link_status is down for 42 s: the link to 10.0.0.1:6380 is broken");
  });

  it("redis-replica-missing: not among the master's replicas, or not online there", () => {
    const ps = problemsAfter((f) => {
      const m = redisOf(f.main);
      m.slaves = [{ ...m.slaves[0]!, state: "wait_bgsave" }];
    });
    expect(summary(ps)).toEqual([
      ["redis-replica-missing", "main", "replica-1"],
      ["redis-replica-missing", "main", "replica-2"],
    ]);
    expect(ps[0]!.message).toContain("wait_bgsave");
    expect(ps[1]!.message).toContain("not among");
  });

  it("redis-offset-lag: the master's offset minus the replica's acknowledged one, over the threshold", () => {
    expect(problemsAfter((f) => (redisOf(f.main).slaves[1]!.offset = 9000 - T.maxRedisOffsetLag))).toEqual([]);
    const ps = problemsAfter((f) => (redisOf(f.main).slaves[1]!.offset = 9000 - T.maxRedisOffsetLag - 1));
    expect(summary(ps)).toEqual([["redis-offset-lag", "main", "replica-2"]]);
    expect(ps[0]!.message).toContain("501 bytes > 500");
    // Without the master's entry, the replica's own offset is used (when its link is up).
    const own = problemsAfter((f) => {
      const m = redisOf(f.main);
      m.slaves = m.slaves.slice(0, 1);
      redisOf(f.replicas[1]!).slaveReplOffset = 1000;
    });
    expect(summary(own)).toEqual([
      ["redis-replica-missing", "main", "replica-2"],
      ["redis-offset-lag", "main", "replica-2"],
    ]);
  });

  it("redis-role: main's Redis is a replica; a replica's Redis is a master its stack did not promote; a promoted one still a replica", () => {
    expect(summary(problemsAfter((f) => Object.assign(redisOf(f.main), replicaRedis(0))))).toEqual([["redis-role", "main", null]]);
    expect(summary(problemsAfter((f) => Object.assign(redisOf(f.replicas[0]!), masterRedis(), { slaves: [], connectedSlaves: 0 })))).toEqual([["redis-role", "replica-1", null]]);
    const promoted = (e: FleetExpectation) => (e.replicas[1]!.redisRole = "master");
    // Promoted: off the master's list, a master itself: fine.
    expect(
      problemsAfter((f, e) => {
        promoted(e);
        redisOf(f.main).slaves.pop();
        Object.assign(redisOf(f.replicas[1]!), masterRedis(), { slaves: [], connectedSlaves: 0 });
      }),
    ).toEqual([]);
    expect(
      summary(
        problemsAfter((f, e) => {
          promoted(e);
          redisOf(f.main).slaves.pop();
        }),
      ),
    ).toEqual([["redis-role", "replica-2", null]]);
  });

  it("replica-stack-unknown: a replica stack the main stack does not list", () => {
    const ps = problemsAfter((_f, e) => e.unknownReplicaStacks.push({ stack: "acme/synaxic/replica-9", replicaName: "replica-9" }));
    expect(summary(ps)).toEqual([["replica-stack-unknown", "replica-9", null]]);
    expect(ps[0]!.message).toContain("acme/synaxic/replica-9");
  });

  it("an unchecked replica (its stack not given) is still judged from the primary and the Redis master", () => {
    const ps = problemsAfter((f, e) => {
      e.replicas[1]!.checked = false;
      f.replicas.pop();
      pgOf(f.main).slots[1]!.active = false;
    });
    expect(summary(ps)).toEqual([["slot-inactive", "main", "synaxic_replica_2"]]);
  });
});

describe("report", () => {
  it("formats bytes", () => {
    expect([formatBytes(0), formatBytes(1023), formatBytes(1024), formatBytes(5 * 1024 * 1024 + 1)]).toEqual(["0 bytes", "1023 bytes", "1.0 KiB", "5.0 MiB"]);
  });

  it("aligns tables like psql, numbers to the right", () => {
    expect(table(["name", "n"], [["a", "1"], ["bbb", "100"]], new Set([1]))).toBe("name |   n\n-----+----\na    |   1\nbbb  | 100");
  });

  it("prints a healthy fleet: walsenders, slots, replicas, Redis, verdict", () => {
    const report = buildReport(expectation(), healthy(), T);
    expect(verdictOf(report)).toBe("healthy");
    expect(formatReport(report)).toMatchSnapshot();
  });

  it("prints an unhealthy fleet with each problem and the verdict", () => {
    const f = healthy();
    const e = expectation();
    const pg = pgOf(f.main);
    pg.replication = pg.replication.slice(0, 1);
    pg.replication[0]!.lagBytes = 4096;
    pg.slots[1]!.active = false;
    f.replicas[1]!.postgres = { ok: false, error: "psql on replica-2 failed: exit 1: Error response from daemon: container synaxic-replica-2-postgres is not running", connection: false };
    Object.assign(pgOf(f.replicas[0]!), { lagBytes: 4096, replayPaused: true, replayLsn: "0/2FFF148" });
    Object.assign(redisOf(f.replicas[1]!), { masterLinkStatus: "down", masterLinkDownSinceSeconds: 7 });
    redisOf(f.main).slaves.pop();
    redisOf(f.main).connectedSlaves = 1;
    const report = buildReport(e, f, T);
    expect(verdictOf(report)).toBe("unhealthy");
    expect(formatReport(report)).toMatchSnapshot();
  });

  it("prints an unreachable host and an unchecked replica; the verdict is incomplete", () => {
    const f = healthy();
    const e = expectation();
    e.replicas[1]!.checked = false;
    f.replicas.pop();
    const err = "cannot reach replica-1: ssh root@203.0.113.2:22: Host key verification failed.";
    f.replicas[0] = { name: "replica-1", postgres: { ok: false, error: err, connection: true }, redis: { ok: false, error: err, connection: true }, backup: null };
    const report = buildReport(e, f, T);
    expect(verdictOf(report)).toBe("incomplete");
    const text = formatReport(report);
    expect(text).toContain("replica-1: unreachable: cannot reach replica-1: ssh root@203.0.113.2:22: Host key verification failed.");
    expect(text).toContain("replica-2: host not checked (name its stack with --replica to check it)");
    expect(text).toMatch(/Verdict: INCOMPLETE, some hosts could not be reached \(1 problem\)\n$/);
  });

  it("prints JSON with the verdict, problems and facts", () => {
    const f = healthy();
    pgOf(f.replicas[0]!).replayPaused = true;
    const json = JSON.parse(formatReportJson(buildReport(expectation(), f, T)));
    expect(json.verdict).toBe("unhealthy");
    expect(json.healthy).toBe(false);
    expect(json.problems.map((p: Problem) => p.kind)).toEqual(["replay-paused"]);
    expect(json.thresholds).toEqual(T);
    expect(json.facts.main.postgres.value.replication[1].lagBytes).toBe(232);
    expect(Object.keys(json)).toEqual(["verdict", "healthy", "incomplete", "problems", "thresholds", "expectation", "facts"]);
  });
});

describe("timeline, uptime, archiver and backups", () => {
  const backups = (newest: { label: string; type: "full" | "diff" | "incr"; ageSeconds: number } | null) => ({
    ok: true as const,
    value: { stanza: "synaxic", status: newest ? { code: 0, message: "ok" } : { code: 2, message: "no valid backups" }, backupCount: newest ? 3 : 0, newest: newest ? { ...newest, stoppedAt: 1_790_000_000 } : null, archiveMax: newest ? "00000001000000000000002A" : null },
  });

  it("prints each host's timeline, uptime and archiver, and the backups when the fleet has them", () => {
    const f = healthy();
    f.main.backup = backups({ label: "20261130-010000F_20261130-020000D", type: "diff", ageSeconds: 5 * 3600 + 600 });
    f.replicas[0]!.backup = { ok: false, error: "pgbackrest info on replica-1 failed: exit 1: ERROR: [055]: unable to load info file", connection: false };
    f.replicas[1]!.backup = backups(null);
    const text = formatReport(buildReport(expectation(), f, T));
    expect(text).toContain("main: timeline 1, up 2 d 3 h (since 2026-11-28T09:00:00.000+00:00), archiver: 42 archived, last 00000001000000000000002A 35 s ago, none failed\n");
    expect(text).toContain("  backups: newest diff 20261130-010000F_20261130-020000D, 5 h 10 min old; 3 in the repository, stanza synaxic ok, WAL archived up to 00000001000000000000002A\n");
    expect(text).toContain("replica-1: timeline 1, up 1 h 1 min (since 2026-11-30T08:00:00.000+00:00), archiver: 0 archived, none failed\n  backups: did not answer: pgbackrest info on replica-1 failed");
    expect(text).toContain("  backups: no backup yet; 0 in the repository, stanza synaxic status 2 (no valid backups)\n");
    // Shown, not judged, without a largest backup age.
    expect(verdictOf(buildReport(expectation(), f, T))).toBe("healthy");
  });

  it("archiving off, and a server that did not report (older query): said so, not judged", () => {
    const f = healthy();
    pgOf(f.main).archiveMode = "off";
    Object.assign(pgOf(f.replicas[0]!), { timeline: null, uptimeSeconds: null, startedAt: null, archiver: null });
    const text = formatReport(buildReport(expectation(), f, T));
    expect(text).toContain("main: timeline 1, up 2 d 3 h (since 2026-11-28T09:00:00.000+00:00), archiving off\n");
    expect(text).toContain("replica-1: timeline -, uptime unknown, archiver unknown\n");
  });

  it("archive-failing: the last failure is newer than the last success (or there was none); an older failure is history", () => {
    const f = healthy();
    const a = pgOf(f.main).archiver!;
    Object.assign(a, { failedCount: 3, lastFailedWal: "00000001000000000000002B", lastFailedAgeSeconds: 10, lastArchivedAgeSeconds: 35 });
    expect(evaluate(expectation(), f, T)).toEqual([
      { kind: "archive-failing", host: "main", message: expect.stringMatching(/^WAL archiving fails: 00000001000000000000002B failed 10 s ago, after the last success; see the PostgreSQL log$/) },
    ]);
    a.lastArchivedAgeSeconds = null;
    expect(evaluate(expectation(), f, T)[0]!.message).toContain("(none yet)");
    Object.assign(a, { lastFailedAgeSeconds: 600, lastArchivedAgeSeconds: 35 });
    expect(evaluate(expectation(), f, T)).toEqual([]);
  });

  it("backup-stale only with a largest age: none at all, or the newest older than it", () => {
    const f = healthy();
    f.main.backup = backups({ label: "20261129-010000F", type: "full", ageSeconds: 30 * 3600 });
    f.replicas[0]!.backup = backups(null);
    expect(evaluate(expectation(), f, T)).toEqual([]);
    const judged = { ...T, maxBackupAgeSeconds: 26 * 3600 };
    expect(evaluate(expectation(), f, judged).map((p) => [p.kind, p.host, p.message])).toEqual([
      ["backup-stale", "main", "the newest backup 20261129-010000F (full) is 108000 s old (> 93600 s)"],
      ["backup-stale", "replica-1", "the repository holds no backup (stanza synaxic: no valid backups)"],
    ]);
    expect(evaluate(expectation(), f, { ...T, maxBackupAgeSeconds: 31 * 3600 }).map((p) => p.host)).toEqual(["replica-1"]);
    expect(formatReport(buildReport(expectation(), f, judged))).toContain("Thresholds: lag 1000 bytes, replay lag 5 s, Redis offset 500 bytes, backup age 93600 s\n");
  });
});
