/**
 * Prometheus on the main host: its configuration, the file_sd target files
 * (one per job, derived from the host list), the alert rules, and the
 * node_exporter textfile that exposes certificate expiry dates.
 *
 * The configuration itself does not depend on the host list: hosts come from
 * the target files, which Prometheus re-reads on change, so adding or
 * removing a replica rewrites those files and needs no restart. The alert
 * rules do name the replicas (their slots), so a rules change needs a reload
 * (SIGHUP), not a restart.
 */
import { isIPv4, isIPv6 } from "node:net";
import { stringify } from "yaml";
import { postgresExporterQueries } from "./postgres-exporter";
import { APP_SLOTS, appSlotPort } from "./app";

export type HostRole = "main" | "replica";

export interface MonitoredHost {
  /** Host name; becomes the `host` label of every series scraped from it. */
  name: string;
  role: HostRole;
  /** Address Prometheus reaches the host's services at (IPv4, IPv6 or DNS name; no port). */
  address: string;
  /**
   * host:port to scrape instead of address:port for some services of this
   * host, e.g. the main app over the Docker network: { app: "172.30.0.20:8080" }.
   */
  targetOverrides?: Partial<Record<keyof ExporterPorts, string>>;
}

/** Ports of the services Prometheus scrapes on every host (field names as in the stack's Ports). */
export interface ExporterPorts {
  app: number;
  nodeExporter: number;
  postgresExporter: number;
  redisExporter: number;
}

export const DEFAULT_EXPORTER_PORTS: ExporterPorts = {
  app: 8080,
  nodeExporter: 9100,
  postgresExporter: 9187,
  redisExporter: 9121,
};

/** Scrape job names. The host-derived ones read their targets from <targetsDir>/<job>.json. */
export const JOBS = {
  app: "synaxic-app",
  postgres: "postgres",
  redis: "redis",
  node: "node",
  prometheus: "prometheus",
} as const;

/**
 * How each job authenticates when exporterAuth is given (templates/exporter-web.ts):
 * "tls+basic" a client certificate and basic auth, "tls" a client
 * certificate alone (redis_exporter: templates/exporter-web.ts), "none" plain
 * HTTP (the app serves its actuator itself).
 */
type JobAuth = "tls+basic" | "tls" | "none";

const HOST_JOBS = [
  { job: JOBS.app, port: "app", metricsPath: "/actuator/prometheus", auth: "none" },
  { job: JOBS.postgres, port: "postgresExporter", metricsPath: "/metrics", auth: "tls+basic" },
  { job: JOBS.redis, port: "redisExporter", metricsPath: "/metrics", auth: "tls" },
  { job: JOBS.node, port: "nodeExporter", metricsPath: "/metrics", auth: "tls+basic" },
] as const satisfies readonly { job: string; port: keyof ExporterPorts; metricsPath: string; auth: JobAuth }[];

/** The file_sd file name of a host-derived job. */
export function targetsFileName(job: string): string {
  return `${job}.json`;
}

/**
 * The external label that tells a pair of Prometheus servers apart (its
 * value: the host the server runs on). Not `replica`, which per-replica
 * alerts carry (templates/alertmanager.ts groups and inhibits on it).
 * Dropped from alerts (alertLabelsDropped), so both servers' alerts are one.
 */
export const PROMETHEUS_SERVER_LABEL = "prometheus_host";

export const PROMETHEUS_DEFAULTS = {
  scrapeInterval: "15s",
  scrapeTimeout: "10s",
  evaluationInterval: "15s",
  ruleFiles: ["/etc/prometheus/rules/*.yml"] as readonly string[],
  targetsDir: "/etc/prometheus/targets",
  targetsRefreshInterval: "1m",
  selfTarget: "localhost:9090",
};

// ---------------------------------------------------------------------------
// The metrics the rules and dashboards may use, in one place
// ---------------------------------------------------------------------------

export type MetricSource = "postgres-exporter queries" | "postgres_exporter" | "redis_exporter" | "node_exporter" | "node_exporter textfile" | "prometheus";

export interface KnownMetric {
  source: MetricSource;
  help: string;
}

/** The metric written by renderCertExpiryTextfile. */
export const CERT_EXPIRY_METRIC = "synaxic_certificate_expiry_timestamp_seconds";

/**
 * Every metric name an alert rule or dashboard panel may reference. The
 * synaxic_* database metrics are derived from the exporter queries that
 * produce them, so a renamed query column shows up as an unknown metric.
 */
