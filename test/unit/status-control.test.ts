/**
 * The status command under a control stack: the fleet is judged against the
 * control stack's primary (not the main stack's host), the replicas' lag is
 * the real primary's view, and a host that accepts writes without being the
 * recorded primary (two primaries) or a fenced host not back yet is flagged.
 * The evaluator and report on facts of a failed-over fleet, then the command
 * end to end (runStatus) with stack outputs that name the control stack.
 */
import { describe, expect, it } from "vitest";
import { evaluate } from "../../lib/status/evaluate";
import { buildReport, formatReport, verdictOf } from "../../lib/status/format";
import { runStatus, type StatusDeps } from "../../lib/status/cli";
import { StackOutputError } from "../../lib/status/errors";
import { controlStackOf } from "../../lib/status/outputs";
import type { HostRunner } from "../../lib/status/gather";
import type { ControlExpectation, FleetExpectation, FleetFacts, HostFacts, PgFacts, Problem, RedisReplicationFacts, Thresholds } from "../../lib/status/types";

const T: Thresholds = { maxLagBytes: 1000, maxReplayLagSeconds: 5, maxRedisOffsetLag: 500, maxBackupAgeSeconds: null };
const CONTROL_STACK = "acme/synaxic/control";
const IP: Record<string, string> = { main: "10.0.0.1", "replica-1": "10.0.0.2", "replica-2": "10.0.0.3" };
const SLOT: Record<string, string> = { main: "synaxic_main", "replica-1": "synaxic_replica_1", "replica-2": "synaxic_replica_2" };

/** replica-1 promoted in generation 1, main fenced by a stop. */
const FAILED_OVER: ControlExpectation = { stack: CONTROL_STACK, primary: "replica-1", generation: 1, previousPrimary: "main", fenced: { main: { method: "stop", generation: 1 } } };

function expectation(control: ControlExpectation = FAILED_OVER): FleetExpectation {
  return {
    main: { name: "main", privateIp: IP.main!, controlGeneration: control.generation },
    control,
    redisPort: 6380,
    replicas: ["replica-1", "replica-2"].map((name) => ({
      name,
      privateIp: IP[name]!,
      slotName: SLOT[name]!,
      checked: true,
      postgresMode: name === control.primary ? ("promoted" as const) : ("replica" as const),
      redisRole: name === control.primary ? ("master" as const) : ("replica" as const),
      controlGeneration: control.generation,
    })),
    unknownReplicaStacks: [],
  };
}

function primaryPg(followers: string[]): PgFacts {
  return {
    inRecovery: false,
    currentLsn: "0/5000148",
    receiveLsn: null,
    replayLsn: null,
    lagBytes: null,
    replayPaused: null,
    timeline: 2,
    startedAt: "2026-11-30T08:00:00.000+00:00",
    uptimeSeconds: 600,
    archiveMode: "off",
    archiver: { archivedCount: 0, lastArchivedWal: null, lastArchivedAgeSeconds: null, failedCount: 0, lastFailedWal: null, lastFailedAgeSeconds: null },
    walReceiver: null,
    replication: followers.map((name) => ({
      applicationName: name,
      clientAddr: IP[name]!,
      state: "streaming",
      syncState: "async",
      sentLsn: "0/5000148",
      writeLsn: "0/5000148",
      flushLsn: "0/5000148",
      replayLsn: "0/5000100",
      lagBytes: 72,
      writeLagSeconds: 0.001,
      flushLagSeconds: 0.002,
      replayLagSeconds: 0.003,
    })),
    slots: followers.map((name) => ({ slotName: SLOT[name]!, slotType: "physical", active: true, walStatus: "reserved", restartLsn: "0/5000100", retainedBytes: 72 })),
  };
}

function standbyPg(self: string, from: string): PgFacts {
  return {
    ...primaryPg([]),
    inRecovery: true,
    currentLsn: null,
    receiveLsn: "0/5000148",
    replayLsn: "0/5000148",
    lagBytes: 0,
    replayPaused: false,
    walReceiver: { status: "streaming", senderHost: IP[from]!, senderPort: 5432, slotName: SLOT[self]! },
  };
}

