/**
 * The report: psql-style tables of the primary's walsenders and slots, a
 * line per replica and per Redis server, the problems, then the verdict.
 * Or the same as JSON (--json), for scripts.
 */
import { formatDuration } from "./backup";
import { evaluate, fencedRecord, formatBytes, primaryName } from "./evaluate";
import type { FleetExpectation, FleetFacts, Gathered, HostFacts, PgFacts, Problem, RedisReplicationFacts, StatusReport, Thresholds } from "./types";

export function buildReport(expectation: FleetExpectation, facts: FleetFacts, thresholds: Thresholds): StatusReport {
  const problems = evaluate(expectation, facts, thresholds);
  const incomplete = problems.some((p) => p.kind === "host-unreachable");
  return { healthy: problems.length === 0, incomplete, problems, thresholds, expectation, facts };
}

/** healthy, unhealthy, or incomplete (a host could not be reached). */
export function verdictOf(report: StatusReport): "healthy" | "unhealthy" | "incomplete" {
  return report.incomplete ? "incomplete" : report.healthy ? "healthy" : "unhealthy";
}

/** A psql-like aligned table; columns listed in `right` are right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], right: ReadonlySet<number> = new Set()): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join(" | ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("-+-"), ...rows.map(line)].join("\n");
}

const dash = (v: string | number | null | undefined): string => (v === null || v === undefined ? "-" : String(v));
const seconds = (v: number | null): string => (v === null ? "-" : `${v.toFixed(3)} s`);

function failure(g: Gathered<unknown>): string {
  return g.ok ? "" : g.connection ? `unreachable: ${g.error}` : `did not answer: ${g.error}`;
}

/** The control stack's decision, when the fleet has one: who is primary, in which generation, who was fenced. */
function controlSection(expectation: FleetExpectation): string[] {
  const c = expectation.control;
  if (!c) return [];
  const fenced = Object.entries(c.fenced)
    .filter(([h]) => h !== c.primary)
    .map(([h, f]) => `${h} (${f.method}, generation ${f.generation})`);
  return [`Control stack ${c.stack}: primary ${c.primary}, generation ${c.generation}${c.previousPrimary ? `, previously ${c.previousPrimary}` : ""}; fenced: ${fenced.length ? fenced.join(", ") : "none"}`, ""];
}

/** The private address of a fleet host. */
function addressOf(expectation: FleetExpectation, name: string): string {
  return name === expectation.main.name ? expectation.main.privateIp : (expectation.replicas.find((r) => r.name === name)?.privateIp ?? "?");
}

function primarySection(host: HostFacts | undefined, name: string, expectation: FleetExpectation): string[] {
  const out: string[] = [];
  if (!host) return [`PostgreSQL primary ${name}: not checked (name its stack with --replica to check it)`];
  const g = host.postgres;
  if (!g.ok) return [`PostgreSQL primary ${host.name}: ${failure(g)}`];
  const f = g.value;
  out.push(`PostgreSQL primary ${host.name} (${addressOf(expectation, host.name)}): ${f.inRecovery ? "IN RECOVERY (not a primary)" : `current WAL position ${dash(f.currentLsn)}`}`);
  const header = ["application_name", "client_addr", "state", "sync_state", "sent_lsn", "write_lsn", "flush_lsn", "replay_lsn", "lag_bytes", "write_lag", "flush_lag", "replay_lag"];
  const rows = f.replication.map((r) => [
    r.applicationName,
    dash(r.clientAddr),
    r.state,
    r.syncState,
    dash(r.sentLsn),
    dash(r.writeLsn),
    dash(r.flushLsn),
    dash(r.replayLsn),
    dash(r.lagBytes),
    seconds(r.writeLagSeconds),
    seconds(r.flushLagSeconds),
    seconds(r.replayLagSeconds),
  ]);
  out.push(table(header, rows, new Set([8, 9, 10, 11])));
  if (rows.length === 0) out.push("(no standby is connected)");
  out.push("");
  out.push(`Replication slots on ${host.name}`);
  const slots = f.slots.map((s) => [s.slotName, s.active ? "yes" : "no", dash(s.walStatus), dash(s.restartLsn), dash(s.retainedBytes)]);
  out.push(table(["slot_name", "active", "wal_status", "restart_lsn", "retained_bytes"], slots, new Set([4])));
  if (slots.length === 0) out.push("(no slots)");
  return out;
}

