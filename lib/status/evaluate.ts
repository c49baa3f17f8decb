/**
 * Judges the gathered facts against what the stacks say should exist and a
 * few thresholds. Pure: the same facts always give the same problems, in a
 * stable order (host by host, as the report prints them).
 */
import type { ExpectedReplica, FleetExpectation, FleetFacts, Gathered, HostFacts, PgFacts, Problem, RedisReplicationFacts, Thresholds } from "./types";

const BAD_WAL_STATUS = new Set(["lost", "unreserved"]);

export function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[u]}`;
}

/** The problems of the fleet; none means healthy. */
export function evaluate(expect: FleetExpectation, facts: FleetFacts, t: Thresholds): Problem[] {
  const problems: Problem[] = [];
  const add = (p: Problem) => problems.push(p);

  for (const u of expect.unknownReplicaStacks) {
    add({
      kind: "replica-stack-unknown",
      host: u.replicaName,
      message: `stack ${u.stack} runs replica ${u.replicaName}, which the main stack's fleet does not list: add it to the main stack's replicas, or destroy that stack`,
    });
  }

  // The main host.
  unreachable(facts.main, add);
  const pg = facts.main.postgres;
  if (!pg.ok && !pg.connection) add({ kind: "postgres-unavailable", host: facts.main.name, message: `PostgreSQL did not answer: ${pg.error}` });
  if (pg.ok) primaryProblems(facts.main.name, pg.value, expect, t, add);
  const redis = facts.main.redis;
  if (!redis.ok && !redis.connection) add({ kind: "redis-unavailable", host: facts.main.name, message: `Redis did not answer: ${redis.error}` });
  if (redis.ok) redisMasterProblems(facts.main.name, redis.value, expect, facts, t, add);

  hostExtras(facts.main, t, add);

  // Each replica host that was checked.
  for (const host of facts.replicas) {
    const r = expect.replicas.find((x) => x.name === host.name);
    unreachable(host, add);
    if (!host.postgres.ok && !host.postgres.connection) add({ kind: "postgres-unavailable", host: host.name, message: `PostgreSQL did not answer: ${host.postgres.error}` });
    if (host.postgres.ok) replicaPgProblems(host.name, host.postgres.value, r, expect, t, add);
    if (!host.redis.ok && !host.redis.connection) add({ kind: "redis-unavailable", host: host.name, message: `Redis did not answer: ${host.redis.error}` });
    if (host.redis.ok) replicaRedisProblems(host.name, host.redis.value, r, expect, add);
    hostExtras(host, t, add);
  }
  return problems;
}

/**
 * WAL archiving that fails now (the last failure is newer than the last
 * success) on any host; and, when a largest backup age is set, a newest
 * backup older than that or none at all. Shown but not judged otherwise: a
 * fresh fleet has no backup until its first scheduled one.
 */
function hostExtras(host: HostFacts, t: Thresholds, add: (p: Problem) => void): void {
  const pg = host.postgres;
  const a = pg.ok ? pg.value.archiver : null;
  if (a && a.failedCount > 0 && a.lastFailedAgeSeconds !== null && (a.lastArchivedAgeSeconds === null || a.lastFailedAgeSeconds < a.lastArchivedAgeSeconds)) {
    add({
      kind: "archive-failing",
      host: host.name,
      message: `WAL archiving fails: ${a.lastFailedWal ?? "a segment"} failed ${Math.round(a.lastFailedAgeSeconds)} s ago, after the last success${a.lastArchivedAgeSeconds === null ? " (none yet)" : ""}; see the PostgreSQL log`,
    });
  }
  const b = host.backup;
  if (t.maxBackupAgeSeconds !== null && b?.ok) {
    const n = b.value.newest;
    if (!n) add({ kind: "backup-stale", host: host.name, message: `the repository holds no backup (stanza ${b.value.stanza}: ${b.value.status.message})` });
    else if (n.ageSeconds > t.maxBackupAgeSeconds) {
      add({ kind: "backup-stale", host: host.name, message: `the newest backup ${n.label} (${n.type}) is ${Math.round(n.ageSeconds)} s old (> ${t.maxBackupAgeSeconds} s)` });
    }
  }
}

function unreachable(host: HostFacts, add: (p: Problem) => void): void {
  const failed = [host.postgres, host.redis].find((g): g is Extract<Gathered<unknown>, { ok: false }> => !g.ok && g.connection);
  if (failed) add({ kind: "host-unreachable", host: host.name, message: failed.error });
}

function primaryProblems(host: string, f: PgFacts, expect: FleetExpectation, t: Thresholds, add: (p: Problem) => void): void {
  if (f.inRecovery) {
    add({ kind: "primary-in-recovery", host, message: "PostgreSQL on the main host is in recovery (a standby), not the primary" });
    return;
  }
  for (const r of expect.replicas) {
    // A promoted replica no longer streams from main.
    if (r.postgresMode === "promoted") continue;
    const row = f.replication.find((x) => x.applicationName === r.name) ?? f.replication.find((x) => x.clientAddr === r.privateIp);
    if (!row) {
      add({ kind: "replica-missing", host, subject: r.name, message: `${r.name} (${r.privateIp}) is not in pg_stat_replication: it is not connected to the primary` });
    } else {
      if (row.state !== "streaming") {
        add({ kind: "replica-not-streaming", host, subject: r.name, message: `${r.name} is connected but its state is ${row.state}, not streaming` });
      }
      if (row.lagBytes !== null && row.lagBytes > t.maxLagBytes) {
        add({
          kind: "lag-bytes",
          host,
          subject: r.name,
          message: `${r.name} has not replayed ${formatBytes(row.lagBytes)} of WAL (${row.lagBytes} bytes > ${t.maxLagBytes})`,
        });
      }
      if (row.replayLagSeconds !== null && row.replayLagSeconds > t.maxReplayLagSeconds) {
        add({
          kind: "replay-lag",
          host,
          subject: r.name,
          message: `${r.name}'s replay_lag is ${row.replayLagSeconds.toFixed(3)} s (> ${t.maxReplayLagSeconds} s)`,
        });
      }
    }
    const slot = f.slots.find((s) => s.slotName === r.slotName);
    if (!slot) {
      add({ kind: "slot-missing", host, subject: r.slotName, message: `slot ${r.slotName} of ${r.name} does not exist: the primary keeps no WAL for it` });
      continue;
    }
    if (!slot.active) {
      const held = slot.retainedBytes !== null ? `, holding ${formatBytes(slot.retainedBytes)} of WAL` : "";
      add({ kind: "slot-inactive", host, subject: r.slotName, message: `slot ${r.slotName} of ${r.name} is inactive${held}` });
    }
    if (slot.walStatus !== null && BAD_WAL_STATUS.has(slot.walStatus)) {
      add({
        kind: "slot-wal-status",
        host,
        subject: r.slotName,
        message:
          slot.walStatus === "lost"
            ? `slot ${r.slotName} of ${r.name} has lost WAL it needed (wal_status lost): re-initialise ${r.name}`
            : `slot ${r.slotName} of ${r.name} is about to lose WAL (wal_status unreserved, past max_slot_wal_keep_size)`,
      });
    }
  }
  const expected = new Set(expect.replicas.map((r) => r.slotName));
  for (const s of f.slots) {
    if (expected.has(s.slotName)) continue;
    const held = s.retainedBytes !== null ? ` and holds ${formatBytes(s.retainedBytes)} of WAL` : "";
    add({
      kind: "slot-unexpected",
      host,
      subject: s.slotName,
      message: `slot ${s.slotName} belongs to no replica of the fleet${held}; drop it if its replica is gone`,
    });
  }
}

