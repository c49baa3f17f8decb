import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  alertRuleGroups,
  knownMetrics,
  referencedMetricNames,
  renderAlertRules,
  renderCertExpiryTextfile,
  renderPrometheusConfig,
  renderTargetsFiles,
  targetsFileName,
  CERT_EXPIRY_METRIC,
  DEFAULT_ALERT_THRESHOLDS,
  PROMETHEUS_SERVER_LABEL,
  JOBS,
  WATCHDOG_ALERT,
  type AlertRulesParams,
  type MonitoredHost,
} from "../../../templates/prometheus";

const MAIN: MonitoredHost = { name: "main", role: "main", address: "10.0.1.10" };
const REPLICA_HOSTS: MonitoredHost[] = [
  { name: "replica1", role: "replica", address: "10.0.1.11" },
  { name: "replica2", role: "replica", address: "10.0.1.12" },
  { name: "replica-3", role: "replica", address: "fd00::13" },
];
const REPLICAS = REPLICA_HOSTS.map((h) => ({ name: h.name, slotName: `synaxic_${h.name.replace(/-/g, "_")}` }));
const MAIN_STANDBY = { name: "main", slotName: "synaxic_main" };

interface ScrapeConfig {
  job_name: string;
  metrics_path?: string;
  static_configs?: { targets: string[]; labels?: Record<string, string> }[];
  file_sd_configs?: { files: string[]; refresh_interval: string }[];
}

describe("renderPrometheusConfig", () => {
  it("renders the defaults (snapshot)", () => {
    expect(renderPrometheusConfig()).toMatchSnapshot();
  });

  it("renders with every option (snapshot)", () => {
    expect(
      renderPrometheusConfig({
        scrapeInterval: "30s",
        scrapeTimeout: "20s",
        evaluationInterval: "1m",
        ruleFiles: ["/etc/prometheus/rules/*.yml", "/etc/prometheus/extra.yml"],
        targetsDir: "/srv/targets/",
        targetsRefreshInterval: "2m",
        selfTarget: "localhost:9090",
        selfLabels: { host: "main", role: "main" },
        externalLabels: { cluster: "synaxic" },
        alertmanagers: ["10.0.1.10:9093"],
      }),
    ).toMatchSnapshot();
  });

  it("scrapes the app's actuator and takes host-derived targets from files in targetsDir", () => {
    const doc = parse(renderPrometheusConfig({ targetsDir: "/etc/prometheus/targets" })) as { rule_files: string[]; scrape_configs: ScrapeConfig[] };
    expect(doc.rule_files).toEqual(["/etc/prometheus/rules/*.yml"]);
    const jobs = Object.fromEntries(doc.scrape_configs.map((c) => [c.job_name, c]));
    expect(Object.keys(jobs).sort()).toEqual(["node", "postgres", "prometheus", "redis", "synaxic-app"]);
    expect(jobs[JOBS.app]!.metrics_path).toBe("/actuator/prometheus");
    for (const job of [JOBS.app, JOBS.postgres, JOBS.redis, JOBS.node]) {
      expect(jobs[job]!.file_sd_configs![0]!.files).toEqual([`/etc/prometheus/targets/${targetsFileName(job)}`]);
      expect(jobs[job]!.static_configs).toBeUndefined();
    }
    expect(jobs[JOBS.prometheus]!.static_configs![0]!.targets).toEqual(["localhost:9090"]);
  });

  it.each([
    ["a scrape timeout above the interval", { scrapeInterval: "10s", scrapeTimeout: "15s" }, /scrapeTimeout 15s exceeds scrapeInterval 10s/],
    ["a duration without a unit", { evaluationInterval: "15" }, /evaluationInterval must be a Prometheus duration/],
    ["a zero duration", { scrapeInterval: "0s" }, /longer than zero/],
    ["a glob as targetsDir", { targetsDir: "/etc/prometheus/*" }, /targetsDir/],
    ["no rule files", { ruleFiles: [] }, /ruleFiles must name at least one/],
    ["a self target without a port", { selfTarget: "localhost" }, /selfTarget must be host:port/],
    ["an alertmanager with a bad port", { alertmanagers: ["am:99999"] }, /port number/],
    ["a reserved label name", { externalLabels: { __name__: "x" } }, /invalid label name/],
    ["a label name with a dash", { selfLabels: { "bad-name": "x" } }, /invalid label name/],
    ["dropping a label the server does not add", { externalLabels: { [PROMETHEUS_SERVER_LABEL]: "main" }, alertmanagers: ["10.0.1.10:9093"], alertLabelsDropped: ["replica"] }, /alertLabelsDropped: replica is not one of the externalLabels/],
    ["dropping labels with nowhere to send alerts", { externalLabels: { [PROMETHEUS_SERVER_LABEL]: "main" }, alertLabelsDropped: [PROMETHEUS_SERVER_LABEL] }, /alertLabelsDropped needs alertmanagers/],
  ] as const)("rejects %s", (_, params, message) => {
    expect(() => renderPrometheusConfig(params)).toThrow(message);
  });

  it("one of a pair (snapshot): its own external label, dropped from alerts, which go to every Alertmanager of the cluster", () => {
    const text = renderPrometheusConfig({
      selfTarget: "127.0.0.1:9090",
      selfLabels: { host: "replica1", role: "replica" },
      externalLabels: { [PROMETHEUS_SERVER_LABEL]: "replica1" },
      alertLabelsDropped: [PROMETHEUS_SERVER_LABEL],
      alertmanagers: ["10.0.1.10:9093", "10.0.1.11:9093"],
    });
    expect(text).toMatchSnapshot();
    const doc = parse(text) as { global: { external_labels: Record<string, string> }; alerting: { alert_relabel_configs: unknown[]; alertmanagers: { static_configs: { targets: string[] }[] }[] } };
    expect(doc.global.external_labels).toEqual({ prometheus_host: "replica1" });
    expect(doc.alerting.alert_relabel_configs).toEqual([{ action: "labeldrop", regex: "prometheus_host" }]);
    expect(doc.alerting.alertmanagers[0]!.static_configs[0]!.targets).toEqual(["10.0.1.10:9093", "10.0.1.11:9093"]);
    // Not the label per-replica alerts carry: dropping it would merge different replicas' alerts.
    expect(PROMETHEUS_SERVER_LABEL).not.toBe("replica");
    // Without a pair nothing is dropped.
    expect(renderPrometheusConfig({ alertmanagers: ["127.0.0.1:9093"] })).not.toContain("alert_relabel_configs");
  });
});