function masterRedis(followers: string[]): RedisReplicationFacts {
  return {
    role: "master",
    connectedSlaves: followers.length,
    slaves: followers.map((name) => ({ ip: IP[name]!, port: 6380, state: "online", offset: 9000, lag: 0 })),
    masterReplOffset: 9000,
    masterHost: null,
    masterPort: null,
    masterLinkStatus: null,
    slaveReplOffset: null,
    masterLastIoSecondsAgo: null,
    masterLinkDownSinceSeconds: null,
  };
}

function replicaRedis(of: string): RedisReplicationFacts {
  return { ...masterRedis([]), role: "slave", masterHost: IP[of]!, masterPort: 6380, masterLinkStatus: "up", slaveReplOffset: 9000, masterLastIoSecondsAgo: 0 };
}

const ok = <V>(value: V) => ({ ok: true as const, value });

/** The fleet after the switchover: replica-1 primary, main and replica-2 streaming from it. */
function failedOver(): FleetFacts {
  return {
    main: { name: "main", postgres: ok(standbyPg("main", "replica-1")), redis: ok(replicaRedis("replica-1")), backup: null },
    replicas: [
      { name: "replica-1", postgres: ok(primaryPg(["main", "replica-2"])), redis: ok(masterRedis(["main", "replica-2"])), backup: null },
      { name: "replica-2", postgres: ok(standbyPg("replica-2", "replica-1")), redis: ok(replicaRedis("replica-1")), backup: null },
    ],
  };
}

const host = (f: FleetFacts, name: string): HostFacts => [f.main, ...f.replicas].find((h) => h.name === name)!;
const pgOf = (h: HostFacts): PgFacts => (h.postgres.ok ? h.postgres.value : (() => { throw new Error("no pg"); })());
const summary = (ps: Problem[]) => ps.map((p) => [p.kind, p.host, p.subject ?? null]);

function problemsAfter(change: (f: FleetFacts, e: FleetExpectation) => void): Problem[] {
  const f = failedOver();
  const e = expectation();
  change(f, e);
  return evaluate(e, f, T);
}

/** The old primary as the stop fence leaves it: its host answers, its containers do not. */
function stopped(f: FleetFacts, name: string): void {
  const h = host(f, name);
  h.postgres = { ok: false, error: `psql on ${name} failed: exit 1: container synaxic-${name}-postgres is not running`, connection: false };
  h.redis = { ok: false, error: `redis-cli INFO replication on ${name} failed: exit 1: container synaxic-${name}-redis is not running`, connection: false };
  // The primary no longer sees it; its slot waits for it.
  const p = pgOf(host(f, "replica-1"));
  p.replication = p.replication.filter((r) => r.applicationName !== name);
  p.slots.find((s) => s.slotName === SLOT[name])!.active = false;
  const m = host(f, "replica-1").redis;
  if (m.ok) m.value.slaves = m.value.slaves.filter((s) => s.ip !== IP[name]);
}

