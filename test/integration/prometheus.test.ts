/**
 * The rendered Prometheus files, checked by the real tools:
 * - promtool check config / check rules on the files as rendered;
 * - promtool test rules: every alert fires on the condition it is for (and
 *   not before its `for:`), and nothing fires on an idle, healthy fleet;
 * - the real prometheus binary in a namespace, scraping app stubs and a real
 *   node_exporter (with the rendered certificate textfile), picking up a
 *   rewritten targets file without a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { TestNet, waitFor, type Host } from "../rig/net";
import { AppStub } from "../rig/appStub";
import { NodeExporter, PrometheusServer, promtool } from "../rig/prometheus";
import {
  alertRuleGroups,
  renderAlertRules,
  renderCertExpiryTextfile,
  renderPrometheusConfig,
  renderTargetsFiles,
  DEFAULT_ALERT_THRESHOLDS,
  DEFAULT_EXPORTER_PORTS,
  JOBS,
  WATCHDOG_ALERT,
  type AlertRule,
  type AlertRulesParams,
  type MonitoredHost,
} from "../../templates/prometheus";

const REPLICAS = [
  { name: "replica1", slotName: "synaxic_replica1" },
  { name: "replica2", slotName: "synaxic_replica2" },
];
const RULES_PARAMS: AlertRulesParams = { replicas: REPLICAS, otherStandbys: [{ name: "main", slotName: "synaxic_main" }] };
const FLEET: MonitoredHost[] = [
  { name: "main", role: "main", address: "10.0.0.1" },
  { name: "replica1", role: "replica", address: "10.0.0.2" },
  { name: "replica2", role: "replica", address: "10.0.0.3" },
];
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

let dir: string;
let rulesFile: string;
let configFile: string;

/** Renders the files into `root` with the layout the config references (as the deployment does under /etc/prometheus). */
function renderInto(root: string, hosts: readonly MonitoredHost[], rules: AlertRulesParams, extra: Parameters<typeof renderPrometheusConfig>[0] = {}): { config: string; rules: string } {
  mkdirSync(join(root, "rules"), { recursive: true });
  mkdirSync(join(root, "targets"), { recursive: true });
  const config = join(root, "prometheus.yml");
  const rulesPath = join(root, "rules", "synaxic.yml");
  writeFileSync(config, renderPrometheusConfig({ ruleFiles: [join(root, "rules", "*.yml")], targetsDir: join(root, "targets"), ...extra }));
  writeFileSync(rulesPath, renderAlertRules(rules));
  writeTargets(root, hosts);
  return { config, rules: rulesPath };
}

/** Writes the targets files the way the deployment must: a temp file renamed over the old one. */
function writeTargets(root: string, hosts: readonly MonitoredHost[], ports = DEFAULT_EXPORTER_PORTS): void {
  for (const [file, content] of Object.entries(renderTargetsFiles({ hosts, ports }))) {
    const tmp = join(root, "targets", `.${file}.tmp`);
    writeFileSync(tmp, content);
    renameSync(tmp, join(root, "targets", file));
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "synaxic-prom-"));
  const r = renderInto(join(dir, "etc"), FLEET, RULES_PARAMS);
  rulesFile = r.rules;
  configFile = r.config;
});

afterAll(() => {
  if (dir && !process.env.SYNAXIC_KEEP_RIG) rmSync(dir, { recursive: true, force: true });
});