describe("renderTargetsFiles", () => {
  it.each([0, 1, 3])("renders one target group per host with %i replicas (snapshot)", (n) => {
    const files = renderTargetsFiles({ hosts: [MAIN, ...REPLICA_HOSTS.slice(0, n)] });
    expect(Object.keys(files).sort()).toEqual(["node.json", "postgres.json", "redis.json", "synaxic-app.json"]);
    for (const [file, content] of Object.entries(files)) {
      const groups = JSON.parse(content) as { targets: string[]; labels: Record<string, string> }[];
      expect(groups, file).toHaveLength(n + 1);
      expect(groups.map((g) => g.labels)).toEqual([MAIN, ...REPLICA_HOSTS.slice(0, n)].map((h) => ({ host: h.name, role: h.role })));
    }
    expect(files).toMatchSnapshot();
  });

  it("uses the given ports, brackets IPv6 addresses and honours per-host overrides", () => {
    const files = renderTargetsFiles({
      hosts: [{ ...MAIN, targetOverrides: { app: "172.30.0.20:8080" } }, REPLICA_HOSTS[2]!],
      ports: { app: 18080, nodeExporter: 19100, postgresExporter: 19187, redisExporter: 19121 },
    });
    const targets = (f: string) => (JSON.parse(files[f]!) as { targets: string[] }[]).map((g) => g.targets[0]);
    expect(targets("synaxic-app.json")).toEqual(["172.30.0.20:8080", "[fd00::13]:18080"]);
    expect(targets("node.json")).toEqual(["10.0.1.10:19100", "[fd00::13]:19100"]);
    expect(targets("postgres.json")).toEqual(["10.0.1.10:19187", "[fd00::13]:19187"]);
    expect(targets("redis.json")).toEqual(["10.0.1.10:19121", "[fd00::13]:19121"]);
  });

  it("ignores unrelated ports in the ports object", () => {
    const ports = { app: 8080, nodeExporter: 9100, postgresExporter: 9187, redisExporter: 9121, grafana: 3000, prometheus: 9090 };
    expect(renderTargetsFiles({ hosts: [MAIN], ports })).toEqual(renderTargetsFiles({ hosts: [MAIN] }));
  });

  it.each([
    ["no hosts", [], /at least the main host/],
    ["no main host", [REPLICA_HOSTS[0]!], /exactly one host must have role main, found 0/],
    ["two main hosts", [MAIN, { ...REPLICA_HOSTS[0]!, role: "main" }], /found 2/],
    ["a duplicate name", [MAIN, { ...REPLICA_HOSTS[0]!, name: "main" }], /duplicate host name "main"/],
    ["a duplicate address", [MAIN, { ...REPLICA_HOSTS[0]!, address: MAIN.address }], /duplicate host address 10\.0\.1\.10/],
    ["an address with a port", [{ ...MAIN, address: "10.0.1.10:9100" }], /invalid address/],
    ["an address out of range", [{ ...MAIN, address: "10.0.1.300" }], /invalid address/],
    ["an unknown role", [{ ...MAIN, role: "primary" as "main" }], /role "primary"/],
    ["an upper-case host name", [{ ...MAIN, name: "Main" }], /host name "Main"/],
    ["an unknown override", [{ ...MAIN, targetOverrides: { grafana: "x:1" } as unknown as MonitoredHost["targetOverrides"] }], /unknown service "grafana"/],
    ["an override without a port", [{ ...MAIN, targetOverrides: { app: "172.30.0.20" } }], /must be host:port/],
  ] as [string, MonitoredHost[], RegExp][])("rejects %s", (_, hosts, message) => {
    expect(() => renderTargetsFiles({ hosts })).toThrow(message);
  });
});