describe("judged against the control stack's primary", () => {
  it("a failed-over fleet is healthy: replica-1 primary, main (fenced, rewound) and replica-2 streaming from it through their slots, Redis following it", () => {
    expect(evaluate(expectation(), failedOver(), T)).toEqual([]);
  });

  it("before any change (generation 0, nothing fenced) main is the primary, as without a control stack", () => {
    const e = expectation({ stack: CONTROL_STACK, primary: "main", generation: 0, previousPrimary: null, fenced: {} });
    const f: FleetFacts = {
      main: { name: "main", postgres: ok(primaryPg(["replica-1", "replica-2"])), redis: ok(masterRedis(["replica-1", "replica-2"])), backup: null },
      replicas: ["replica-1", "replica-2"].map((n) => ({ name: n, postgres: ok(standbyPg(n, "main")), redis: ok(replicaRedis("main")), backup: null })),
    };
    expect(evaluate(e, f, T)).toEqual([]);
    // The primary's slots are the standbys'; main's own slot name is no standby's there.
    pgOf(f.main).slots.push({ slotName: "synaxic_main", slotType: "physical", active: false, walStatus: "reserved", restartLsn: "0/1", retainedBytes: 10 });
    expect(summary(evaluate(e, f, T))).toEqual([["slot-unexpected", "main", "synaxic_main"]]);
  });

  it("lag is the real primary's view: a standby behind replica-1 is flagged there, with its slot", () => {
    const ps = problemsAfter((f) => (pgOf(host(f, "replica-1")).replication.find((r) => r.applicationName === "replica-2")!.lagBytes = 5000));
    expect(summary(ps)).toEqual([["lag-bytes", "replica-1", "replica-2"]]);
    expect(ps[0]!.message).toContain("5000 bytes > 1000");
    // Missing from the primary and its slot inactive: said by the primary, not by main.
    const gone = problemsAfter((f) => {
      const p = pgOf(host(f, "replica-1"));
      p.replication = p.replication.filter((r) => r.applicationName !== "replica-2");
      p.slots.find((s) => s.slotName === "synaxic_replica_2")!.active = false;
    });
    expect(summary(gone)).toEqual([
      ["replica-missing", "replica-1", "replica-2"],
      ["slot-inactive", "replica-1", "synaxic_replica_2"],
    ]);
  });

  it("two primaries: a host other than the recorded primary accepts writes", () => {
    const ps = problemsAfter((f) => Object.assign(pgOf(host(f, "replica-2")), { inRecovery: false, walReceiver: null, lagBytes: null }));
    expect(summary(ps)).toEqual([["two-primaries", "replica-2", null]]);
    expect(ps[0]!.message).toBe(
      "PostgreSQL accepts writes, but the control stack acme/synaxic/control (generation 1) names replica-1 as the primary: two primaries. Fence replica-2 on the control stack, or run pulumi up on its stack",
    );
  });

  it("two primaries: the fenced former primary is writable again", () => {
    const ps = problemsAfter((f) => {
      stopped(f, "main");
      host(f, "main").postgres = ok(primaryPg([]));
    });
    expect(summary(ps)).toEqual([["two-primaries", "main", null]]);
    expect(ps[0]!.message).toMatch(/^PostgreSQL accepts writes, but main was fenced \(stop\) in generation 1 and the control stack acme\/synaxic\/control names replica-1 as the primary: two primaries\. Stop it /);
  });

  it("a fenced host not back yet is one problem, not one per service; the verdict is unhealthy, not incomplete", () => {
    const f = failedOver();
    stopped(f, "main");
    const r = buildReport(expectation(), f, T);
    expect(summary(r.problems)).toEqual([["fenced", "main", null]]);
    expect(r.problems[0]!.message).toBe("fenced (stop) in generation 1, not back as a standby yet (PostgreSQL not running): once it is reachable, run pulumi up on its stack; it rewinds and follows replica-1");
    expect(verdictOf(r)).toBe("unhealthy");
    // Powered off: its host does not answer at all, and that is what the fence did.
    const off = failedOver();
    stopped(off, "main");
    const err = "cannot reach main: ssh root@203.0.113.1:22: connect to host 203.0.113.1 port 22: No route to host";
    Object.assign(host(off, "main"), { postgres: { ok: false, error: err, connection: true }, redis: { ok: false, error: err, connection: true } });
    const e = expectation({ ...FAILED_OVER, fenced: { main: { method: "poweroff", generation: 1 } } });
    const r2 = buildReport(e, off, T);
    expect(summary(r2.problems)).toEqual([["fenced", "main", null]]);
    expect(r2.problems[0]!.message).toContain("(host unreachable): once it is reachable (power it on first), run pulumi up");
    expect(verdictOf(r2)).toBe("unhealthy");
  });

  it("a standby that streams from another host than the recorded primary, and a Redis replica of the old master", () => {
    const ps = problemsAfter((f) => {
      pgOf(host(f, "replica-2")).walReceiver!.senderHost = IP.main!;
      host(f, "replica-2").redis = ok(replicaRedis("main"));
    });
    expect(summary(ps)).toEqual([
      ["wal-receiver", "replica-2", null],
      ["redis-role", "replica-2", null],
    ]);
    expect(ps[0]!.message).toBe("streams from 10.0.0.1, not from the primary replica-1 (10.0.0.2): run pulumi up on its stack");
  });

  it("the recorded primary still a standby (its stack not run since the change), and stacks left at an older generation", () => {
    const ps = problemsAfter((f, e) => {
      host(f, "replica-1").postgres = ok(standbyPg("replica-1", "main"));
      e.replicas[0]!.controlGeneration = 0;
    });
    expect(summary(ps)).toEqual([
      ["control-stale", "replica-1", null],
      ["primary-in-recovery", "replica-1", null],
    ]);
    expect(ps[0]!.message).toBe("its stack was last deployed under generation 0; the control stack acme/synaxic/control is at generation 1 (primary replica-1): run pulumi up on it");
    expect(ps[1]!.message).toBe("the control stack acme/synaxic/control (generation 1) names replica-1 as the primary, but its PostgreSQL is in recovery (a standby): run pulumi up on its stack");
  });

  it("the recorded primary's stack not read", () => {
    const ps = problemsAfter((f, e) => {
      f.replicas = f.replicas.filter((h) => h.name !== "replica-1");
      e.replicas[0]!.checked = false;
    });
    expect(summary(ps)).toEqual([["primary-not-checked", "replica-1", null]]);
  });

  it("the report names the control stack's decision, prints the real primary's walsenders and lists main among the standbys", () => {
    const text = formatReport(buildReport(expectation(), failedOver(), T));
    expect(text).toMatch(/^Control stack acme\/synaxic\/control: primary replica-1, generation 1, previously main; fenced: main \(stop, generation 1\)\n\nPostgreSQL primary replica-1 \(10\.0\.0\.2\): current WAL position 0\/5000148\n/);
    expect(text).toMatch(/^main +\| 10\.0\.0\.1 +\| streaming \| async +\| 0\/5000148 /m);
    expect(text).toMatch(/^synaxic_main +\| yes +\| reserved /m);
    expect(text).toContain("PostgreSQL replicas\nmain [fenced stop, generation 1]: standby, WAL receiver streaming from 10.0.0.2:5432 (slot synaxic_main)");
    expect(text).toContain("replica-2: standby, WAL receiver streaming from 10.0.0.2:5432 (slot synaxic_replica_2)");
    expect(text).not.toMatch(/^replica-1 \[promoted\]/m);
    expect(text).toContain("Redis\nreplica-1: master, 2 connected replicas, offset 9000\n  main 10.0.0.1:6380 online");
    expect(text).toContain("main: replica of 10.0.0.2:6380, link up, offset 9000");
    expect(text).toMatch(/Verdict: HEALTHY \(2 replicas expected\)\n$/);
  });
});