export function knownMetrics(): Record<string, KnownMetric> {
  const out: Record<string, KnownMetric> = {
    up: { source: "prometheus", help: "1 when the last scrape of the target succeeded" },
    pg_up: { source: "postgres_exporter", help: "1 when the exporter could query PostgreSQL" },
    redis_up: { source: "redis_exporter", help: "1 when the exporter could reach Redis" },
    redis_master_link_up: { source: "redis_exporter", help: "On a Redis replica: 1 when its link to the master is up" },
    redis_connected_slaves: { source: "redis_exporter", help: "Replicas connected to this Redis" },
    redis_master_repl_offset: { source: "redis_exporter", help: "This Redis's replication offset (INFO master_repl_offset)" },
    redis_connected_slave_offset_bytes: { source: "redis_exporter", help: "On the Redis master: offset each replica has acknowledged" },
    redis_connected_slave_lag_seconds: { source: "redis_exporter", help: "On the Redis master: seconds since each replica's last ack" },
    node_filesystem_avail_bytes: { source: "node_exporter", help: "Filesystem space available to non-root users" },
    node_filesystem_size_bytes: { source: "node_exporter", help: "Filesystem size" },
    node_filesystem_readonly: { source: "node_exporter", help: "1 when the filesystem is mounted read-only" },
    [CERT_EXPIRY_METRIC]: { source: "node_exporter textfile", help: "Certificate notAfter as a Unix timestamp" },
  };
  for (const [prefix, q] of Object.entries(postgresExporterQueries())) {
    for (const column of q.metrics) {
      for (const [name, spec] of Object.entries(column)) {
        if (spec.usage === "LABEL") continue;
        out[`${prefix}_${name}`] = { source: "postgres-exporter queries", help: spec.description };
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------

function fail(fn: string, message: string): never {
  throw new Error(`${fn}: ${message}`);
}

const PROM_DURATION = /^(\d+(ms|s|m|h|d|w|y))+$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3, y: 31536000e3 };
const HOST_NAME = /^[a-z0-9]([a-z0-9_-]{0,47})$/;
const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const SLOT_NAME = /^[a-z0-9_]{1,63}$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function durationMs(fn: string, what: string, v: string): number {
  if (!PROM_DURATION.test(v)) fail(fn, `${what} must be a Prometheus duration such as 15s or 1m30s, got ${JSON.stringify(v)}`);
  let total = 0;
  for (const m of v.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) total += Number(m[1]) * DURATION_MS[m[2]!]!;
  if (total <= 0) fail(fn, `${what} must be longer than zero, got ${JSON.stringify(v)}`);
  return total;
}

function checkPort(fn: string, what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > 65535) fail(fn, `${what} must be a port number 1-65535, got ${v}`);
}

function checkTarget(fn: string, what: string, v: string): void {
  const m = /^(.+):(\d{1,5})$/.exec(v);
  if (!m) fail(fn, `${what} must be host:port, got ${JSON.stringify(v)}`);
  checkPort(fn, what, Number(m[2]));
  const host = m[1]!.replace(/^\[(.*)\]$/, "$1");
  const ok = /^[\d.]+$/.test(host) ? isIPv4(host) : m[1]!.startsWith("[") ? isIPv6(host) : DNS_NAME.test(host);
  if (!ok) {
    fail(fn, `${what} has an invalid host ${JSON.stringify(m[1])}`);
  }
}

/** host:port for an address that may be an IPv6 literal. */
function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

function checkHosts(fn: string, hosts: readonly MonitoredHost[]): void {
  if (!Array.isArray(hosts) || hosts.length === 0) fail(fn, "hosts must list at least the main host");
  const names = new Set<string>();
  const addresses = new Set<string>();
  for (const h of hosts) {
    if (typeof h?.name !== "string" || !HOST_NAME.test(h.name)) {
      fail(fn, `host name ${JSON.stringify(h?.name)} must be 1-48 lower-case letters, digits, '-' or '_'`);
    }
    if (h.role !== "main" && h.role !== "replica") fail(fn, `host ${h.name} has role ${JSON.stringify(h.role)}; expected main or replica`);
    const a = h.address;
    const valid = typeof a === "string" && (/^[\d.]+$/.test(a) ? isIPv4(a) : a.includes(":") ? isIPv6(a) : DNS_NAME.test(a));
    if (!valid) fail(fn, `host ${h.name} has an invalid address ${JSON.stringify(a)} (IPv4, IPv6 or DNS name, no port)`);
    if (names.has(h.name)) fail(fn, `duplicate host name ${JSON.stringify(h.name)}`);
    if (addresses.has(a.toLowerCase())) fail(fn, `duplicate host address ${a} (host ${h.name})`);
    for (const [k, v] of Object.entries(h.targetOverrides ?? {})) {
      if (!(k in DEFAULT_EXPORTER_PORTS)) fail(fn, `host ${h.name}: unknown service ${JSON.stringify(k)} in targetOverrides`);
      checkTarget(fn, `host ${h.name} targetOverrides.${k}`, v as string);
    }
    names.add(h.name);
    addresses.add(a.toLowerCase());
  }
  const mains = hosts.filter((h) => h.role === "main");
  if (mains.length !== 1) fail(fn, `exactly one host must have role main, found ${mains.length}`);
}

// ---------------------------------------------------------------------------
// prometheus.yml
// ---------------------------------------------------------------------------

export interface PrometheusConfigParams {
  scrapeInterval?: string;
  /** Must not exceed scrapeInterval. */
  scrapeTimeout?: string;
  evaluationInterval?: string;
  /** Rule file paths or globs as Prometheus sees them. */
  ruleFiles?: readonly string[];
  /** Directory holding the target files from renderTargetsFiles, as Prometheus sees it. */
  targetsDir?: string;
  /** How often Prometheus re-reads target files besides reacting to file changes. */
  targetsRefreshInterval?: string;
  /** Where Prometheus scrapes itself. */
  selfTarget?: string;
  /** Labels of the self-scrape target (e.g. the main host's host/role). */
  selfLabels?: Readonly<Record<string, string>>;
  externalLabels?: Readonly<Record<string, string>>;
  /** Alertmanager host:port list; no alerting section when empty. */
  alertmanagers?: readonly string[];
  /**
   * Labels removed from every alert before it is sent (alert_relabel_configs,
   * labeldrop). A pair of Prometheus servers marks its series with a
   * distinct external label: dropped from alerts, both servers send the same
   * alert (same labels, same fingerprint), which Alertmanager merges instead
   * of notifying twice. Prometheus attaches external labels before it
   * relabels alerts (notifier/notifier.go Manager.Send, v2.42.0).
   */
  alertLabelsDropped?: readonly string[];
  /**
   * How Prometheus authenticates to the exporters (files as Prometheus sees
   * them): the CA that signed their certificates, its own client
   * certificate and key, and the scrape user with a file holding its
   * password (Prometheus reads it for every scrape). Absent: plain HTTP.
   * No server_name: targets are the hosts' private addresses, which the
   * exporters' certificates carry as IP SANs, and Go verifies an IP target
   * against those.
   */
  exporterAuth?: {
    caFile: string;
    certFile: string;
    keyFile: string;
    basicAuth: { username: string; passwordFile: string };
  };
}

function checkLabels(fn: string, what: string, labels: Readonly<Record<string, string>> | undefined): void {
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (!LABEL_NAME.test(k) || k.startsWith("__")) fail(fn, `${what}: invalid label name ${JSON.stringify(k)}`);
    if (typeof v !== "string") fail(fn, `${what}: label ${k} must be a string`);
  }
}

/** Renders prometheus.yml. */
export function renderPrometheusConfig(params: PrometheusConfigParams = {}): string {
  const fn = "renderPrometheusConfig";
  const p = { ...PROMETHEUS_DEFAULTS, ...Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined)) } as Required<PrometheusConfigParams>;
  const interval = durationMs(fn, "scrapeInterval", p.scrapeInterval);
  const timeout = durationMs(fn, "scrapeTimeout", p.scrapeTimeout);
  if (timeout > interval) fail(fn, `scrapeTimeout ${p.scrapeTimeout} exceeds scrapeInterval ${p.scrapeInterval}`);
  durationMs(fn, "evaluationInterval", p.evaluationInterval);
  durationMs(fn, "targetsRefreshInterval", p.targetsRefreshInterval);
  if (!p.targetsDir || /[*?[\]\s]/.test(p.targetsDir)) fail(fn, `targetsDir ${JSON.stringify(p.targetsDir)} must be a plain directory path`);
  if (p.ruleFiles.length === 0) fail(fn, "ruleFiles must name at least one file or glob");
  checkTarget(fn, "selfTarget", p.selfTarget);
  for (const a of p.alertmanagers ?? []) checkTarget(fn, "alertmanagers", a);
  checkLabels(fn, "externalLabels", p.externalLabels);
  checkLabels(fn, "selfLabels", p.selfLabels);
  const dropped = p.alertLabelsDropped ?? [];
  for (const l of dropped) {
    if (!LABEL_NAME.test(l) || l.startsWith("__")) fail(fn, `alertLabelsDropped: invalid label name ${JSON.stringify(l)}`);
    // Only labels the server itself adds: dropping a rule's own label (host, replica, severity) would merge distinct alerts.
    if (!(l in (p.externalLabels ?? {}))) fail(fn, `alertLabelsDropped: ${l} is not one of the externalLabels`);
  }
  if (dropped.length > 0 && (p.alertmanagers ?? []).length === 0) fail(fn, "alertLabelsDropped needs alertmanagers");
  const auth = p.exporterAuth;
  if (auth) {
    for (const [k, v] of Object.entries({ caFile: auth.caFile, certFile: auth.certFile, keyFile: auth.keyFile, "basicAuth.passwordFile": auth.basicAuth?.passwordFile })) {
      if (typeof v !== "string" || !/^\/[A-Za-z0-9_./-]+$/.test(v)) fail(fn, `exporterAuth.${k} must be a plain absolute path, got ${JSON.stringify(v)}`);
    }
    if (typeof auth.basicAuth.username !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(auth.basicAuth.username)) fail(fn, `exporterAuth.basicAuth.username ${JSON.stringify(auth.basicAuth.username)} is not valid`);
  }
  const jobAuth = (a: JobAuth): Record<string, unknown> =>
    !auth || a === "none"
      ? {}
      : {
          scheme: "https",
          tls_config: { ca_file: auth.caFile, cert_file: auth.certFile, key_file: auth.keyFile, min_version: "TLS12" },
          ...(a === "tls+basic" ? { basic_auth: { username: auth.basicAuth.username, password_file: auth.basicAuth.passwordFile } } : {}),
        };
  const dir = p.targetsDir.replace(/\/+$/, "");

  const config: Record<string, unknown> = {
    global: {
      scrape_interval: p.scrapeInterval,
      scrape_timeout: p.scrapeTimeout,
      evaluation_interval: p.evaluationInterval,
      ...(p.externalLabels && Object.keys(p.externalLabels).length > 0 ? { external_labels: { ...p.externalLabels } } : {}),
    },
    ...(p.alertmanagers && p.alertmanagers.length > 0
      ? {
          alerting: {
            ...(dropped.length > 0 ? { alert_relabel_configs: [{ action: "labeldrop", regex: dropped.join("|") }] } : {}),
            // Every Alertmanager of the cluster, never a balancer in front of them: each must get every alert.
            alertmanagers: [{ static_configs: [{ targets: [...p.alertmanagers] }] }],
          },
        }
      : {}),
    rule_files: [...p.ruleFiles],
    scrape_configs: [
      {
        job_name: JOBS.prometheus,
        static_configs: [{ targets: [p.selfTarget], ...(p.selfLabels ? { labels: { ...p.selfLabels } } : {}) }],
      },
      ...HOST_JOBS.map((j) => ({
        job_name: j.job,
        metrics_path: j.metricsPath,
        ...jobAuth(j.auth),
        file_sd_configs: [{ files: [`${dir}/${targetsFileName(j.job)}`], refresh_interval: p.targetsRefreshInterval }],
      })),
    ],
  };
  return `# prometheus.yml for Synaxic (rendered; edits are overwritten).\n# Targets come from ${dir}/*.json, re-read on change.\n${stringify(config, { lineWidth: 0, aliasDuplicateObjects: false })}`;
}