describe("promtool on the rendered files", () => {
  it("check config passes, and reads the rule files and the target files", async () => {
    const r = await promtool(["check", "config", configFile]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("SUCCESS: 1 rule files found");
    expect(r.stdout).toMatch(/SUCCESS: .*prometheus\.yml is valid prometheus config file syntax/);
    expect(r.stdout + r.stderr).not.toContain("FAILED");

    // The check really looks at the target files: a broken one fails it.
    const broken = join(dir, "broken");
    renderInto(broken, FLEET, RULES_PARAMS);
    writeFileSync(join(broken, "targets", "node.json"), '[{"targets": ["10.0.0.1:9100"], "labels": {"host": ');
    const b = await promtool(["check", "config", join(broken, "prometheus.yml")]);
    expect(b.code).not.toBe(0);
    expect(b.stdout + b.stderr).toContain("node.json");
  });

  it("the certificate textfile passes promtool check metrics (the text format node_exporter parses)", async () => {
    const text = renderCertExpiryTextfile([
      { name: "https", notAfter: new Date("2027-01-01T00:00:00Z") },
      { name: 'odd "name" \\ here', notAfter: "2027-06-01T00:00:00Z" },
    ]);
    const r = await promtool(["check", "metrics"], { input: text });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // And a malformed line is reported, so the check does look at the text.
    const bad = await promtool(["check", "metrics"], { input: `${text}synaxic_certificate_expiry_timestamp_seconds{name="x} 1\n` });
    expect(bad.code).not.toBe(0);
  });

  it("check rules passes and counts every rule", async () => {
    const total = alertRuleGroups(RULES_PARAMS).reduce((n, g) => n + g.rules.length, 0);
    const r = await promtool(["check", "rules", rulesFile]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toContain(`SUCCESS: ${total} rules found`);
    // promtool reports lint findings (such as duplicate rules) as FAILED while still exiting 0.
    expect(r.stdout + r.stderr).not.toContain("FAILED");
  });
});

// ---------------------------------------------------------------------------
// promtool test rules
// ---------------------------------------------------------------------------

type Labels = Record<string, string>;

const RULES: AlertRule[] = alertRuleGroups(RULES_PARAMS).flatMap((g) => g.rules);
// The Watchdog always fires; every other alert is quiet on a healthy fleet.
const ALERT_NAMES = [...new Set(RULES.map((r) => r.alert))].filter((a) => a !== WATCHDOG_ALERT);

/** The rule of `alert` for one standby (per-replica rules exist once per standby). */
function forReplica(name: string): (r: AlertRule) => boolean {
  return (r) => r.labels.replica === name;
}

function rule(alert: string, pick: (r: AlertRule) => boolean = () => true): AlertRule {
  const found = RULES.filter((r) => r.alert === alert && pick(r));
  if (found.length !== 1) throw new Error(`expected one rule ${alert}, found ${found.length}`);
  return found[0]!;
}

/** The labels Prometheus attaches to a series scraped from a host's job. */
function target(job: string, host: string): Labels {
  const h = FLEET.find((f) => f.name === host)!;
  const port = { [JOBS.app]: DEFAULT_EXPORTER_PORTS.app, [JOBS.postgres]: DEFAULT_EXPORTER_PORTS.postgresExporter, [JOBS.redis]: DEFAULT_EXPORTER_PORTS.redisExporter, [JOBS.node]: DEFAULT_EXPORTER_PORTS.nodeExporter }[job];
  return { job, instance: `${h.address}:${port}`, host: h.name, role: h.role };
}

/** The app's second deploy slot on a host (appPort + 1), idle in a healthy fleet. */
function idleSlot(host: string): Labels {
  const t = target(JOBS.app, host);
  return { ...t, instance: t.instance.replace(/:(\d+)$/, (_, p: string) => `:${Number(p) + 1}`) };
}

function seriesText(metric: string, labels: Labels): string {
  const inner = Object.entries(labels)
    .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`)
    .join(", ");
  return `${metric}{${inner}}`;
}

/** Fills an annotation template: label references from `labels`, any {{ $value ... }} with `value` (Go's formatting, written by hand). */
function expand(template: string, labels: Labels, value: string): string {
  return template
    .replace(/\{\{ \$labels\.([a-zA-Z_]+) \}\}/g, (_, k: string) => labels[k] ?? "")
    .replace(/\{\{ \$value( \| [a-zA-Z0-9]+)? \}\}/g, value);
}

function firing(r: AlertRule, labels: Labels, value: string): { exp_labels: Labels; exp_annotations: Record<string, string> } {
  const all = { ...labels, ...r.labels };
  return {
    exp_labels: all,
    exp_annotations: { summary: expand(r.annotations.summary, all, value), description: expand(r.annotations.description, all, value) },
  };
}

/** Input series of a healthy, idle fleet: no writes, so zero lag however much time passes. */
function healthyFleet(samples: number): Map<string, string> {
  const m = new Map<string, string>();
  const flat = (v: number): string => `${v}x${samples}`;
  for (const h of FLEET) {
    for (const job of [JOBS.app, JOBS.postgres, JOBS.redis, JOBS.node]) m.set(seriesText("up", target(job, h.name)), flat(1));
    // The app's idle deploy slot (templates/app.ts): scraped, and down.
    m.set(seriesText("up", idleSlot(h.name)), flat(0));
    m.set(seriesText("pg_up", target(JOBS.postgres, h.name)), flat(1));
    m.set(seriesText("redis_connected_slaves", target(JOBS.redis, h.name)), flat(h.role === "main" ? REPLICAS.length : 0));
    if (h.role === "replica") m.set(seriesText("redis_master_link_up", target(JOBS.redis, h.name)), flat(1));
    const fs = { device: "/dev/sda1", fstype: "ext4", mountpoint: "/" };
    m.set(seriesText("node_filesystem_size_bytes", { ...target(JOBS.node, h.name), ...fs }), flat(100 * GiB));
    m.set(seriesText("node_filesystem_avail_bytes", { ...target(JOBS.node, h.name), ...fs }), flat(50 * GiB));
    m.set(seriesText("node_filesystem_readonly", { ...target(JOBS.node, h.name), ...fs }), flat(0));
  }
  const main = target(JOBS.postgres, "main");
  for (const [i, r] of REPLICAS.entries()) {
    const walsender = { application_name: r.name, client_addr: FLEET[i + 1]!.address };
    m.set(seriesText("synaxic_replication_lag_bytes", { ...main, ...walsender, state: "streaming" }), flat(0));
    m.set(seriesText("synaxic_replication_replay_lag_seconds", { ...main, ...walsender }), flat(0));
    m.set(seriesText("synaxic_slot_active", { ...main, slot_name: r.slotName }), flat(1));
    m.set(seriesText("synaxic_slot_retained_bytes", { ...main, slot_name: r.slotName }), flat(16 * MiB));
    m.set(seriesText("synaxic_slot_lost", { ...main, slot_name: r.slotName }), flat(0));
  }
  // The certificate metric exactly as the rendered textfile states it (promtool's clock starts at 0).
  for (const [name, s] of certSeries([{ name: "https", notAfter: new Date(365 * 86400_000) }], "main")) m.set(name, flat(s));
  return m;
}

/** Parses renderCertExpiryTextfile's output into input series as node_exporter on `host` would expose them. */
function certSeries(certs: Parameters<typeof renderCertExpiryTextfile>[0], host: string): [string, number][] {
  const text = renderCertExpiryTextfile(certs);
  return text
    .split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const m = /^(\w+)\{name="((?:[^"\\]|\\.)*)"\} (\d+)$/.exec(l);
      if (!m) throw new Error(`unexpected textfile line ${l}`);
      const name = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
      return [seriesText(m[1]!, { ...target(JOBS.node, host), name }), Number(m[3])];
    });
}

interface AlertTest {
  eval_time: string;
  alertname: string;
  exp_alerts: ReturnType<typeof firing>[];
}

async function runScenario(name: string, series: Map<string, string>, tests: AlertTest[]): Promise<void> {
  const file = join(dir, "tests", `${name}.yml`);
  mkdirSync(join(dir, "tests"), { recursive: true });
  const doc = {
    rule_files: [rulesFile],
    evaluation_interval: "1m",
    tests: [
      {
        name,
        interval: "1m",
        input_series: [...series].map(([s, values]) => ({ series: s, values })),
        alert_rule_test: tests,
      },
    ],
  };
  writeFileSync(file, stringify(doc, { lineWidth: 0 }));
  const r = await promtool(["test", "rules", file]);
  expect(r.code, `promtool test rules ${name}:\n${r.stdout}${r.stderr}`).toBe(0);
  expect(r.stdout).toContain("SUCCESS");
}

/** Expect no firing alerts of these names at these times. */
function quiet(times: string[], names: readonly string[] = ALERT_NAMES): AlertTest[] {
  return times.flatMap((eval_time) => names.map((alertname) => ({ eval_time, alertname, exp_alerts: [] })));
}

describe("promtool test rules: each alert fires on its condition, after its for:", () => {
  const SAMPLES = 30;

  it("an idle healthy primary raises nothing, even hours later (lag is measured in bytes, not time since the last replay)", async () => {
    const s = healthyFleet(6 * 60);
    const watchdog = rule(WATCHDOG_ALERT);
    await runScenario("idle-healthy", s, [
      ...quiet(["1m", "10m", "1h", "3h", "6h"]),
      // The Watchdog fires from the first evaluation on, and keeps firing.
      ...["0m", "1h", "6h"].map((eval_time) => ({ eval_time, alertname: WATCHDOG_ALERT, exp_alerts: [firing(watchdog, {}, "1")] })),
    ]);
  });

  it("replication lag in bytes: fires after 2m above the threshold, not on a one-sample spike", async () => {
    const s = healthyFleet(SAMPLES);
    const t = DEFAULT_ALERT_THRESHOLDS.replicationLagBytes;
    const lagging = { ...target(JOBS.postgres, "main"), application_name: "replica1", client_addr: "10.0.0.2", state: "streaming" };
    const spiky = { ...lagging, application_name: "replica2", client_addr: "10.0.0.3" };
    s.set(seriesText("synaxic_replication_lag_bytes", lagging), `0x4 ${100 * MiB}x25`);
    s.set(seriesText("synaxic_replication_lag_bytes", spiky), `0x4 ${t + 1} 0x24`);
    const r = rule("SynaxicReplicationLagBytes", forReplica("replica1"));
    await runScenario("lag-bytes", s, [
      { eval_time: "6m", alertname: r.alert, exp_alerts: [] }, // pending, not yet 2m
      { eval_time: "7m", alertname: r.alert, exp_alerts: [firing(r, lagging, "100Mi")] },
      { eval_time: "20m", alertname: r.alert, exp_alerts: [firing(r, lagging, "100Mi")] },
    ]);
  });

  it("replay lag in seconds: fires after 2m above the threshold", async () => {
    const s = healthyFleet(SAMPLES);
    const l = { ...target(JOBS.postgres, "main"), application_name: "replica2", client_addr: "10.0.0.3" };
    s.set(seriesText("synaxic_replication_replay_lag_seconds", l), "0x4 45x25");
    const r = rule("SynaxicReplicationReplayLag", forReplica("replica2"));
    await runScenario("replay-lag", s, [
      { eval_time: "6m", alertname: r.alert, exp_alerts: [] },
      { eval_time: "8m", alertname: r.alert, exp_alerts: [firing(r, l, "45s")] },
    ]);
  });

  it("synchronous replication: a primary whose commits need a synchronous standby and that has none fires; before that, and on the standbys (never required), it does not", async () => {
    const s = healthyFleet(SAMPLES);
    const main = target(JOBS.postgres, "main");
    s.set(seriesText("synaxic_synchronous_required", main), `1x${SAMPLES}`);
    s.set(seriesText("synaxic_synchronous_standbys", main), "2x4 0x25");
    s.set(seriesText("synaxic_synchronous_waiting", main), "0x4 3x25");
    for (const h of ["replica1", "replica2"]) {
      for (const m of ["synaxic_synchronous_required", "synaxic_synchronous_standbys", "synaxic_synchronous_waiting"]) s.set(seriesText(m, target(JOBS.postgres, h)), `0x${SAMPLES}`);
    }
    const r = rule("SynaxicSynchronousStandbyMissing");
    await runScenario("synchronous-standby-missing", s, [
      { eval_time: "4m", alertname: r.alert, exp_alerts: [] },
      { eval_time: "6m", alertname: r.alert, exp_alerts: [firing(r, main, "1")] },
    ]);
  });

  it("a replica down: its slot goes inactive (after 1m) and its postgres exporter is unreachable", async () => {
    const s = healthyFleet(SAMPLES);
    const slot = { ...target(JOBS.postgres, "main"), slot_name: "synaxic_replica2" };
    s.set(seriesText("synaxic_slot_active", slot), "1x4 0x25");
    s.set(seriesText("up", target(JOBS.postgres, "replica2")), "1x4 0x25");
    s.delete(seriesText("pg_up", target(JOBS.postgres, "replica2")));
    const inactive = rule("SynaxicReplicaDisconnected", forReplica("replica2"));
    const down = rule("SynaxicPostgresDown");
    await runScenario("replica-down", s, [
      { eval_time: "5m", alertname: inactive.alert, exp_alerts: [] },
      { eval_time: "6m", alertname: inactive.alert, exp_alerts: [firing(inactive, slot, "0")] },
      { eval_time: "5m", alertname: down.alert, exp_alerts: [] },
      { eval_time: "6m", alertname: down.alert, exp_alerts: [firing(down, target(JOBS.postgres, "replica2"), "0")] },
    ]);
  });

  it("a configured replica's slot missing altogether fires, unless the primary's exporter is down", async () => {
    const s = healthyFleet(SAMPLES);
    for (const m of ["synaxic_slot_active", "synaxic_slot_retained_bytes", "synaxic_slot_lost"]) {
      s.delete(seriesText(m, { ...target(JOBS.postgres, "main"), slot_name: "synaxic_replica2" }));
    }
    const missing = rule("SynaxicReplicationSlotMissing", (r) => r.expr.includes('"synaxic_replica2"'));
    await runScenario("slot-missing", s, [
      { eval_time: "2m", alertname: missing.alert, exp_alerts: [firing(missing, { slot_name: "synaxic_replica2" }, "1")] },
    ]);

    // With the primary's exporter down the slot series vanish too; only the exporter alert says so.
    const d = healthyFleet(SAMPLES);
    for (const key of [...d.keys()]) if (key.startsWith("synaxic_")) d.delete(key);
    d.set(seriesText("up", target(JOBS.postgres, "main")), `0x${SAMPLES}`);
    d.delete(seriesText("pg_up", target(JOBS.postgres, "main")));
    const down = rule("SynaxicPostgresDown");
    await runScenario("primary-exporter-down", d, [
      { eval_time: "5m", alertname: missing.alert, exp_alerts: [] },
      { eval_time: "5m", alertname: down.alert, exp_alerts: [firing(down, target(JOBS.postgres, "main"), "0")] },
    ]);
  });

  it("a slot the fleet did not create fires after 1m, on any server; the fleet's own (main's, on a promoted replica) does not", async () => {
    const s = healthyFleet(SAMPLES);
    const evil = { ...target(JOBS.postgres, "main"), slot_name: "synaxic_replica9" };
    const onReplica = { ...target(JOBS.postgres, "replica1"), slot_name: "hold_wal" };
    const mains = { ...target(JOBS.postgres, "replica2"), slot_name: "synaxic_main" };
    s.set(seriesText("synaxic_slot_active", evil), `0x${SAMPLES}`);
    s.set(seriesText("synaxic_slot_active", onReplica), `1x${SAMPLES}`);
    s.set(seriesText("synaxic_slot_active", mains), `1x${SAMPLES}`);
    const unexpected = rule("SynaxicUnexpectedReplicationSlot");
    await runScenario("slot-unexpected", s, [
      { eval_time: "30s", alertname: unexpected.alert, exp_alerts: [] },
      { eval_time: "2m", alertname: unexpected.alert, exp_alerts: [firing(unexpected, evil, "0"), firing(unexpected, onReplica, "1")] },
    ]);
    await runScenario("slots-expected", healthyFleet(SAMPLES), [{ eval_time: "5m", alertname: unexpected.alert, exp_alerts: [] }]);
  });

  it("a slot retaining too much WAL fires after 5m; a lost slot fires at once", async () => {
    const s = healthyFleet(SAMPLES);
    const slot1 = { ...target(JOBS.postgres, "main"), slot_name: "synaxic_replica1" };
    const slot2 = { ...target(JOBS.postgres, "main"), slot_name: "synaxic_replica2" };
    s.set(seriesText("synaxic_slot_retained_bytes", slot1), `${16 * MiB}x4 ${3 * GiB}x25`);
    s.set(seriesText("synaxic_slot_lost", slot2), "0x9 1x20");
    const wal = rule("SynaxicSlotRetainingWal", forReplica("replica1"));
    const lost = rule("SynaxicSlotLost", forReplica("replica2"));
    await runScenario("slot-wal", s, [
      { eval_time: "8m", alertname: wal.alert, exp_alerts: [] },
      { eval_time: "10m", alertname: wal.alert, exp_alerts: [firing(wal, slot1, "3Gi")] },
      { eval_time: "9m", alertname: lost.alert, exp_alerts: [] },
      { eval_time: "10m", alertname: lost.alert, exp_alerts: [firing(lost, slot2, "1")] },
    ]);
  });

  it("a Redis replica losing its master link, and the master missing a replica", async () => {
    const s = healthyFleet(SAMPLES);
    s.set(seriesText("redis_master_link_up", target(JOBS.redis, "replica1")), "1x4 0x25");
    s.set(seriesText("redis_connected_slaves", target(JOBS.redis, "main")), "2x4 1x25");
    const link = rule("SynaxicRedisReplicaLinkDown");
    const missing = rule("SynaxicRedisReplicasMissing");
    await runScenario("redis", s, [
      { eval_time: "5m", alertname: link.alert, exp_alerts: [] },
      // `replica` comes from the host the replica's exporter is scraped on.
      { eval_time: "6m", alertname: link.alert, exp_alerts: [firing(link, { ...target(JOBS.redis, "replica1"), replica: "replica1" }, "0")] },
      { eval_time: "5m", alertname: missing.alert, exp_alerts: [] },
      { eval_time: "6m", alertname: missing.alert, exp_alerts: [firing(missing, target(JOBS.redis, "main"), "1")] },
    ]);
  });

  it("a nearly full disk fires (tmpfs and overlay are ignored); a disk filling at a steady rate fires before it is low", async () => {
    const s = healthyFleet(SAMPLES);
    const node = target(JOBS.node, "replica1");
    const root = { ...node, device: "/dev/sda1", fstype: "ext4", mountpoint: "/" };
    s.set(seriesText("node_filesystem_avail_bytes", root), `${50 * GiB}x4 ${5 * GiB}x25`);
    for (const [fstype, mountpoint] of [["tmpfs", "/run"], ["overlay", "/var/lib/docker/overlay2/x/merged"]]) {
      const l = { ...node, device: fstype!, fstype: fstype!, mountpoint: mountpoint! };
      s.set(seriesText("node_filesystem_size_bytes", l), `${GiB}x${SAMPLES}`);
      s.set(seriesText("node_filesystem_avail_bytes", l), `${GiB / 100}x${SAMPLES}`);
      s.set(seriesText("node_filesystem_readonly", l), `0x${SAMPLES}`);
    }
    const low = rule("SynaxicDiskSpaceLow");
    await runScenario("disk-low", s, [
      { eval_time: "8m", alertname: low.alert, exp_alerts: [] },
      { eval_time: "10m", alertname: low.alert, exp_alerts: [firing(low, root, "5%")] },
    ]);

    // 50 GiB free, losing 1 GiB every 10 minutes: full in about 8 hours, though 40% is still free.
    const f = healthyFleet(120);
    const data = { ...target(JOBS.node, "main"), device: "/dev/sdb1", fstype: "ext4", mountpoint: "/var/lib/postgresql" };
    f.set(seriesText("node_filesystem_size_bytes", data), `${100 * GiB}x120`);
    f.set(seriesText("node_filesystem_avail_bytes", data), `${50 * GiB}-${Math.round(GiB / 10)}x120`);
    f.set(seriesText("node_filesystem_readonly", data), "0x120");
    const filling = rule("SynaxicDiskFillingUp");
    await runScenario("disk-filling", f, [
      { eval_time: "25m", alertname: filling.alert, exp_alerts: [] }, // pending for 30m
      { eval_time: "60m", alertname: filling.alert, exp_alerts: [firing(filling, data, "")] },
      { eval_time: "60m", alertname: low.alert, exp_alerts: [] },
    ]);
  });

  it("certificates from the rendered textfile: warning under 21 days, critical under 7", async () => {
    const s = healthyFleet(SAMPLES);
    const day = 86400_000;
    for (const [k, v] of certSeries(
      [
        { name: "redis-main", notAfter: new Date(10 * day) },
        { name: "postgres \"primary\"", notAfter: new Date(3 * day).toISOString() },
        { name: "grafana", notAfter: new Date(90 * day) },
      ],
      "main",
    )) {
      s.set(k, `${v}x${SAMPLES}`);
    }
    const warn = rule("SynaxicCertificateExpiringSoon");
    const crit = rule("SynaxicCertificateExpiryCritical");
    const node = target(JOBS.node, "main");
    await runScenario("certificates", s, [
      { eval_time: "9m", alertname: warn.alert, exp_alerts: [] }, // pending for 10m
      {
        eval_time: "15m",
        alertname: warn.alert,
        exp_alerts: [firing(warn, { ...node, name: "redis-main" }, "9d 23h 45m 0s"), firing(warn, { ...node, name: 'postgres "primary"' }, "2d 23h 45m 0s")],
      },
      { eval_time: "15m", alertname: crit.alert, exp_alerts: [firing(crit, { ...node, name: 'postgres "primary"' }, "2d 23h 45m 0s")] },
    ]);
  });

  it("a deploy that moves the app to its other slot fires nothing: the old slot goes down as the new one comes up", async () => {
    const s = healthyFleet(SAMPLES);
    s.set(seriesText("up", target(JOBS.app, "replica1")), "1x4 0x25");
    s.set(seriesText("up", idleSlot("replica1")), "0x3 1x26");
    const app = rule("SynaxicAppDown");
    await runScenario("app-deploy", s, [
      { eval_time: "5m", alertname: app.alert, exp_alerts: [] },
      { eval_time: "10m", alertname: app.alert, exp_alerts: [] },
    ]);
  });

  it("an app down fires after 1m; a down node or redis exporter is reported too", async () => {
    const s = healthyFleet(SAMPLES);
    s.set(seriesText("up", target(JOBS.app, "replica1")), "1x2 0x27");
    s.set(seriesText("up", target(JOBS.node, "replica2")), "1x2 0x27");
    const app = rule("SynaxicAppDown");
    const exporter = rule("SynaxicExporterDown");
    await runScenario("app-down", s, [
      { eval_time: "3m", alertname: app.alert, exp_alerts: [] },
      // Neither slot up: one alert for the host (the rule keeps host and role only).
      { eval_time: "4m", alertname: app.alert, exp_alerts: [firing(app, { host: "replica1", role: "replica" }, "0")] },
      { eval_time: "4m", alertname: exporter.alert, exp_alerts: [firing(exporter, target(JOBS.node, "replica2"), "0")] },
    ]);
  });
});

// ---------------------------------------------------------------------------
// The real prometheus binary
// ---------------------------------------------------------------------------

describe("prometheus 2.42 with the rendered configuration", () => {
  let net: TestNet;
  let main: Host;
  let replica1: Host;
  let prom: PrometheusServer;
  let root: string;
  const stubs: AppStub[] = [];
  const exporters: NodeExporter[] = [];
  const httpsNotAfter = new Date(Date.now() + 3 * 86400_000);
  let hosts: MonitoredHost[];

  beforeAll(async () => {
    net = await TestNet.create(["main", "replica1"]);
    main = net.host("main");
    replica1 = net.host("replica1");
    hosts = [
      { name: "main", role: "main", address: main.ip },
      { name: "replica1", role: "replica", address: replica1.ip },
    ];
    const apps = net.mkdir("apps");
    for (const h of [main, replica1]) {
      stubs.push(await new AppStub(h, h.name, DEFAULT_EXPORTER_PORTS.app, apps).start());
      const textfiles = net.mkdir(`textfile-${h.name}`);
      const certs = h === main ? [{ name: "https", notAfter: httpsNotAfter }, { name: "redis-main", notAfter: new Date(Date.now() + 200 * 86400_000) }] : [];
      writeFileSync(join(textfiles, "synaxic-certificates.prom"), renderCertExpiryTextfile(certs));
      exporters.push(await new NodeExporter(h, textfiles, DEFAULT_EXPORTER_PORTS.nodeExporter).start());
    }
    root = net.mkdir("prometheus");
    // Only the main host to begin with; replica1 is added later by rewriting the targets files.
    renderInto(root, hosts.slice(0, 1), { replicas: [], thresholds: { targetDownFor: "2s", appDownFor: "2s" } }, {
      scrapeInterval: "1s",
      scrapeTimeout: "1s",
      evaluationInterval: "1s",
      // Long on purpose: a pickup within seconds proves Prometheus watches the files.
      targetsRefreshInterval: "5m",
      selfTarget: `${main.ip}:9090`,
      selfLabels: { host: "main", role: "main" },
    });
    const data = net.mkdir("tsdb");
    prom = await new PrometheusServer(main, join(root, "prometheus.yml"), data).start();
  });

  afterAll(async () => {
    await prom?.stop();
    for (const e of exporters) await e.stop();
    for (const s of stubs) await s.kill();
    await net?.destroy();
  });

  it("scrapes the app and node_exporter on the main host, labelled host and role", async () => {
    const up = await waitFor("app and node targets up", async () => {
      const t = await prom.targets();
      const ok = t.filter((x) => x.health === "up").map((x) => x.scrapePool);
      return ok.includes(JOBS.app) && ok.includes(JOBS.node) && ok.includes(JOBS.prometheus) ? t : undefined;
    }, 20_000, 250);
    const app = up.find((t) => t.scrapePool === JOBS.app && t.health === "up")!;
    expect(app.labels).toMatchObject({ job: JOBS.app, host: "main", role: "main", instance: `${main.ip}:8080` });
    expect(app.scrapeUrl).toBe(`http://${main.ip}:8080/actuator/prometheus`);
    // The app's idle deploy slot is a target too, down (nothing listens there).
    const idle = up.find((t) => t.scrapePool === JOBS.app && t.labels.instance === `${main.ip}:8081`)!;
    expect(idle.labels).toMatchObject({ host: "main", role: "main" });
    // No postgres or redis exporter runs here: their targets exist and are down.
    const pg = up.find((t) => t.scrapePool === JOBS.postgres)!;
    expect(pg.labels).toMatchObject({ host: "main", role: "main", instance: `${main.ip}:9187` });
    await waitFor("postgres target scraped and down", async () => (await prom.targets()).find((t) => t.scrapePool === JOBS.postgres)?.health === "down");

    const samples = await prom.query(`synaxic_stub_requests_total{job="${JOBS.app}"}`);
    expect(samples.map((s) => s.metric.kind).sort()).toEqual(["read", "write"]);
    expect(samples.every((s) => s.metric.host === "main" && s.metric.role === "main")).toBe(true);
  });

  it("scrapes the rendered certificate textfile and evaluates the expiry alerts on it", async () => {
    const s = await waitFor("certificate metric", async () => {
      const r = await prom.query('synaxic_certificate_expiry_timestamp_seconds{name="https"}');
      return r.length === 1 ? r[0] : undefined;
    }, 15_000, 250);
    expect(Number(s.value[1])).toBe(Math.floor(httpsNotAfter.getTime() / 1000));
    expect(s.metric).toMatchObject({ job: JOBS.node, host: "main", role: "main" });

    // 3 days left: both expiry alerts become active for "https" (pending: their for: is 10m); none for redis-main.
    const alerts = await waitFor("expiry alerts", async () => {
      const a = (await prom.alerts()).filter((x) => x.labels.alertname?.startsWith("SynaxicCertificate"));
      return a.length >= 2 ? a : undefined;
    }, 15_000, 250);
    expect(alerts.map((a) => `${a.labels.alertname}/${a.labels.name}/${a.state}`).sort()).toEqual([
      "SynaxicCertificateExpiringSoon/https/pending",
      "SynaxicCertificateExpiryCritical/https/pending",
    ]);

    const groups = await prom.ruleGroups();
    expect(groups.map((g) => g.name).sort()).toEqual(["synaxic-app", "synaxic-host", "synaxic-postgres", "synaxic-redis", "synaxic-watchdog"]);
    const unhealthy = groups.flatMap((g) => g.rules).filter((r) => r.health === "err");
    expect(unhealthy).toEqual([]);
  });

  it("fires the postgres-down alert for the missing exporter, and app-down when the app dies", async () => {
    await waitFor("SynaxicPostgresDown firing", async () =>
      (await prom.alerts()).some((a) => a.labels.alertname === "SynaxicPostgresDown" && a.labels.host === "main" && a.state === "firing"),
    20_000, 250);
    await stubs[0]!.kill();
    const started = Date.now();
    await waitFor("SynaxicAppDown firing", async () =>
      (await prom.alerts()).some((a) => a.labels.alertname === "SynaxicAppDown" && a.labels.host === "main" && a.state === "firing"),
    20_000, 250);
    process.stdout.write(`[prometheus] SynaxicAppDown firing ${Date.now() - started} ms after the app was killed\n`);
    await stubs[0]!.start();
  });

  it("picks up a host added to the targets files without a restart", async () => {
    const pid = prom.pid;
    const started = Date.now();
    writeTargets(root, hosts);
    const t = await waitFor("replica1 targets up", async () => {
      const all = await prom.targets();
      const r1 = all.filter((x) => x.labels.host === "replica1");
      const up = r1.filter((x) => x.health === "up").map((x) => x.scrapePool).sort();
      return up.includes(JOBS.app) && up.includes(JOBS.node) ? r1 : undefined;
    }, 30_000, 200);
    process.stdout.write(`[prometheus] new host scraped ${Date.now() - started} ms after the targets files were rewritten\n`);
    // The app in both its deploy slots (templates/app.ts), one target each.
    expect(t.map((x) => x.scrapePool).sort()).toEqual([JOBS.node, JOBS.postgres, JOBS.redis, JOBS.app, JOBS.app].sort());
    expect(t.every((x) => x.labels.role === "replica")).toBe(true);
    expect(prom.running).toBe(true);
    expect(prom.pid).toBe(pid);
    const up = await prom.query(`max by (host, role) (up{job="${JOBS.app}"})`);
    expect(up.map((s) => `${s.metric.host}/${s.metric.role}=${s.value[1]}`).sort()).toEqual(["main/main=1", "replica1/replica=1"]);
  });
});