// ---------------------------------------------------------------------------
// The command end to end: outputs that name the control stack.
// ---------------------------------------------------------------------------

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq3T1l0nWn3oLxW4wq0l3m7c7fZ2sQvJ8u0kq8m9yZk";
const MAIN = "acme/synaxic/main";
const STACKS = { main: MAIN, "replica-1": "acme/synaxic/replica-1", "replica-2": "acme/synaxic/replica-2" } as const;

function outputs(control: Record<string, unknown> = { version: 1, primary: "replica-1", generation: 1, previousPrimary: "main", fenced: { main: { method: "stop", generation: 1 } } }): Record<string, Record<string, unknown>> {
  const under = { controlStack: CONTROL_STACK, controlGeneration: 1, primary: "replica-1" };
  return {
    [MAIN]: {
      publicAddress: "203.0.113.1",
      hostKey: KEY,
      sshUser: "root",
      fleet: {
        version: 1,
        mainPrivateIp: IP.main,
        ports: { http: 80, https: 443, postgres: 5432, redis: 6380, app: 8080, prometheus: 9090, grafana: 3000, nodeExporter: 9100, postgresExporter: 9187, redisExporter: 9121 },
        replicas: ["replica-1", "replica-2"].map((name) => ({ name, privateIp: IP[name], slotName: SLOT[name] })),
        redisUsers: { app: "synaxic", replication: "replicator", exporter: "exporter", admin: "admin" },
      },
      replicaCredentials: { redisAdmin: "s3cret-redis-admin-password-0123" },
      postgresMode: "rejoin",
      ...under,
    },
    [STACKS["replica-1"]]: { replicaName: "replica-1", slotName: SLOT["replica-1"], publicAddress: "203.0.113.2", privateIp: IP["replica-1"], postgresMode: "promoted", redisRole: "master", hostKey: KEY, sshUser: "root", ...under },
    [STACKS["replica-2"]]: { replicaName: "replica-2", slotName: SLOT["replica-2"], publicAddress: "203.0.113.3", privateIp: IP["replica-2"], postgresMode: "replica", redisRole: "replica", hostKey: KEY, sshUser: "root", ...under },
    [CONTROL_STACK]: { control },
  };
}