function replicaPgProblems(host: string, f: PgFacts, r: ExpectedReplica | undefined, expect: FleetExpectation, t: Thresholds, add: (p: Problem) => void): void {
  const mode = r?.postgresMode ?? "replica";
  if (mode === "promoted") {
    if (f.inRecovery) add({ kind: "promotion-incomplete", host, message: "its stack says promoted, but PostgreSQL is still in recovery" });
    return;
  }
  if (!f.inRecovery) {
    add({
      kind: "not-in-recovery",
      host,
      message: `PostgreSQL is not in recovery: it accepts writes apart from the primary on ${expect.main.name}, but its stack says postgresMode=${mode}`,
    });
    return;
  }
  const w = f.walReceiver;
  if (!w || w.status !== "streaming") {
    add({ kind: "wal-receiver", host, message: w ? `the WAL receiver is ${w.status}, not streaming` : "no WAL receiver is running: this standby receives nothing from the primary" });
  }
  if (f.lagBytes !== null && f.lagBytes > t.maxLagBytes) {
    add({ kind: "lag-bytes", host, message: `received but not replayed: ${formatBytes(f.lagBytes)} (${f.lagBytes} bytes > ${t.maxLagBytes})` });
  }
  if (f.replayPaused) add({ kind: "replay-paused", host, message: "WAL replay is paused (pg_wal_replay_pause()); resume it with SELECT pg_wal_replay_resume()" });
}

