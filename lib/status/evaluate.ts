/**
 * Judges the gathered facts against what the stacks say should exist and a
 * few thresholds. Pure: the same facts always give the same problems, in a
 * stable order (host by host, as the report prints them).
 */
import { replicaSlotName } from "../../templates/postgres-sql";
import type { ControlExpectation, ExpectedReplica, FleetExpectation, FleetFacts, Gathered, HostFacts, PgFacts, Problem, RedisReplicationFacts, Thresholds } from "./types";

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

/** A fleet member as the primary sees it: a standby it should stream to, through this slot. */
interface Member {
  name: string;
  privateIp: string;
  slotName: string;
  postgresMode: ExpectedReplica["postgresMode"] | "primary";
  redisRole: "master" | "replica";
  controlGeneration?: number;
}

/** The host the fleet's primary is to run on: the control stack's choice, else main. */
export function primaryName(expect: FleetExpectation): string {
  return expect.control?.primary ?? expect.main.name;
}

/** A fenced former primary: recorded so by the control stack and not its primary now. */
export function fencedRecord(expect: FleetExpectation, host: string): { method: string; generation: number } | undefined {
  const c = expect.control;
  return c && c.primary !== host ? c.fenced[host] : undefined;
}

/** The problems of the fleet; none means healthy. */
export function evaluate(expect: FleetExpectation, facts: FleetFacts, t: Thresholds): Problem[] {
  const problems: Problem[] = [];
  const add = (p: Problem) => problems.push(p);
  const control = expect.control ?? null;

  for (const u of expect.unknownReplicaStacks) {
    add({
      kind: "replica-stack-unknown",
      host: u.replicaName,
      message: `stack ${u.stack} runs replica ${u.replicaName}, which the main stack's fleet does not list: add it to the main stack's replicas, or destroy that stack`,
    });
  }

  const primary = primaryName(expect);
  const members: Member[] = [
    { name: expect.main.name, privateIp: expect.main.privateIp, slotName: replicaSlotName(expect.main.name), postgresMode: "primary", redisRole: "master", ...(expect.main.controlGeneration !== undefined ? { controlGeneration: expect.main.controlGeneration } : {}) },
    ...expect.replicas,
  ];
  const primaryMember = members.find((m) => m.name === primary);
  // Without a control stack main is the primary and its standbys are the
  // replicas (a replica whose stack says promoted no longer streams from it).
  // Under one, every other host streams from the recorded primary, except a
  // fenced former primary that is not back yet.
  const followers: Member[] = control ? members.filter((m) => m.name !== primary) : expect.replicas.filter((r) => r.postgresMode !== "promoted");
  const hosts = [facts.main, ...facts.replicas];
  const factsOf = (name: string) => hosts.find((h) => h.name === name);
  const fencedAway = new Set(followers.filter((m) => fencedRecord(expect, m.name) && !backAsStandby(factsOf(m.name))).map((m) => m.name));

  if (control) controlProblems(control, members, hosts, add);

  // The primary's slots for its standbys; without a control stack every replica's (a promoted one's too).
  const slotHolders: readonly Member[] = control ? followers : expect.replicas;
  const standbys = followers.filter((m) => !fencedAway.has(m.name));
  const redisReplicas: readonly Member[] = control ? standbys : expect.replicas;

  for (const host of hosts) {
    if (fencedAway.has(host.name)) {
      fencedProblem(expect, host, add);
      continue;
    }
    unreachable(host, add);
    const pg = host.postgres;
    const redis = host.redis;
    const r = expect.replicas.find((x) => x.name === host.name);
    if (!pg.ok && !pg.connection) add({ kind: "postgres-unavailable", host: host.name, message: `PostgreSQL did not answer: ${pg.error}` });
    if (pg.ok) {
      if (host.name === primary) primaryProblems(host.name, pg.value, standbys, slotHolders, expect, t, add);
      else if (!control) replicaPgProblems(host.name, pg.value, r, expect, t, add);
      else if (primaryMember) followerPgProblems(host.name, pg.value, primaryMember, control, t, add);
    }
    if (!redis.ok && !redis.connection) add({ kind: "redis-unavailable", host: host.name, message: `Redis did not answer: ${redis.error}` });
    if (redis.ok) {
      if (host.name === primary) redisMasterProblems(host.name, redis.value, redisReplicas, expect, facts, t, add);
      else if (!control) replicaRedisProblems(host.name, redis.value, r, expect, add);
      else if (primaryMember) followerRedisProblems(host.name, redis.value, primaryMember, expect.redisPort, add);
    }
    hostExtras(host, t, add);
  }
  return problems;
}