/** What the servers print: psql's one JSON line (PG_STATUS_SQL) and INFO replication. */
function runnerOf(f: FleetFacts): HostRunner {
  const pgJson = (p: PgFacts) => ({
    in_recovery: p.inRecovery, current_lsn: p.currentLsn, receive_lsn: p.receiveLsn, replay_lsn: p.replayLsn, lag_bytes: p.lagBytes, replay_paused: p.replayPaused,
    wal_receiver: p.walReceiver && { status: p.walReceiver.status, sender_host: p.walReceiver.senderHost, sender_port: p.walReceiver.senderPort, slot_name: p.walReceiver.slotName },
    replication: p.replication.map((r) => ({ application_name: r.applicationName, client_addr: r.clientAddr, state: r.state, sync_state: r.syncState, sent_lsn: r.sentLsn, write_lsn: r.writeLsn, flush_lsn: r.flushLsn, replay_lsn: r.replayLsn, lag_bytes: r.lagBytes, write_lag: r.writeLagSeconds, flush_lag: r.flushLagSeconds, replay_lag: r.replayLagSeconds })),
    slots: p.slots.map((s) => ({ slot_name: s.slotName, slot_type: s.slotType, active: s.active, wal_status: s.walStatus, restart_lsn: s.restartLsn, retained_bytes: s.retainedBytes })),
  });
  const info = (r: RedisReplicationFacts) =>
    r.role === "master"
      ? `role:master\r\nconnected_slaves:${r.slaves.length}\r\n${r.slaves.map((s, i) => `slave${i}:ip=${s.ip},port=${s.port},state=${s.state},offset=${s.offset},lag=${s.lag}\r\n`).join("")}master_repl_offset:${r.masterReplOffset}\r\n`
      : `role:slave\r\nmaster_host:${r.masterHost}\r\nmaster_port:${r.masterPort}\r\nmaster_link_status:${r.masterLinkStatus}\r\nslave_repl_offset:${r.slaveReplOffset}\r\nmaster_repl_offset:${r.masterReplOffset}\r\n`;
  const of = (name: string) => host(f, name);
  return {
    psql: async (name) => {
      const g = of(name).postgres;
      if (!g.ok) throw new Error(g.error);
      return `${JSON.stringify(pgJson(g.value))}\n`;
    },
    redis: async (name) => {
      const g = of(name).redis;
      if (!g.ok) throw new Error(g.error);
      return info(g.value);
    },
    backupInfo: async () => "[]",
  };
}