// ---------------------------------------------------------------------------
// file_sd target files
// ---------------------------------------------------------------------------

export interface TargetsParams {
  hosts: readonly MonitoredHost[];
  ports?: Partial<ExporterPorts>;
}

interface TargetGroup {
  targets: string[];
  labels: { host: string; role: HostRole };
}

/**
 * The file_sd files, keyed by file name (synaxic-app.json, postgres.json,
 * redis.json, node.json): one target group per host, labelled host and role.
 * Write them atomically (temp file + rename) into targetsDir.
 */
export function renderTargetsFiles(params: TargetsParams): Record<string, string> {
  const fn = "renderTargetsFiles";
  checkHosts(fn, params.hosts);
  const ports = { ...DEFAULT_EXPORTER_PORTS };
  for (const k of Object.keys(ports) as (keyof ExporterPorts)[]) {
    const v = params.ports?.[k];
    if (v !== undefined) ports[k] = v;
    checkPort(fn, `ports.${k}`, ports[k]);
  }
  const out: Record<string, string> = {};
  for (const j of HOST_JOBS) {
    const groups: TargetGroup[] = params.hosts.map((h) => ({
      // The app answers in one of its two deploy slots (templates/app.ts): both are targets, the idle one down.
      targets: h.targetOverrides?.[j.port] !== undefined ? [h.targetOverrides[j.port]!] : j.job === JOBS.app ? APP_SLOTS.map((slot) => hostPort(h.address, appSlotPort(ports.app, slot))) : [hostPort(h.address, ports[j.port])],
      labels: { host: h.name, role: h.role },
    }));
    out[targetsFileName(j.job)] = `${JSON.stringify(groups, null, 2)}\n`;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------

export interface AlertThresholds {
  /** WAL bytes a replica may be behind the primary (synaxic_replication_lag_bytes). */
  replicationLagBytes: number;
  replicationLagFor: string;
  /** Walsender replay_lag in seconds. */
  replayLagSeconds: number;
  replayLagFor: string;
  /** How long a slot may be inactive (its replica disconnected) before alerting. */
  slotInactiveFor: string;
  /** WAL bytes a slot may hold back on the primary. */
  slotRetainedBytes: number;
  slotRetainedFor: string;
  /** How long a scrape target (postgres exporter, app) may be down. */
  targetDownFor: string;
  /** How long a primary with synchronous replication may have no standby that can confirm a commit (commits wait meanwhile). */
  synchronousStandbyMissingFor: string;
  /** Redis replica link down for this long. */
  redisLinkDownFor: string;
  /** Alert when a filesystem has less than this fraction free (0-1). */
  diskFreeRatio: number;
  diskFreeFor: string;
  /** Alert when the linear trend over diskPredictWindow says the disk is full within diskPredictHours. */
  diskPredictWindow: string;
  diskPredictHours: number;
  diskPredictFor: string;
  /** Certificate expiry warnings (days before notAfter). */
  certWarningDays: number;
  certCriticalDays: number;
  appDownFor: string;
}

export const DEFAULT_ALERT_THRESHOLDS: AlertThresholds = {
  replicationLagBytes: 64 * 1024 * 1024,
  replicationLagFor: "2m",
  replayLagSeconds: 30,
  replayLagFor: "2m",
  slotInactiveFor: "1m",
  slotRetainedBytes: 2 * 1024 * 1024 * 1024,
  slotRetainedFor: "5m",
  targetDownFor: "1m",
  synchronousStandbyMissingFor: "15s",
  redisLinkDownFor: "1m",
  diskFreeRatio: 0.1,
  diskFreeFor: "5m",
  diskPredictWindow: "6h",
  diskPredictHours: 24,
  diskPredictFor: "30m",
  certWarningDays: 21,
  certCriticalDays: 7,
  appDownFor: "1m",
};

/** Filesystems the disk alerts ignore (in-memory and container layers). */
export const IGNORED_FS_TYPES = ["tmpfs", "overlay", "squashfs", "ramfs", "devtmpfs", "nsfs", "fuse.lxcfs"] as const;

export interface Standby {
  /** Its name: application_name on the primary, and the `replica` label of its alerts. */
  name: string;
  /** Its physical replication slot on the primary. */
  slotName: string;
}

export interface AlertRulesParams {
  /** Every configured replica and its physical replication slot on the primary. */
  replicas: readonly Standby[];
  /** Redis replicas the master should have; defaults to the number of replicas. */
  expectedRedisReplicas?: number;
  /**
   * Standbys the fleet itself creates beyond the replicas: the main host
   * (following a promoted replica after a failover, through its own slot).
   * They get the same per-replica rules; any other physical slot on any
   * server is unexpected.
   */
  otherStandbys?: readonly Standby[];
  thresholds?: Partial<AlertThresholds>;
}

/** The alert that always fires: Alertmanager sends it to the heartbeat URL (templates/alertmanager.ts). */
export const WATCHDOG_ALERT = "Watchdog";

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  /**
   * severity ("none" for the Watchdog only), plus the replica for per-replica
   * rules: Alertmanager groups and inhibits on it.
   */
  labels: { severity: "warning" | "critical" | "none"; replica?: string };
  annotations: { summary: string; description: string };
}

/** The alert rule groups (also rendered as YAML by renderAlertRules). */
export function alertRuleGroups(params: AlertRulesParams): { name: string; rules: AlertRule[] }[] {
  const fn = "renderAlertRules";
  const t: AlertThresholds = { ...DEFAULT_ALERT_THRESHOLDS, ...Object.fromEntries(Object.entries(params.thresholds ?? {}).filter(([, v]) => v !== undefined)) };
  for (const [k, v] of Object.entries(t)) {
    if (typeof v === "string") durationMs(fn, `thresholds.${k}`, v);
    else if (typeof v !== "number" || !Number.isFinite(v) || v < 0) fail(fn, `thresholds.${k} must be a non-negative number, got ${v}`);
  }
  if (t.diskFreeRatio <= 0 || t.diskFreeRatio >= 1) fail(fn, `thresholds.diskFreeRatio must be between 0 and 1, got ${t.diskFreeRatio}`);
  if (t.certCriticalDays > t.certWarningDays) fail(fn, "thresholds.certCriticalDays must not exceed certWarningDays");

  if (!Array.isArray(params.replicas)) fail(fn, "replicas must be a list (possibly empty)");
  const slots = new Set<string>();
  const names = new Set<string>();
  for (const r of params.replicas) {
    if (typeof r?.name !== "string" || !HOST_NAME.test(r.name)) fail(fn, `replica name ${JSON.stringify(r?.name)} is not valid`);
    if (typeof r.slotName !== "string" || !SLOT_NAME.test(r.slotName)) {
      fail(fn, `slot name ${JSON.stringify(r.slotName)} of replica ${r.name} must be 1-63 lower-case letters, digits or underscores`);
    }
    if (names.has(r.name)) fail(fn, `duplicate replica ${JSON.stringify(r.name)}`);
    if (slots.has(r.slotName)) fail(fn, `replicas share the slot ${JSON.stringify(r.slotName)}; each needs its own`);
    names.add(r.name);
    slots.add(r.slotName);
  }
  const otherStandbys = params.otherStandbys ?? [];
  for (const o of otherStandbys) {
    if (typeof o?.name !== "string" || !HOST_NAME.test(o.name)) fail(fn, `standby name ${JSON.stringify(o?.name)} in otherStandbys is not valid`);
    if (typeof o.slotName !== "string" || !SLOT_NAME.test(o.slotName)) fail(fn, `slot name ${JSON.stringify(o.slotName)} in otherStandbys must be 1-63 lower-case letters, digits or underscores`);
    if (slots.has(o.slotName)) fail(fn, `otherStandbys names ${JSON.stringify(o.slotName)}, a replica's slot`);
    if (names.has(o.name)) fail(fn, `otherStandbys names ${JSON.stringify(o.name)}, a replica`);
    names.add(o.name);
    slots.add(o.slotName);
  }
  const otherSlots = otherStandbys.map((o) => o.slotName);
  // One rule per standby for everything about one standby, each selecting
  // only that standby's series and labelled with its name: Alertmanager
  // groups and inhibits per replica on that label.
  const standbys = [...params.replicas, ...otherStandbys];
  const perStandby = (make: (s: Standby) => Omit<AlertRule, "labels"> & { labels: { severity: "warning" | "critical" } }): AlertRule[] =>
    standbys.map((s) => {
      const r = make(s);
      return { ...r, labels: { ...r.labels, replica: s.name } };
    });
  const expectedRedis = params.expectedRedisReplicas ?? params.replicas.length;
  if (!Number.isInteger(expectedRedis) || expectedRedis < 0) fail(fn, `expectedRedisReplicas must be a non-negative integer, got ${expectedRedis}`);

  const fs = `fstype!~"${IGNORED_FS_TYPES.map((f) => f.replace(/\./g, "\\\\.")).join("|")}"`;
  const warning = { severity: "warning" } as const;
  const critical = { severity: "critical" } as const;

  const postgres: AlertRule[] = [
    ...perStandby((s) => ({
      alert: "SynaxicReplicationLagBytes",
      expr: `synaxic_replication_lag_bytes{application_name="${s.name}"} > ${t.replicationLagBytes}`,
      for: t.replicationLagFor,
      labels: warning,
      annotations: {
        summary: `Replica ${s.name} is {{ $value | humanize1024 }}B behind the primary`,
        description: `The primary on {{ $labels.host }} has written WAL that replica ${s.name} has not replayed for ${t.replicationLagFor} (more than ${t.replicationLagBytes} bytes; measured from LSNs).`,
      },
    })),
    ...perStandby((s) => ({
      alert: "SynaxicReplicationReplayLag",
      expr: `synaxic_replication_replay_lag_seconds{application_name="${s.name}"} > ${t.replayLagSeconds}`,
      for: t.replayLagFor,
      labels: warning,
      annotations: {
        summary: `Replica ${s.name} replays WAL {{ $value | humanizeDuration }} late`,
        description: `The walsender's replay_lag for ${s.name} has been above ${t.replayLagSeconds}s for ${t.replayLagFor}.`,
      },
    })),
    ...perStandby((s) => ({
      alert: "SynaxicReplicaDisconnected",
      expr: `synaxic_slot_active{slot_name="${s.slotName}"} == 0`,
      for: t.slotInactiveFor,
      labels: critical,
      annotations: {
        summary: `Replica ${s.name} is not streaming (slot ${s.slotName} inactive)`,
        description: `No replica has streamed through slot ${s.slotName} of ${s.name} for ${t.slotInactiveFor}: the replica is down or cut off. The slot keeps WAL on the primary until it is back or the slot is dropped.`,
      },
    })),
    ...params.replicas.map((r) => ({
      alert: "SynaxicReplicationSlotMissing",
      expr: `absent(synaxic_slot_active{slot_name="${r.slotName}"}) and on() (up{job="${JOBS.postgres}", role="main"} == 1)`,
      for: t.slotInactiveFor,
      // One rule per replica: the replica label keeps them distinct.
      labels: { severity: "critical" as const, replica: r.name },
      annotations: {
        summary: `Replication slot ${r.slotName} of replica ${r.name} does not exist`,
        description: `The primary has no physical slot ${r.slotName}, so replica ${r.name} cannot stream through it.`,
      },
    })),
    {
      // The replication role can create and drop any physical slot (PostgreSQL
      // has no finer grant), so a compromised replica could add slots that
      // hold WAL on the primary: any slot the fleet did not create fires.
      alert: "SynaxicUnexpectedReplicationSlot",
      expr: `synaxic_slot_active{slot_name!~"${[...params.replicas.map((r) => r.slotName), ...otherSlots].join("|")}"}`,
      for: t.slotInactiveFor,
      labels: critical,
      annotations: {
        summary: "Replication slot {{ $labels.slot_name }} on {{ $labels.host }} was not created by the fleet",
        description: `Slot {{ $labels.slot_name }} is none of the fleet's (${[...params.replicas.map((r) => r.slotName), ...otherSlots].join(", ")}). Something with the replication role created it; it holds WAL until dropped. Find out who (pg_stat_replication, the server log), then drop it with pg_drop_replication_slot.`,
      },
    },
    {
      // synchronousReplication any1: with no standby able to confirm, every
      // commit on the primary waits (writes hang, they do not fail).
      alert: "SynaxicSynchronousStandbyMissing",
      expr: "synaxic_synchronous_required == 1 and synaxic_synchronous_standbys < 1",
      for: t.synchronousStandbyMissingFor,
      labels: critical,
      annotations: {
        summary: "Writes on {{ $labels.host }} wait: no synchronous standby is streaming",
        description: `The primary on {{ $labels.host }} runs with synchronous_standby_names set (synchronousReplication any1), and for ${t.synchronousStandbyMissingFor} no standby it names has been streaming: every commit waits until one is back (synaxic_synchronous_waiting counts the sessions waiting). Bring a replica back, or set synchronousReplication off on the main stack and run pulumi up (a reload).`,
      },
    },
    {
      alert: "SynaxicPostgresDown",
      expr: `up{job="${JOBS.postgres}"} == 0 or pg_up == 0`,
      for: t.targetDownFor,
      labels: critical,
      annotations: {
        summary: "PostgreSQL on {{ $labels.host }} cannot be monitored",
        description: `The postgres exporter on {{ $labels.host }} ({{ $labels.role }}) has been unreachable, or unable to query PostgreSQL, for ${t.targetDownFor}.`,
      },
    },
    ...perStandby((s) => ({
      alert: "SynaxicSlotRetainingWal",
      expr: `synaxic_slot_retained_bytes{slot_name="${s.slotName}"} > ${t.slotRetainedBytes}`,
      for: t.slotRetainedFor,
      labels: warning,
      annotations: {
        summary: `Slot ${s.slotName} of ${s.name} holds back {{ $value | humanize1024 }}B of WAL`,
        description: `Slot ${s.slotName} on {{ $labels.host }} retains more than ${t.slotRetainedBytes} bytes of WAL; the primary's disk fills until replica ${s.name} catches up or the slot is dropped.`,
      },
    })),
    ...perStandby((s) => ({
      alert: "SynaxicSlotLost",
      expr: `synaxic_slot_lost{slot_name="${s.slotName}"} == 1`,
      labels: critical,
      annotations: {
        summary: `Slot ${s.slotName} lost WAL that replica ${s.name} needs`,
        description: `The primary removed WAL that slot ${s.slotName} still needed (max_slot_wal_keep_size). Replica ${s.name} cannot catch up and must be re-initialised.`,
      },
    })),
  ];

  const redis: AlertRule[] = [
    {
      alert: "SynaxicRedisReplicaLinkDown",
      // A replica host's name is its replica name: copied into `replica`.
      expr: 'label_replace(redis_master_link_up == 0, "replica", "$1", "host", "(.+)")',
      for: t.redisLinkDownFor,
      labels: critical,
      annotations: {
        summary: "Redis replica on {{ $labels.host }} lost its master",
        description: `The Redis replica on {{ $labels.host }} has had no link to the master for ${t.redisLinkDownFor}.`,
      },
    },
    ...(expectedRedis > 0
      ? [
          {
            alert: "SynaxicRedisReplicasMissing",
            expr: `redis_connected_slaves{role="main"} < ${expectedRedis}`,
            for: t.redisLinkDownFor,
            labels: warning,
            annotations: {
              summary: `Redis master has {{ $value }} of ${expectedRedis} replicas`,
              description: `Fewer Redis replicas than the ${expectedRedis} configured have been connected to the master on {{ $labels.host }} for ${t.redisLinkDownFor}.`,
            },
          } satisfies AlertRule,
        ]
      : []),
  ];

  const hostRules: AlertRule[] = [
    {
      alert: "SynaxicDiskSpaceLow",
      expr: `node_filesystem_avail_bytes{${fs}} / node_filesystem_size_bytes{${fs}} < ${t.diskFreeRatio}`,
      for: t.diskFreeFor,
      labels: critical,
      annotations: {
        summary: "{{ $labels.mountpoint }} on {{ $labels.host }} is {{ $value | humanizePercentage }} free",
        description: `Less than ${t.diskFreeRatio * 100}% of {{ $labels.mountpoint }} on {{ $labels.host }} is free.`,
      },
    },
    {
      alert: "SynaxicDiskFillingUp",
      expr: `predict_linear(node_filesystem_avail_bytes{${fs}}[${t.diskPredictWindow}], ${t.diskPredictHours * 3600}) < 0 and node_filesystem_readonly{${fs}} == 0`,
      for: t.diskPredictFor,
      labels: warning,
      annotations: {
        summary: `{{ $labels.mountpoint }} on {{ $labels.host }} will be full within ${t.diskPredictHours}h`,
        description: `At the rate of the last ${t.diskPredictWindow}, {{ $labels.mountpoint }} on {{ $labels.host }} runs out of space within ${t.diskPredictHours} hours.`,
      },
    },
    {
      alert: "SynaxicCertificateExpiringSoon",
      expr: `${CERT_EXPIRY_METRIC} - time() < ${t.certWarningDays} * 86400`,
      for: "10m",
      labels: warning,
      annotations: {
        summary: "Certificate {{ $labels.name }} on {{ $labels.host }} expires in {{ $value | humanizeDuration }}",
        description: `Certificate {{ $labels.name }} expires in less than ${t.certWarningDays} days; renew it.`,
      },
    },
    {
      alert: "SynaxicCertificateExpiryCritical",
      expr: `${CERT_EXPIRY_METRIC} - time() < ${t.certCriticalDays} * 86400`,
      for: "10m",
      labels: critical,
      annotations: {
        summary: "Certificate {{ $labels.name }} on {{ $labels.host }} expires in {{ $value | humanizeDuration }}",
        description: `Certificate {{ $labels.name }} expires in less than ${t.certCriticalDays} days (or has expired); clients will refuse it.`,
      },
    },
  ];

  const app: AlertRule[] = [
    {
      alert: "SynaxicAppDown",
      // One of the host's two deploy slots is idle, and down, at any time: the app is down when neither is up.
      expr: `max by (host, role) (up{job="${JOBS.app}"}) == 0`,
      for: t.appDownFor,
      labels: critical,
      annotations: {
        summary: "Synaxic app on {{ $labels.host }} is down",
        description: `Prometheus has not been able to scrape the app on {{ $labels.host }} ({{ $labels.role }}) for ${t.appDownFor}.`,
      },
    },
    {
      alert: "SynaxicExporterDown",
      expr: `up{job=~"${JOBS.redis}|${JOBS.node}"} == 0`,
      for: t.targetDownFor,
      labels: warning,
      annotations: {
        summary: "{{ $labels.job }} exporter on {{ $labels.host }} is down",
        description: `Prometheus has not been able to scrape {{ $labels.job }} on {{ $labels.host }} for ${t.targetDownFor}; its alerts cannot fire.`,
      },
    },
  ];

  const watchdog: AlertRule[] = [
    {
      // Always firing: Alertmanager sends it to an outside heartbeat service,
      // which raises the alarm when it stops arriving (Prometheus, its rules,
      // Alertmanager or the way out is broken).
      alert: WATCHDOG_ALERT,
      expr: "vector(1)",
      labels: { severity: "none" },
      annotations: {
        summary: "The alerting pipeline is working",
        description: "This alert always fires. Its notifications go only to the heartbeat URL; when they stop, alerting itself is broken.",
      },
    },
  ];

  return [
    { name: "synaxic-watchdog", rules: watchdog },
    { name: "synaxic-postgres", rules: postgres },
    { name: "synaxic-redis", rules: redis },
    { name: "synaxic-host", rules: hostRules },
    { name: "synaxic-app", rules: app },
  ];
}

/** The alert rules file (YAML) for Prometheus's rule_files. */
export function renderAlertRules(params: AlertRulesParams): string {
  const groups = alertRuleGroups(params);
  return `# Synaxic alert rules (rendered; edits are overwritten).\n${stringify({ groups }, { lineWidth: 0, aliasDuplicateObjects: false })}`;
}

// ---------------------------------------------------------------------------
// Certificate expiry textfile (node_exporter --collector.textfile.directory)
// ---------------------------------------------------------------------------

export interface CertExpiry {
  /** What the certificate is for, e.g. "redis-main" or "https". */
  name: string;
  notAfter: Date | string;
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/**
 * The textfile-collector file (name it *.prom and write it atomically) with
 * one synaxic_certificate_expiry_timestamp_seconds series per certificate.
 */
export function renderCertExpiryTextfile(certs: readonly CertExpiry[]): string {
  const fn = "renderCertExpiryTextfile";
  const seen = new Set<string>();
  const lines = [
    `# HELP ${CERT_EXPIRY_METRIC} Certificate notAfter as a Unix timestamp (seconds).`,
    `# TYPE ${CERT_EXPIRY_METRIC} gauge`,
  ];
  for (const c of certs) {
    if (typeof c?.name !== "string" || c.name.length === 0) fail(fn, "every certificate needs a name");
    if (seen.has(c.name)) fail(fn, `duplicate certificate name ${JSON.stringify(c.name)}`);
    seen.add(c.name);
    const when = c.notAfter instanceof Date ? c.notAfter : new Date(c.notAfter);
    const ms = when.getTime();
    if (!Number.isFinite(ms)) fail(fn, `certificate ${JSON.stringify(c.name)} has an invalid notAfter ${JSON.stringify(String(c.notAfter))}`);
    lines.push(`${CERT_EXPIRY_METRIC}{name="${escapeLabelValue(c.name)}"} ${Math.floor(ms / 1000)}`);
  }
  return `${lines.join("\n")}\n`;
}

// ---------------------------------------------------------------------------
// PromQL inspection (for checking rules and dashboards against knownMetrics)
// ---------------------------------------------------------------------------

const PROMQL_KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "atan2"]);

/**
 * The metric names a PromQL expression selects (not functions, keywords,
 * label names or values). Enough for the expressions this project writes.
 */
export function referencedMetricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\boffset\s+-?[0-9a-z]+/gi, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/(^|[^A-Za-z0-9_:])\d+(\.\d+)?([eE][+-]?\d+)?/g, "$1 ");
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const rest = stripped.slice(m.index! + m[0].length);
    if (/^\s*\(/.test(rest)) continue; // a function call
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names].sort();
}