/** A host that answers as a standby: a fenced former primary that rejoined. */
function backAsStandby(host: HostFacts | undefined): boolean {
  return !!host && host.postgres.ok && host.postgres.value.inRecovery;
}

/**
 * A fenced former primary that is not back as a standby: stopped, powered
 * off or cut off, as the fence left it (one problem, not one per service), or
 * running as a primary again (two primaries).
 */
function fencedProblem(expect: FleetExpectation, host: HostFacts, add: (p: Problem) => void): void {
  const f = fencedRecord(expect, host.name)!;
  const c = expect.control!;
  if (host.postgres.ok && !host.postgres.value.inRecovery) {
    add({
      kind: "two-primaries",
      host: host.name,
      message: `PostgreSQL accepts writes, but ${host.name} was fenced (${f.method}) in generation ${f.generation} and the control stack ${c.stack} names ${c.primary} as the primary: two primaries. Stop it (docker stop synaxic-${host.name}-app-a synaxic-${host.name}-app-b synaxic-${host.name}-redis synaxic-${host.name}-postgres), then run pulumi up on its stack so that it rewinds and follows ${c.primary}`,
    });
    return;
  }
  const state = host.postgres.ok ? "" : host.postgres.connection ? " (host unreachable)" : " (PostgreSQL not running)";
  add({
    kind: "fenced",
    host: host.name,
    message: `fenced (${f.method}) in generation ${f.generation}, not back as a standby yet${state}: once it is reachable${f.method === "poweroff" ? " (power it on first)" : ""}, run pulumi up on its stack; it rewinds and follows ${c.primary}`,
  });
}

/** The recorded primary's stack read, and every host stack deployed under the control stack's current generation. */
function controlProblems(c: ControlExpectation, members: readonly Member[], hosts: readonly HostFacts[], add: (p: Problem) => void): void {
  const primary = members.find((m) => m.name === c.primary);
  if (!primary) {
    add({ kind: "primary-not-checked", host: c.primary, message: `the control stack ${c.stack} names ${c.primary} as the primary, which is not a host of this fleet (${members.map((m) => m.name).join(", ")})` });
  } else if (!hosts.some((h) => h.name === c.primary)) {
    add({ kind: "primary-not-checked", host: c.primary, message: `the control stack ${c.stack} names ${c.primary} as the primary, but its stack was not read: name it with --replica` });
  }
  for (const m of members) {
    if (m.controlGeneration === undefined || m.controlGeneration === c.generation) continue;
    if (!hosts.some((h) => h.name === m.name)) continue;
    add({
      kind: "control-stale",
      host: m.name,
      message: `its stack was last deployed under generation ${m.controlGeneration}; the control stack ${c.stack} is at generation ${c.generation} (primary ${c.primary}): run pulumi up on it`,
    });
  }
}

/** A host that is to stream from the recorded primary: a standby, receiving from the primary's address. */
function followerPgProblems(host: string, f: PgFacts, primary: Member, c: ControlExpectation, t: Thresholds, add: (p: Problem) => void): void {
  if (!f.inRecovery) {
    add({
      kind: "two-primaries",
      host,
      message: `PostgreSQL accepts writes, but the control stack ${c.stack} (generation ${c.generation}) names ${primary.name} as the primary: two primaries. Fence ${host} on the control stack, or run pulumi up on its stack`,
    });
    return;
  }
  const w = f.walReceiver;
  if (!w || w.status !== "streaming") {
    add({ kind: "wal-receiver", host, message: w ? `the WAL receiver is ${w.status}, not streaming` : `no WAL receiver is running: this standby receives nothing from the primary ${primary.name}` });
  } else if (w.senderHost !== null && w.senderHost !== primary.privateIp) {
    add({ kind: "wal-receiver", host, message: `streams from ${w.senderHost}, not from the primary ${primary.name} (${primary.privateIp}): run pulumi up on its stack` });
  }
  if (f.lagBytes !== null && f.lagBytes > t.maxLagBytes) {
    add({ kind: "lag-bytes", host, message: `received but not replayed: ${formatBytes(f.lagBytes)} (${f.lagBytes} bytes > ${t.maxLagBytes})` });
  }
  if (f.replayPaused) add({ kind: "replay-paused", host, message: "WAL replay is paused (pg_wal_replay_pause()); resume it with SELECT pg_wal_replay_resume()" });
}

