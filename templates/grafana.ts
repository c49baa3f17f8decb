/**
 * Grafana on the main host: provisioned Prometheus datasource, a dashboard
 * provider, the replication dashboard, and the container environment
 * (admin password from a file, no sign-up, no anonymous access, no phoning home).
 */
import { stringify } from "yaml";
import { CERT_EXPIRY_METRIC, IGNORED_FS_TYPES, JOBS } from "./prometheus";

/** uid of the provisioned Prometheus datasource; dashboards refer to it by this uid. */
export const GRAFANA_DATASOURCE_UID = "synaxic-prometheus";
export const REPLICATION_DASHBOARD_UID = "synaxic-replication";

function fail(fn: string, message: string): never {
  throw new Error(`${fn}: ${message}`);
}

function checkAbsolutePath(fn: string, what: string, p: string): void {
  if (typeof p !== "string" || !p.startsWith("/") || /[\0\n\r]/.test(p) || p.includes("..")) {
    fail(fn, `${what} must be an absolute path without '..', got ${JSON.stringify(p)}`);
  }
}

// ---------------------------------------------------------------------------
// Provisioning files
// ---------------------------------------------------------------------------

export interface GrafanaDatasourceParams {
  /** URL Grafana's backend reaches Prometheus at, e.g. http://172.30.0.40:9090. */
  prometheusUrl: string;
  /** Prometheus's scrape interval, so that Grafana never asks for a finer step. Default 15s. */
  scrapeInterval?: string;
}