async function run(argv: string[], outs = outputs(), facts = failedOver()) {
  const r = { code: -1, stdout: "", stderr: "", read: [] as string[] };
  const deps: StatusDeps = {
    readStackOutputs: async (stack) => {
      r.read.push(stack);
      const o = outs[stack];
      if (!o) throw new StackOutputError(`cannot read stack ${stack}: no stack named '${stack}' found`);
      return o;
    },
    connect: async () => ({ runner: runnerOf(facts), close: () => undefined }),
    stdout: (t) => (r.stdout += t),
    stderr: (t) => (r.stderr += t),
    env: {},
  };
  r.code = await runStatus(argv, deps);
  return r;
}

describe("the status command finds the control stack from the host stacks", () => {
  it("reads the control stack the stacks name and judges the fleet against its primary: healthy after the switchover", async () => {
    const r = await run(["--main", MAIN, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.read).toEqual([MAIN, STACKS["replica-1"], STACKS["replica-2"], CONTROL_STACK]);
    const report = JSON.parse(r.stdout);
    expect(report.expectation.control).toEqual(FAILED_OVER);
    expect(report.expectation.main).toEqual({ name: "main", privateIp: IP.main, controlGeneration: 1 });
    expect(report.verdict).toBe("healthy");
  });

  it("the same facts judged as if main were the primary (no control stack) are two primaries' worth of problems: the control stack is what makes them right", async () => {
    const outs = outputs();
    for (const s of Object.values(STACKS)) {
      delete outs[s]!.controlStack;
      delete outs[s]!.controlGeneration;
    }
    const r = await run(["--main", MAIN, "--json"], outs);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).problems.map((p: Problem) => p.kind)).toContain("primary-in-recovery");
  });

  it("exits 2 with one problem for main while the fence keeps it stopped, 0 once it streams again", async () => {
    const f = failedOver();
    stopped(f, "main");
    const r = await run(["--main", MAIN], outputs(), f);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("main [fenced stop, generation 1]: did not answer: psql on main failed");
    expect(r.stdout).toMatch(/^- \[fenced\] main: fenced \(stop\) in generation 1, not back as a standby yet/m);
    expect(r.stdout).toMatch(/Verdict: UNHEALTHY \(1 problem\)\n$/);
  });

  it("--control names the control stack explicitly", async () => {
    const outs = outputs();
    outs["acme/synaxic/other-control"] = { control: { version: 1, primary: "main", generation: 0, previousPrimary: null, fenced: {} } };
    const r = await run(["--main", MAIN, "--control", "acme/synaxic/other-control", "--json"], outs);
    expect(r.read).toContain("acme/synaxic/other-control");
    expect(r.read).not.toContain(CONTROL_STACK);
    // Judged against that one: main is to be primary, but it is a standby.
    expect(JSON.parse(r.stdout).problems.map((p: Problem) => `${p.kind} ${p.host}`)).toEqual(expect.arrayContaining(["primary-in-recovery main", "two-primaries replica-1"]));
  });

  it("refuses stacks that disagree about the control stack, a stack deployed under one that does not name it, and a malformed control output", async () => {
    const two = outputs();
    two[STACKS["replica-2"]]!.controlStack = "acme/synaxic/control-2";
    const a = await run(["--main", MAIN], two);
    expect(a.code).toBe(1);
    expect(a.stderr).toBe(`status: stacks ${MAIN} and ${STACKS["replica-2"]} name different control stacks (${CONTROL_STACK}, acme/synaxic/control-2): set the same controlStack on every host stack\n`);
    const unnamed = outputs();
    delete unnamed[MAIN]!.controlStack;
    expect(() => controlStackOf([{ stack: MAIN, outputs: unnamed[MAIN]! }])).toThrow(/was deployed under a control stack \(output controlGeneration\) but does not name it/);
    const bad = await run(["--main", MAIN], outputs({ version: 1, primary: "replica-1", generation: -1, previousPrimary: "main", fenced: {} }));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^status: stack acme\/synaxic\/control: output "control\.generation" is malformed/);
  });
});