/** A host whose Redis is to replicate from the recorded primary's. */
function followerRedisProblems(host: string, f: RedisReplicationFacts, primary: Member, redisPort: number, add: (p: Problem) => void): void {
  if (f.role !== "slave") {
    add({ kind: "redis-role", host, message: `Redis is a master, not a replica of the primary ${primary.name} (${primary.privateIp}:${redisPort})` });
    return;
  }
  if (f.masterHost !== null && f.masterHost !== primary.privateIp) {
    add({ kind: "redis-role", host, message: `Redis replicates from ${f.masterHost}:${f.masterPort}, not from the primary ${primary.name} (${primary.privateIp}:${redisPort}): run pulumi up on its stack` });
  }
  if (f.masterLinkStatus !== "up") {
    const since = f.masterLinkDownSinceSeconds !== null && f.masterLinkDownSinceSeconds >= 0 ? ` for ${f.masterLinkDownSinceSeconds} s` : "";
    add({ kind: "redis-link-down", host, message: `master_link_status is ${f.masterLinkStatus ?? "absent"}${since}: the link to ${f.masterHost}:${f.masterPort} is broken` });
  }
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

/**
 * The primary's view: each standby in `standbys` connected and streaming,
 * within the lag thresholds, through its slot; slots of `expected` (the
 * standbys, a fenced host not back yet included: its slot keeps WAL for its
 * return) are the fleet's, any other is unexpected.
 */
function primaryProblems(host: string, f: PgFacts, standbys: readonly Member[], expected: readonly Member[], expect: FleetExpectation, t: Thresholds, add: (p: Problem) => void): void {
  if (f.inRecovery) {
    const c = expect.control;
    add({
      kind: "primary-in-recovery",
      host,
      message: c
        ? `the control stack ${c.stack} (generation ${c.generation}) names ${host} as the primary, but its PostgreSQL is in recovery (a standby): run pulumi up on its stack`
        : "PostgreSQL on the main host is in recovery (a standby), not the primary",
    });
    return;
  }
  for (const r of standbys) {
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
  const fleetSlots = new Set(expected.map((r) => r.slotName));
  for (const s of f.slots) {
    if (fleetSlots.has(s.slotName)) continue;
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

function redisMasterProblems(host: string, m: RedisReplicationFacts, replicas: readonly Member[], expect: FleetExpectation, facts: FleetFacts, t: Thresholds, add: (p: Problem) => void): void {
  if (m.role !== "master") {
    add({ kind: "redis-role", host, message: `Redis on ${expect.control ? `the primary ${host}` : "the main host"} is a replica (of ${m.masterHost}:${m.masterPort}), not the master` });
    return;
  }
  for (const r of replicas) {
    // Without a control stack: a replica whose stack promoted its Redis is a master of its own.
    if (!expect.control && r.redisRole === "master") continue;
    const entry = m.slaves.find((s) => s.ip === r.privateIp && s.port === expect.redisPort) ?? m.slaves.find((s) => s.ip === r.privateIp);
    if (!entry) {
      add({ kind: "redis-replica-missing", host, subject: r.name, message: `${r.name} (${r.privateIp}) is not among the Redis master's replicas` });
    } else if (entry.state !== "online") {
      add({ kind: "redis-replica-missing", host, subject: r.name, message: `${r.name} is connected to the Redis master but in state ${entry.state}, not online` });
    }
    // The master's view of the replica's acknowledged offset, else the replica's own.
    let offset: number | null = entry && entry.state === "online" ? entry.offset : null;
    if (offset === null) {
      const own = [facts.main, ...facts.replicas].find((h) => h.name === r.name)?.redis;
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