/** /etc/grafana/provisioning/datasources/<name>.yml */
export function renderGrafanaDatasources(params: GrafanaDatasourceParams): string {
  const fn = "renderGrafanaDatasources";
  let url: URL;
  try {
    url = new URL(params.prometheusUrl);
  } catch {
    fail(fn, `prometheusUrl ${JSON.stringify(params.prometheusUrl)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") fail(fn, `prometheusUrl must be http or https, got ${url.protocol}`);
  if (url.username || url.password) fail(fn, "prometheusUrl must not carry credentials");
  const scrapeInterval = params.scrapeInterval ?? "15s";
  if (!/^\d+(ms|s|m|h)$/.test(scrapeInterval)) fail(fn, `scrapeInterval ${JSON.stringify(scrapeInterval)} is not a duration such as 15s`);
  const doc = {
    apiVersion: 1,
    datasources: [
      {
        name: "Prometheus",
        uid: GRAFANA_DATASOURCE_UID,
        type: "prometheus",
        access: "proxy",
        url: params.prometheusUrl.replace(/\/+$/, ""),
        isDefault: true,
        editable: false,
        jsonData: {
          httpMethod: "POST",
          timeInterval: scrapeInterval,
          prometheusType: "Prometheus",
          prometheusVersion: "2.42.0",
        },
      },
    ],
  };
  return `# Grafana datasources (rendered; edits are overwritten).\n${stringify(doc, { lineWidth: 0 })}`;
}

export interface GrafanaDashboardProviderParams {
  /** Directory (inside the Grafana container) holding the dashboard JSON files. */
  path: string;
  /** Folder the dashboards appear in. Default "Synaxic". */
  folder?: string;
}

/** /etc/grafana/provisioning/dashboards/<name>.yml */
export function renderGrafanaDashboardProvider(params: GrafanaDashboardProviderParams): string {
  const fn = "renderGrafanaDashboardProvider";
  checkAbsolutePath(fn, "path", params.path);
  const folder = params.folder ?? "Synaxic";
  if (!/^[A-Za-z0-9 _-]{1,64}$/.test(folder)) fail(fn, `folder ${JSON.stringify(folder)} must be 1-64 letters, digits, spaces, _ or -`);
  const doc = {
    apiVersion: 1,
    providers: [
      {
        name: "synaxic",
        orgId: 1,
        folder,
        type: "file",
        disableDeletion: true,
        allowUiUpdates: false,
        updateIntervalSeconds: 30,
        options: { path: params.path, foldersFromFilesStructure: false },
      },
    ],
  };
  return `# Grafana dashboard provider (rendered; edits are overwritten).\n${stringify(doc, { lineWidth: 0 })}`;
}

// ---------------------------------------------------------------------------
// The replication dashboard
// ---------------------------------------------------------------------------

export interface DashboardTarget {
  refId: string;
  expr: string;
  legendFormat: string;
  datasource: { type: "prometheus"; uid: string };
}

export interface DashboardPanel {
  id: number;
  type: "timeseries" | "stat";
  title: string;
  description: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource: { type: "prometheus"; uid: string };
  targets: DashboardTarget[];
  fieldConfig: { defaults: Record<string, unknown>; overrides: unknown[] };
  options: Record<string, unknown>;
}

const DS = { type: "prometheus", uid: GRAFANA_DATASOURCE_UID } as const;
const HOST = 'host=~"$host"';
const FS = `fstype!~"${IGNORED_FS_TYPES.map((f) => f.replace(/\./g, "\\\\.")).join("|")}"`;

interface PanelSpec {
  type: DashboardPanel["type"];
  title: string;
  description: string;
  unit: string;
  w: number;
  exprs: [expr: string, legend: string][];
  /** For stat panels showing 0/1 states: what 1 and 0 mean. */
  states?: [one: string, zero: string];
  thresholds?: { value: number | null; color: string }[];
}

const PANELS: PanelSpec[] = [
  {
    type: "timeseries",
    title: "PostgreSQL replication lag (bytes)",
    description: "WAL written on the primary and not yet replayed by each replica (from LSNs; stays 0 on an idle primary).",
    unit: "bytes",
    w: 12,
    exprs: [
      [`synaxic_replication_lag_bytes{${HOST}}`, "{{application_name}}"],
      [`synaxic_recovery_replay_lag_bytes{${HOST}}`, "{{host}}: received, not replayed"],
    ],
  },
  {
    type: "timeseries",
    title: "PostgreSQL replay lag (seconds)",
    description: "The walsender's replay_lag for each replica (0 when there is nothing to replay).",
    unit: "s",
    w: 12,
    exprs: [[`synaxic_replication_replay_lag_seconds{${HOST}}`, "{{application_name}}"]],
  },
  {
    type: "timeseries",
    title: "WAL retained by replication slots",
    description: "WAL each physical slot holds back on the primary; grows while its replica is away.",
    unit: "bytes",
    w: 12,
    exprs: [[`synaxic_slot_retained_bytes{${HOST}}`, "{{slot_name}}"]],
  },
  {
    type: "stat",
    title: "Replication slots",
    description: "Whether a replica is streaming through each slot, and whether a slot has lost WAL its replica needs.",
    unit: "none",
    w: 12,
    exprs: [
      [`synaxic_slot_active{${HOST}}`, "{{slot_name}} active"],
      [`synaxic_slot_lost{${HOST}}`, "{{slot_name}} lost"],
    ],
    states: ["yes", "no"],
  },
  {
    type: "stat",
    title: "Redis replica link",
    description: "redis_master_link_up on each Redis replica.",
    unit: "none",
    w: 8,
    exprs: [[`redis_master_link_up{${HOST}}`, "{{host}}"]],
    states: ["up", "down"],
    thresholds: [{ value: null, color: "red" }, { value: 1, color: "green" }],
  },
  {
    type: "timeseries",
    title: "Redis replication offset lag (bytes)",
    description: "How far each replica's acknowledged offset is behind the master's replication offset.",
    unit: "bytes",
    w: 16,
    exprs: [
      [`redis_master_repl_offset{role="main", ${HOST}} - on(instance) group_right redis_connected_slave_offset_bytes{${HOST}}`, "{{slave_ip}}:{{slave_port}}"],
      [`redis_connected_slaves{role="main", ${HOST}}`, "connected replicas"],
    ],
  },
  {
    type: "timeseries",
    title: "Disk free",
    description: "Free fraction of each real filesystem (tmpfs and overlay left out).",
    unit: "percentunit",
    w: 12,
    exprs: [[`node_filesystem_avail_bytes{${HOST}, ${FS}} / node_filesystem_size_bytes{${HOST}, ${FS}}`, "{{host}} {{mountpoint}}"]],
  },
  {
    type: "stat",
    title: "App up",
    description: "Whether Prometheus can scrape each Synaxic app instance.",
    unit: "none",
    w: 6,
    // Up in either deploy slot (templates/app.ts).
    exprs: [[`max by (host) (up{job="${JOBS.app}", ${HOST}})`, "{{host}}"]],
    states: ["up", "down"],
    thresholds: [{ value: null, color: "red" }, { value: 1, color: "green" }],
  },
  {
    type: "stat",
    title: "Certificates: days left",
    description: "Days until each certificate's notAfter.",
    unit: "none",
    w: 6,
    exprs: [[`(${CERT_EXPIRY_METRIC}{${HOST}} - time()) / 86400`, "{{host}} {{name}}"]],
    thresholds: [{ value: null, color: "red" }, { value: 7, color: "orange" }, { value: 21, color: "green" }],
  },
];

function panel(spec: PanelSpec, id: number, x: number, y: number): DashboardPanel {
  const letters = "ABCDEFGHIJ";
  const defaults: Record<string, unknown> = {
    unit: spec.unit,
    thresholds: { mode: "absolute", steps: spec.thresholds ?? [{ value: null, color: "green" }] },
  };
  if (spec.states) {
    defaults.mappings = [
      { type: "value", options: { "1": { text: spec.states[0], index: 0 }, "0": { text: spec.states[1], index: 1 } } },
    ];
  }
  if (spec.type === "timeseries") defaults.custom = { drawStyle: "line", lineWidth: 1, fillOpacity: 10, showPoints: "never", spanNulls: false };
  if (spec.unit === "percentunit") {
    defaults.min = 0;
    defaults.max = 1;
  }
  return {
    id,
    type: spec.type,
    title: spec.title,
    description: spec.description,
    gridPos: { h: 8, w: spec.w, x, y },
    datasource: DS,
    targets: spec.exprs.map(([expr, legendFormat], i) => ({ refId: letters[i]!, expr, legendFormat, datasource: DS })),
    fieldConfig: { defaults, overrides: [] },
    options:
      spec.type === "timeseries"
        ? { legend: { displayMode: "table", placement: "bottom", showLegend: true, calcs: ["lastNotNull", "max"] }, tooltip: { mode: "multi", sort: "desc" } }
        : { reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false }, colorMode: "background", graphMode: "none", textMode: "value_and_name", orientation: "auto", justifyMode: "auto" },
  };
}

/** The panels of the replication dashboard (also inside renderReplicationDashboard's JSON). */
export function replicationDashboardPanels(): DashboardPanel[] {
  const out: DashboardPanel[] = [];
  let x = 0;
  let y = 0;
  PANELS.forEach((spec, i) => {
    if (x + spec.w > 24) {
      x = 0;
      y += 8;
    }
    out.push(panel(spec, i + 1, x, y));
    x += spec.w;
  });
  return out;
}

/** The replication dashboard as Grafana dashboard JSON (for a file provider's directory). */
export function renderReplicationDashboard(): string {
  const dashboard = {
    uid: REPLICATION_DASHBOARD_UID,
    title: "Synaxic replication",
    description: "PostgreSQL and Redis replication, slots, disks, certificates and app instances across the Synaxic hosts.",
    tags: ["synaxic", "replication"],
    timezone: "browser",
    editable: false,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: "30s",
    time: { from: "now-6h", to: "now" },
    annotations: { list: [] },
    links: [],
    templating: {
      list: [
        {
          name: "host",
          label: "Host",
          type: "query",
          datasource: DS,
          definition: "label_values(up, host)",
          query: { query: "label_values(up, host)", refId: "host" },
          refresh: 2,
          includeAll: true,
          multi: true,
          allValue: ".*",
          current: { selected: true, text: ["All"], value: ["$__all"] },
          sort: 1,
        },
      ],
    },
    panels: replicationDashboardPanels(),
  };
  return `${JSON.stringify(dashboard, null, 2)}\n`;
}

// ---------------------------------------------------------------------------
// Container environment
// ---------------------------------------------------------------------------

export interface GrafanaEnvParams {
  /** File inside the container holding the admin password (GF_SECURITY_ADMIN_PASSWORD__FILE). */
  adminPasswordFile: string;
  /** Default "admin". */
  adminUser?: string;
  /** Public URL of Grafana, when it is served behind a proxy; https turns on secure cookies. */
  rootUrl?: string;
}

/** The Grafana container's environment as KEY=value strings. */
export function grafanaEnv(params: GrafanaEnvParams): string[] {
  const fn = "grafanaEnv";
  checkAbsolutePath(fn, "adminPasswordFile", params.adminPasswordFile);
  const adminUser = params.adminUser ?? "admin";
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(adminUser)) fail(fn, `adminUser ${JSON.stringify(adminUser)} must be 1-64 letters, digits, . _ or -`);
  let secureCookies = false;
  if (params.rootUrl !== undefined) {
    let u: URL;
    try {
      u = new URL(params.rootUrl);
    } catch {
      fail(fn, `rootUrl ${JSON.stringify(params.rootUrl)} is not a URL`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") fail(fn, `rootUrl must be http or https, got ${u.protocol}`);
    secureCookies = u.protocol === "https:";
  }
  const env: [string, string][] = [
    ["GF_SECURITY_ADMIN_USER", adminUser],
    ["GF_SECURITY_ADMIN_PASSWORD__FILE", params.adminPasswordFile],
    ["GF_SECURITY_DISABLE_GRAVATAR", "true"],
    ["GF_SECURITY_COOKIE_SAMESITE", "strict"],
    ["GF_SECURITY_COOKIE_SECURE", String(secureCookies)],
    ["GF_USERS_ALLOW_SIGN_UP", "false"],
    ["GF_USERS_ALLOW_ORG_CREATE", "false"],
    ["GF_AUTH_ANONYMOUS_ENABLED", "false"],
    ["GF_AUTH_DISABLE_LOGIN_FORM", "false"],
    ["GF_ANALYTICS_REPORTING_ENABLED", "false"],
    ["GF_ANALYTICS_CHECK_FOR_UPDATES", "false"],
    ["GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES", "false"],
    ["GF_NEWS_NEWS_FEED_ENABLED", "false"],
    ["GF_SNAPSHOTS_EXTERNAL_ENABLED", "false"],
    ["GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"],
    ["GF_LOG_MODE", "console"],
  ];
  if (params.rootUrl !== undefined) env.push(["GF_SERVER_ROOT_URL", params.rootUrl]);
  return env.map(([k, v]) => `${k}=${v}`);
}

/**
 * Grafana sets the admin password from its settings (GF_SECURITY_ADMIN_PASSWORD)
 * only when it creates the admin user, on its first start with an empty
 * database; later starts keep the one in the database. So the fleet applies
 * it on every change with Grafana's own command,
 * `grafana cli admin reset-admin-password --password-from-stdin`
 * (pkg/cmd/grafana-cli/commands/reset_password_command.go of grafana/grafana:
 * one line read from standard input, refused when weak, written to the admin
 * user, id 1, through the user service), run inside the container as its user.
 *
 * A POSIX sh script for `sh -c SCRIPT sh CONTAINER` on the host, given the
 * password as the only line of its standard input: the password reaches the
 * command on its standard input (printf is a shell builtin: no argv holds it).
 * It retries for up to `timeoutSeconds`, since a container created a moment
 * ago may not have created its database and admin user yet; the last attempt's
 * output (Grafana's messages, never the password) is the error.
 */
export function renderGrafanaAdminPasswordScript(timeoutSeconds: number): string {
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1) fail("renderGrafanaAdminPasswordScript", `timeoutSeconds ${timeoutSeconds} is not a whole number of seconds`);
  const reset = 'docker exec -i "$c" grafana cli --homepath=/usr/share/grafana --config=/etc/grafana/grafana.ini admin reset-admin-password --password-from-stdin';
  return [
    "set -eu",
    "c=$1",
    "IFS= read -r pw",
    '[ -n "$pw" ] || { echo "no password on standard input" >&2; exit 1; }',
    `deadline=$(( $(date +%s) + ${timeoutSeconds} ))`,
    "while :; do",
    `  if out=$(printf '%s\\n' "$pw" | ${reset} 2>&1); then echo "the Grafana admin password is set"; exit 0; fi`,
    '  [ "$(date +%s)" -lt "$deadline" ] || break',
    "  sleep 3",
    "done",
    'echo "grafana cli admin reset-admin-password failed: $out" >&2',
    "exit 1",
    "",
  ].join("\n");
}