function standbyLine(f: PgFacts): string {
  if (!f.inRecovery) return "NOT in recovery: accepts writes (a primary)";
  const w = f.walReceiver;
  const receiver = w ? `WAL receiver ${w.status} from ${dash(w.senderHost)}:${dash(w.senderPort)}${w.slotName ? ` (slot ${w.slotName})` : ""}` : "no WAL receiver";
  const lag = f.lagBytes === null ? "lag unknown" : `lag ${f.lagBytes} bytes${f.lagBytes >= 1024 ? ` (${formatBytes(f.lagBytes)})` : ""}`;
  return `standby, ${receiver}, received ${dash(f.receiveLsn)}, replayed ${dash(f.replayLsn)}, ${lag}${f.replayPaused ? ", REPLAY PAUSED" : ""}`;
}

function replicaSection(expectation: FleetExpectation, facts: FleetFacts): string[] {
  const out = ["PostgreSQL replicas"];
  const primary = primaryName(expectation);
  // Under a control stack every host but the primary is to be a standby, main included.
  const names = [
    ...(expectation.control && primary !== expectation.main.name ? [expectation.main.name] : []),
    ...expectation.replicas.map((r) => r.name),
    ...facts.replicas.map((h) => h.name).filter((n) => !expectation.replicas.some((r) => r.name === n)),
  ].filter((n) => !expectation.control || n !== primary);
  if (names.length === 0) out.push("(the main stack lists no replicas)");
  for (const name of names) {
    const r = expectation.replicas.find((x) => x.name === name);
    const host = [facts.main, ...facts.replicas].find((h) => h.name === name);
    const fenced = fencedRecord(expectation, name);
    const mode = fenced ? ` [fenced ${fenced.method}, generation ${fenced.generation}]` : r && r.postgresMode !== "replica" ? ` [${r.postgresMode}]` : "";
    if (!host) out.push(`${name}${mode}: host not checked (name its stack with --replica to check it)`);
    else if (!host.postgres.ok) out.push(`${name}${mode}: ${failure(host.postgres)}`);
    else out.push(`${name}${mode}: ${standbyLine(host.postgres.value)}`);
  }
  return out;
}

function redisMasterLines(name: string, m: RedisReplicationFacts, expectation: FleetExpectation): string[] {
  if (m.role !== "master") return [`${name}: replica of ${dash(m.masterHost)}:${dash(m.masterPort)} (expected the master)`];
  const out = [`${name}: master, ${m.connectedSlaves} connected replica${m.connectedSlaves === 1 ? "" : "s"}, offset ${m.masterReplOffset}`];
  for (const s of m.slaves) {
    const who = (s.ip === expectation.main.privateIp ? expectation.main.name : expectation.replicas.find((r) => r.privateIp === s.ip)?.name) ?? "unknown";
    out.push(`  ${who} ${s.ip}:${s.port} ${s.state}, offset ${s.offset} (${m.masterReplOffset - s.offset} bytes behind), last ack ${s.lag} s ago`);
  }
  return out;
}

function redisReplicaLine(name: string, f: RedisReplicationFacts): string {
  if (f.role === "master") return `${name}: master, ${f.connectedSlaves} connected replicas, offset ${f.masterReplOffset}`;
  const down = f.masterLinkStatus !== "up" && f.masterLinkDownSinceSeconds !== null && f.masterLinkDownSinceSeconds >= 0 ? ` for ${f.masterLinkDownSinceSeconds} s` : "";
  return `${name}: replica of ${dash(f.masterHost)}:${dash(f.masterPort)}, link ${dash(f.masterLinkStatus)}${down}, offset ${dash(f.slaveReplOffset)}`;
}

function redisSection(expectation: FleetExpectation, facts: FleetFacts): string[] {
  const out = ["Redis"];
  // The master is the primary's host's (main's without a control stack).
  const primary = expectation.control ? primaryName(expectation) : facts.main.name;
  const hosts = [facts.main, ...facts.replicas];
  const master = hosts.find((h) => h.name === primary);
  if (master) out.push(...(master.redis.ok ? redisMasterLines(master.name, master.redis.value, expectation) : [`${master.name}: ${failure(master.redis)}`]));
  for (const h of hosts) if (h !== master) out.push(h.redis.ok ? redisReplicaLine(h.name, h.redis.value) : `${h.name}: ${failure(h.redis)}`);
  return out;
}