interface RuleDoc {
  groups: { name: string; rules: { alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> }[] }[];
}

function rules(params: AlertRulesParams): RuleDoc["groups"][number]["rules"] {
  return (parse(renderAlertRules(params)) as RuleDoc).groups.flatMap((g) => g.rules);
}

describe("renderAlertRules", () => {
  it.each([0, 1, 3])("renders with %i replicas (snapshot)", (n) => {
    expect(renderAlertRules({ replicas: REPLICAS.slice(0, n) })).toMatchSnapshot();
  });

  it("the YAML holds exactly alertRuleGroups, each rule with a severity, summary and description", () => {
    const params = { replicas: REPLICAS };
    expect((parse(renderAlertRules(params)) as RuleDoc).groups).toEqual(JSON.parse(JSON.stringify(alertRuleGroups(params))));
    for (const r of rules(params)) {
      expect(r.alert === WATCHDOG_ALERT ? ["none"] : ["warning", "critical"], r.alert).toContain(r.labels.severity);
      expect(r.annotations.summary, r.alert).toBeTruthy();
      expect(r.annotations.description, r.alert).toBeTruthy();
    }
  });

  it("covers every failure the deployment must report", () => {
    const names = new Set(rules({ replicas: REPLICAS }).map((r) => r.alert));
    for (const a of [
      "SynaxicReplicationLagBytes", "SynaxicReplicationReplayLag", "SynaxicReplicaDisconnected", "SynaxicReplicationSlotMissing",
      "SynaxicPostgresDown", "SynaxicSlotRetainingWal", "SynaxicSlotLost", "SynaxicRedisReplicaLinkDown", "SynaxicRedisReplicasMissing",
      "SynaxicDiskSpaceLow", "SynaxicDiskFillingUp", "SynaxicCertificateExpiringSoon", "SynaxicCertificateExpiryCritical", "SynaxicAppDown",
    ]) {
      expect(names, a).toContain(a);
    }
  });

  it("one slot-missing rule per configured replica, and the Redis replica count follows the replicas", () => {
    const three = rules({ replicas: REPLICAS });
    const missing = three.filter((r) => r.alert === "SynaxicReplicationSlotMissing");
    expect(missing.map((r) => r.labels.replica)).toEqual(REPLICAS.map((r) => r.name));
    for (const [i, r] of missing.entries()) expect(r.expr).toContain(`synaxic_slot_active{slot_name="${REPLICAS[i]!.slotName}"}`);
    expect(three.find((r) => r.alert === "SynaxicRedisReplicasMissing")!.expr).toBe('redis_connected_slaves{role="main"} < 3');

    const none = rules({ replicas: [] });
    expect(none.some((r) => r.alert === "SynaxicReplicationSlotMissing")).toBe(false);
    expect(none.some((r) => r.alert === "SynaxicRedisReplicasMissing")).toBe(false);
    expect(rules({ replicas: [], expectedRedisReplicas: 2 }).find((r) => r.alert === "SynaxicRedisReplicasMissing")!.expr).toContain("< 2");
  });

  it("puts the thresholds into the expressions and durations", () => {
    const r = rules({
      replicas: REPLICAS.slice(0, 1),
      thresholds: { replicationLagBytes: 1234, replicationLagFor: "7m", replayLagSeconds: 9, slotRetainedBytes: 5678, diskFreeRatio: 0.2, certWarningDays: 30, certCriticalDays: 3 },
    });
    const by = (a: string) => r.find((x) => x.alert === a)!;
    expect(by("SynaxicReplicationLagBytes").expr).toBe('synaxic_replication_lag_bytes{application_name="replica1"} > 1234');
    expect(by("SynaxicReplicationLagBytes").for).toBe("7m");
    expect(by("SynaxicReplicationReplayLag").expr).toBe('synaxic_replication_replay_lag_seconds{application_name="replica1"} > 9');
    expect(by("SynaxicSlotRetainingWal").expr).toBe('synaxic_slot_retained_bytes{slot_name="synaxic_replica1"} > 5678');
    expect(by("SynaxicDiskSpaceLow").expr).toMatch(/ < 0\.2$/);
    expect(by("SynaxicCertificateExpiringSoon").expr).toBe(`${CERT_EXPIRY_METRIC} - time() < 30 * 86400`);
    expect(by("SynaxicCertificateExpiryCritical").expr).toBe(`${CERT_EXPIRY_METRIC} - time() < 3 * 86400`);
  });

  it("waits before alerting on lag and disconnection (for: 2m and 1m by default)", () => {
    const r = rules({ replicas: REPLICAS });
    expect(r.find((x) => x.alert === "SynaxicReplicationLagBytes")!.for).toBe(DEFAULT_ALERT_THRESHOLDS.replicationLagFor);
    expect(DEFAULT_ALERT_THRESHOLDS.replicationLagFor).toBe("2m");
    expect(r.find((x) => x.alert === "SynaxicReplicaDisconnected")!.for).toBe("1m");
  });

  it("never measures lag as time since the last replayed transaction", () => {
    for (const r of rules({ replicas: REPLICAS })) {
      expect(r.expr).not.toContain("pg_last_xact_replay_timestamp");
      if (!r.expr.includes(CERT_EXPIRY_METRIC)) expect(r.expr).not.toContain("time()");
    }
  });

  it("excludes tmpfs and overlay from the disk alerts", () => {
    for (const r of rules({ replicas: [] }).filter((x) => x.alert.startsWith("SynaxicDisk"))) {
      expect(r.expr).toMatch(/fstype!~"[^"]*tmpfs[^"]*overlay/);
    }
  });

  it("references only metrics that the exporters and the textfile define", () => {
    const known = knownMetrics();
    for (const r of rules({ replicas: REPLICAS })) {
      const names = referencedMetricNames(r.expr);
      if (r.alert === WATCHDOG_ALERT) continue;
      expect(names.length, r.alert).toBeGreaterThan(0);
      for (const n of names) expect(known, `${r.alert} uses ${n}`).toHaveProperty([n]);
    }
  });

  it("an unexpected slot is any slot but the replicas' and the other standbys'", () => {
    const rule = (params: AlertRulesParams) => alertRuleGroups(params).flatMap((g) => g.rules).find((r) => r.alert === "SynaxicUnexpectedReplicationSlot")!;
    expect(rule({ replicas: REPLICAS.slice(0, 2), otherStandbys: [MAIN_STANDBY] }).expr).toBe('synaxic_slot_active{slot_name!~"synaxic_replica1|synaxic_replica2|synaxic_main"}');
    // No replica: every slot is unexpected.
    expect(rule({ replicas: [] }).expr).toBe('synaxic_slot_active{slot_name!~""}');
  });

  it("every rule about one standby selects only its series and carries its name as `replica`; rules about no one standby carry none", () => {
    const all = rules({ replicas: REPLICAS, otherStandbys: [MAIN_STANDBY] });
    const standbys = [...REPLICAS, MAIN_STANDBY];
    // A rule is about one standby when it selects by application_name or a single slot_name.
    const perStandby = all.filter((r) => /application_name="|slot_name="/.test(r.expr));
    expect(perStandby.length).toBeGreaterThan(0);
    for (const r of perStandby) {
      const s = standbys.find((x) => x.name === r.labels.replica);
      expect(s, `${r.alert}: ${r.expr}`).toBeDefined();
      const selected = [...r.expr.matchAll(/(application_name|slot_name)="([^"]*)"/g)].map((m) => m[2]);
      for (const v of selected) expect([s!.name, s!.slotName], `${r.alert} for ${s!.name}`).toContain(v);
    }
    // Each of the lag, retention and disconnection alerts exists once per standby (main included after a failover).
    for (const a of ["SynaxicReplicationLagBytes", "SynaxicReplicationReplayLag", "SynaxicReplicaDisconnected", "SynaxicSlotRetainingWal", "SynaxicSlotLost"]) {
      expect(all.filter((r) => r.alert === a).map((r) => r.labels.replica).sort(), a).toEqual(standbys.map((s) => s.name).sort());
    }
    // The Redis replica's link alert takes `replica` from the host it is scraped on.
    expect(all.find((r) => r.alert === "SynaxicRedisReplicaLinkDown")!.expr).toBe('label_replace(redis_master_link_up == 0, "replica", "$1", "host", "(.+)")');
    // Host-level rules have no replica label of their own.
    for (const a of ["SynaxicPostgresDown", "SynaxicDiskSpaceLow", "SynaxicAppDown", "SynaxicUnexpectedReplicationSlot", WATCHDOG_ALERT]) {
      expect(all.find((r) => r.alert === a)!.labels.replica, a).toBeUndefined();
    }
  });

  it("a Watchdog that always fires (vector(1)), with severity none and no for:", () => {
    const w = rules({ replicas: [] }).filter((r) => r.alert === WATCHDOG_ALERT);
    expect(w).toHaveLength(1);
    expect(w[0]!.expr).toBe("vector(1)");
    expect(w[0]!.for).toBeUndefined();
    expect(w[0]!.labels).toEqual({ severity: "none" });
  });

  it.each([
    ["two replicas on one slot", { replicas: [REPLICAS[0]!, { name: "replica9", slotName: REPLICAS[0]!.slotName }] }, /share the slot "synaxic_replica1"/],
    ["a duplicate replica", { replicas: [REPLICAS[0]!, { ...REPLICAS[0]!, slotName: "other" }] }, /duplicate replica "replica1"/],
    ["a slot name with a dash", { replicas: [{ name: "replica1", slotName: "synaxic-replica1" }] }, /slot name "synaxic-replica1"/],
    ["a slot name that would break out of the label matcher", { replicas: [{ name: "replica1", slotName: 'x"} or vector(1) #' }] }, /slot name/],
    ["a negative threshold", { replicas: [], thresholds: { replicationLagBytes: -1 } }, /replicationLagBytes must be a non-negative number/],
    ["a disk ratio above 1", { replicas: [], thresholds: { diskFreeRatio: 10 } }, /diskFreeRatio must be between 0 and 1/],
    ["a bad duration", { replicas: [], thresholds: { replayLagFor: "two minutes" } }, /replayLagFor must be a Prometheus duration/],
    ["critical days above warning days", { replicas: [], thresholds: { certCriticalDays: 30, certWarningDays: 10 } }, /certCriticalDays must not exceed/],
    ["a fractional Redis count", { replicas: [], expectedRedisReplicas: 1.5 }, /expectedRedisReplicas/],
    ["another slot that would break out of the regex", { replicas: [], otherStandbys: [{ name: "main", slotName: "x|.*" }] }, /slot name "x\|\.\*" in otherStandbys/],
    ["another standby on a replica's slot", { replicas: [REPLICAS[0]!], otherStandbys: [{ name: "main", slotName: REPLICAS[0]!.slotName }] }, /otherStandbys names "synaxic_replica1", a replica's slot/],
    ["another standby named like a replica", { replicas: [REPLICAS[0]!], otherStandbys: [{ name: "replica1", slotName: "synaxic_x" }] }, /otherStandbys names "replica1", a replica/],
    ["another standby whose name would break out of a label matcher", { replicas: [], otherStandbys: [{ name: 'm"} or vector(1) #', slotName: "synaxic_m" }] }, /standby name/],
  ] as [string, AlertRulesParams, RegExp][])("rejects %s", (_, params, message) => {
    expect(() => renderAlertRules(params)).toThrow(message);
  });
});

describe("knownMetrics and referencedMetricNames", () => {
  it("derives the database metrics from the exporter queries", () => {
    const known = knownMetrics();
    for (const m of ["synaxic_replication_lag_bytes", "synaxic_replication_replay_lag_seconds", "synaxic_slot_active", "synaxic_slot_retained_bytes", "synaxic_slot_lost"]) {
      expect(known[m]?.source, m).toBe("postgres-exporter queries");
    }
    expect(known[CERT_EXPIRY_METRIC]?.source).toBe("node_exporter textfile");
  });

  it("finds metric names but not functions, keywords, labels or durations", () => {
    expect(referencedMetricNames('sum by (slot_name) (rate(foo_total{a="b", c=~"d|e"}[5m])) / ignoring(x) bar offset 1h > 1e6 and on() baz == bool 2')).toEqual([
      "bar", "baz", "foo_total",
    ]);
    expect(referencedMetricNames('absent(up{job="x"}) or vector(0)')).toEqual(["up"]);
  });
});

describe("renderCertExpiryTextfile", () => {
  it("renders one series per certificate with HELP and TYPE (snapshot)", () => {
    const text = renderCertExpiryTextfile([
      { name: "https", notAfter: new Date("2027-03-01T12:00:00Z") },
      { name: "redis-main", notAfter: "2026-12-31T23:59:59.900Z" },
    ]);
    expect(text).toMatchSnapshot();
    expect(text).toContain(`# TYPE ${CERT_EXPIRY_METRIC} gauge\n`);
    expect(text).toContain(`${CERT_EXPIRY_METRIC}{name="https"} ${Date.UTC(2027, 2, 1, 12) / 1000}\n`);
    expect(text).toContain(`${CERT_EXPIRY_METRIC}{name="redis-main"} ${Math.floor(Date.UTC(2026, 11, 31, 23, 59, 59) / 1000)}\n`);
  });

  it("gives the same value for a Date and its ISO string", () => {
    const d = new Date("2027-01-02T03:04:05Z");
    expect(renderCertExpiryTextfile([{ name: "a", notAfter: d }])).toBe(renderCertExpiryTextfile([{ name: "a", notAfter: d.toISOString() }]));
  });

  it("escapes label values", () => {
    const text = renderCertExpiryTextfile([{ name: 'we"ird\\name\nx', notAfter: new Date(0) }]);
    expect(text).toContain(`${CERT_EXPIRY_METRIC}{name="we\\"ird\\\\name\\nx"} 0\n`);
    expect(text.trimEnd().split("\n")).toHaveLength(3);
  });

  it("with no certificates has only the HELP and TYPE lines", () => {
    expect(renderCertExpiryTextfile([]).trimEnd().split("\n")).toHaveLength(2);
  });

  it.each([
    ["an invalid date", [{ name: "x", notAfter: "not a date" }], /invalid notAfter "not a date"/],
    ["a duplicate name", [{ name: "x", notAfter: new Date() }, { name: "x", notAfter: new Date() }], /duplicate certificate name "x"/],
    ["an empty name", [{ name: "", notAfter: new Date() }], /needs a name/],
  ] as const)("rejects %s", (_, certs, message) => {
    expect(() => renderCertExpiryTextfile(certs)).toThrow(message);
  });
});