function redisMasterProblems(host: string, m: RedisReplicationFacts, expect: FleetExpectation, facts: FleetFacts, t: Thresholds, add: (p: Problem) => void): void {
  if (m.role !== "master") {
    add({ kind: "redis-role", host, message: `Redis on the main host is a replica (of ${m.masterHost}:${m.masterPort}), not the master` });
    return;
  }
  for (const r of expect.replicas) {
    if (r.redisRole === "master") continue;
    const entry = m.slaves.find((s) => s.ip === r.privateIp && s.port === expect.redisPort) ?? m.slaves.find((s) => s.ip === r.privateIp);
    if (!entry) {
      add({ kind: "redis-replica-missing", host, subject: r.name, message: `${r.name} (${r.privateIp}) is not among the Redis master's replicas` });
    } else if (entry.state !== "online") {
      add({ kind: "redis-replica-missing", host, subject: r.name, message: `${r.name} is connected to the Redis master but in state ${entry.state}, not online` });
    }
    // The master's view of the replica's acknowledged offset, else the replica's own.
    let offset: number | null = entry && entry.state === "online" ? entry.offset : null;
    if (offset === null) {
      const own = facts.replicas.find((h) => h.name === r.name)?.redis;
      if (own?.ok && own.value.role === "slave" && own.value.masterLinkStatus === "up") offset = own.value.slaveReplOffset;
    }
    if (offset !== null && m.masterReplOffset - offset > t.maxRedisOffsetLag) {
      const behind = m.masterReplOffset - offset;
      add({
        kind: "redis-offset-lag",
        host,
        subject: r.name,
        message: `${r.name}'s Redis is ${formatBytes(behind)} behind the master (${behind} bytes > ${t.maxRedisOffsetLag})`,
      });
    }
  }
}

function replicaRedisProblems(host: string, f: RedisReplicationFacts, r: ExpectedReplica | undefined, expect: FleetExpectation, add: (p: Problem) => void): void {
  if ((r?.redisRole ?? "replica") === "master") {
    if (f.role !== "master") add({ kind: "redis-role", host, message: `its stack says Redis was promoted, but it is still a replica of ${f.masterHost}:${f.masterPort}` });
    return;
  }
  if (f.role !== "slave") {
    add({ kind: "redis-role", host, message: `Redis is a master, not a replica of ${expect.main.name} (${expect.main.privateIp}:${expect.redisPort})` });
    return;
  }
  if (f.masterLinkStatus !== "up") {
    const since = f.masterLinkDownSinceSeconds !== null && f.masterLinkDownSinceSeconds >= 0 ? ` for ${f.masterLinkDownSinceSeconds} s` : "";
    add({ kind: "redis-link-down", host, message: `master_link_status is ${f.masterLinkStatus ?? "absent"}${since}: the link to ${f.masterHost}:${f.masterPort} is broken` });
  }
}