function archiverText(f: PgFacts): string {
  const a = f.archiver;
  if (!a) return "archiver unknown";
  if (f.archiveMode === "off") return "archiving off";
  const last = a.lastArchivedWal ? `, last ${a.lastArchivedWal}${a.lastArchivedAgeSeconds !== null ? ` ${formatDuration(a.lastArchivedAgeSeconds)} ago` : ""}` : "";
  const failed = a.failedCount > 0 ? `, ${a.failedCount} failed${a.lastFailedWal ? ` (last ${a.lastFailedWal}${a.lastFailedAgeSeconds !== null ? ` ${formatDuration(a.lastFailedAgeSeconds)} ago` : ""})` : ""}` : ", none failed";
  return `archiver: ${a.archivedCount} archived${last}${failed}`;
}

function hostLine(h: HostFacts): string[] {
  const out: string[] = [];
  const pg = h.postgres;
  if (pg.ok) {
    const f = pg.value;
    const up = f.uptimeSeconds !== null ? `up ${formatDuration(f.uptimeSeconds)}${f.startedAt ? ` (since ${f.startedAt})` : ""}` : "uptime unknown";
    out.push(`${h.name}: timeline ${dash(f.timeline)}, ${up}, ${archiverText(f)}`);
  } else out.push(`${h.name}: ${failure(pg)}`);
  const b = h.backup;
  if (b) {
    if (!b.ok) out.push(`  backups: ${failure(b)}`);
    else {
      const v = b.value;
      const newest = v.newest ? `newest ${v.newest.type} ${v.newest.label}, ${formatDuration(v.newest.ageSeconds)} old` : "no backup yet";
      out.push(`  backups: ${newest}; ${v.backupCount} in the repository, stanza ${v.stanza} ${v.status.code === 0 ? "ok" : `status ${v.status.code} (${v.status.message})`}${v.archiveMax ? `, WAL archived up to ${v.archiveMax}` : ""}`);
    }
  }
  return out;
}

function hostsSection(facts: FleetFacts): string[] {
  return ["Hosts", ...[facts.main, ...facts.replicas].flatMap(hostLine)];
}

function problemLine(p: Problem): string {
  return `- [${p.kind}] ${p.host}${p.subject ? ` (${p.subject})` : ""}: ${p.message}`;
}

/** The human-readable report. */
export function formatReport(report: StatusReport): string {
  const { expectation, facts } = report;
  const out: string[] = [];
  const primary = primaryName(expectation);
  out.push(...controlSection(expectation));
  out.push(...primarySection([facts.main, ...facts.replicas].find((h) => h.name === primary), primary, expectation), "");
  out.push(...replicaSection(expectation, facts), "");
  out.push(...redisSection(expectation, facts), "");
  out.push(...hostsSection(facts), "");
  const t = report.thresholds;
  out.push(
    `Thresholds: lag ${t.maxLagBytes} bytes, replay lag ${t.maxReplayLagSeconds} s, Redis offset ${t.maxRedisOffsetLag} bytes${t.maxBackupAgeSeconds !== null ? `, backup age ${t.maxBackupAgeSeconds} s` : ""}`,
  );
  if (report.problems.length === 0) out.push("Problems: none");
  else out.push("Problems:", ...report.problems.map(problemLine));
  const verdict = verdictOf(report);
  const n = report.problems.length;
  out.push(
    verdict === "healthy"
      ? `Verdict: HEALTHY (${expectation.replicas.length} replica${expectation.replicas.length === 1 ? "" : "s"} expected)`
      : verdict === "incomplete"
        ? `Verdict: INCOMPLETE, some hosts could not be reached (${n} problem${n === 1 ? "" : "s"})`
        : `Verdict: UNHEALTHY (${n} problem${n === 1 ? "" : "s"})`,
  );
  return `${out.join("\n")}\n`;
}

/** The report as JSON: verdict first, then problems, thresholds, expectation and facts. No secrets are in it. */
export function formatReportJson(report: StatusReport): string {
  const { healthy, incomplete, problems, thresholds, expectation, facts } = report;
  return `${JSON.stringify({ verdict: verdictOf(report), healthy, incomplete, problems, thresholds, expectation, facts }, null, 2)}\n`;
}
