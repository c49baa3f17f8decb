import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  grafanaEnv,
  renderGrafanaDashboardProvider,
  renderGrafanaDatasources,
  renderReplicationDashboard,
  replicationDashboardPanels,
  GRAFANA_DATASOURCE_UID,
  REPLICATION_DASHBOARD_UID,
} from "../../../templates/grafana";
import { knownMetrics, referencedMetricNames } from "../../../templates/prometheus";

interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: { name: string; datasource: { uid: string }; query: { query: string } }[] };
  panels: {
    id: number;
    type: string;
    title: string;
    gridPos: { h: number; w: number; x: number; y: number };
    datasource: { type: string; uid: string };
    targets: { refId: string; expr: string; legendFormat: string; datasource: { uid: string } }[];
    fieldConfig: { defaults: { unit: string } };
  }[];
}

const dashboard = (): Dashboard => JSON.parse(renderReplicationDashboard()) as Dashboard;

describe("renderGrafanaDatasources", () => {
  it("provisions one default Prometheus datasource with a fixed uid (snapshot)", () => {
    const text = renderGrafanaDatasources({ prometheusUrl: "http://172.30.0.40:9090/" });
    expect(text).toMatchSnapshot();
    const doc = parse(text) as { apiVersion: number; datasources: Record<string, unknown>[] };
    expect(doc.apiVersion).toBe(1);
    expect(doc.datasources).toHaveLength(1);
    expect(doc.datasources[0]).toMatchObject({ uid: GRAFANA_DATASOURCE_UID, type: "prometheus", access: "proxy", url: "http://172.30.0.40:9090", isDefault: true, editable: false });
  });

  it.each([
    ["a non-URL", "prometheus:9090", /http or https/],
    ["garbage", "not a url", /is not a URL/],
    ["another scheme", "ftp://prometheus:9090", /http or https/],
    ["credentials in the URL", "http://admin:secret@prometheus:9090", /must not carry credentials/],
  ] as const)("rejects %s", (_, prometheusUrl, message) => {
    expect(() => renderGrafanaDatasources({ prometheusUrl })).toThrow(message);
  });
});

describe("renderGrafanaDashboardProvider", () => {
  it("provisions the dashboards directory, not editable in the UI (snapshot)", () => {
    const text = renderGrafanaDashboardProvider({ path: "/var/lib/synaxic-dashboards" });
    expect(text).toMatchSnapshot();
    const doc = parse(text) as { apiVersion: number; providers: { type: string; options: { path: string }; allowUiUpdates: boolean; disableDeletion: boolean }[] };
    expect(doc.apiVersion).toBe(1);
    expect(doc.providers[0]).toMatchObject({ type: "file", options: { path: "/var/lib/synaxic-dashboards" }, allowUiUpdates: false, disableDeletion: true });
  });

  it.each([
    ["a relative path", { path: "dashboards" }, /absolute path/],
    ["a path with ..", { path: "/var/lib/../etc" }, /without '\.\.'/],
    ["a folder name with a slash", { path: "/d", folder: "a/b" }, /folder/],
  ] as const)("rejects %s", (_, params, message) => {
    expect(() => renderGrafanaDashboardProvider(params)).toThrow(message);
  });
});

describe("renderReplicationDashboard", () => {
  it("is dashboard JSON with a fixed uid (snapshot)", () => {
    const text = renderReplicationDashboard();
    expect(text).toMatchSnapshot();
    const d = dashboard();
    expect(d.uid).toBe(REPLICATION_DASHBOARD_UID);
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(d.panels).toEqual(JSON.parse(JSON.stringify(replicationDashboardPanels())));
  });

  it("has a panel for each replication and health signal", () => {
    const byMetric = (m: string) => dashboard().panels.filter((p) => p.targets.some((t) => referencedMetricNames(t.expr).includes(m)));
    for (const m of [
      "synaxic_replication_lag_bytes", "synaxic_replication_replay_lag_seconds", "synaxic_slot_retained_bytes", "synaxic_slot_active",
      "redis_master_link_up", "redis_master_repl_offset", "node_filesystem_avail_bytes", "up", "synaxic_certificate_expiry_timestamp_seconds",
    ]) {
      expect(byMetric(m).length, m).toBeGreaterThan(0);
    }
    const units = Object.fromEntries(dashboard().panels.map((p) => [p.title, p.fieldConfig.defaults.unit]));
    expect(units["PostgreSQL replication lag (bytes)"]).toBe("bytes");
    expect(units["PostgreSQL replay lag (seconds)"]).toBe("s");
    expect(units["Disk free"]).toBe("percentunit");
  });

  it("uses only metrics that the exporters and the textfile define", () => {
    const known = knownMetrics();
    const exprs = dashboard().panels.flatMap((p) => p.targets.map((t) => [p.title, t.expr] as const));
    expect(exprs.length).toBeGreaterThan(8);
    for (const [title, expr] of exprs) {
      const names = referencedMetricNames(expr);
      expect(names.length, title).toBeGreaterThan(0);
      for (const n of names) expect(known, `${title} uses ${n}`).toHaveProperty([n]);
    }
  });

  it("queries the provisioned datasource and filters every query by the $host variable it defines", () => {
    const d = dashboard();
    expect(d.templating.list.map((v) => v.name)).toEqual(["host"]);
    expect(d.templating.list[0]!.datasource.uid).toBe(GRAFANA_DATASOURCE_UID);
    for (const p of d.panels) {
      expect(p.datasource.uid, p.title).toBe(GRAFANA_DATASOURCE_UID);
      for (const t of p.targets) {
        expect(t.datasource.uid).toBe(GRAFANA_DATASOURCE_UID);
        expect(t.expr, p.title).toContain('host=~"$host"');
      }
      expect(new Set(p.targets.map((t) => t.refId)).size, p.title).toBe(p.targets.length);
    }
  });

  it("lays panels out on the 24-column grid without overlaps, with unique ids", () => {
    const panels = dashboard().panels;
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    for (const a of panels) {
      for (const b of panels) {
        if (a === b) continue;
        const overlap =
          a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w && a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h;
        expect(overlap, `${a.title} overlaps ${b.title}`).toBe(false);
      }
    }
  });
});

describe("grafanaEnv", () => {
  const env = (p: Parameters<typeof grafanaEnv>[0]) => Object.fromEntries(grafanaEnv(p).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));

  it("reads the admin password from a file and locks Grafana down (snapshot)", () => {
    const list = grafanaEnv({ adminPasswordFile: "/run/synaxic/grafana-admin-password" });
    expect(list).toMatchSnapshot();
    const e = env({ adminPasswordFile: "/run/synaxic/grafana-admin-password" });
    expect(e).toMatchObject({
      GF_SECURITY_ADMIN_PASSWORD__FILE: "/run/synaxic/grafana-admin-password",
      GF_USERS_ALLOW_SIGN_UP: "false",
      GF_AUTH_ANONYMOUS_ENABLED: "false",
      GF_AUTH_DISABLE_LOGIN_FORM: "false",
      GF_SECURITY_DISABLE_GRAVATAR: "true",
      GF_ANALYTICS_REPORTING_ENABLED: "false",
      GF_ANALYTICS_CHECK_FOR_UPDATES: "false",
    });
    expect(e).not.toHaveProperty("GF_SECURITY_ADMIN_PASSWORD");
    expect(new Set(list.map((x) => x.split("=")[0])).size).toBe(list.length);
  });

  it("turns on secure cookies behind an https root URL", () => {
    expect(env({ adminPasswordFile: "/p" }).GF_SECURITY_COOKIE_SECURE).toBe("false");
    const e = env({ adminPasswordFile: "/p", rootUrl: "https://grafana.example.com/" });
    expect(e.GF_SECURITY_COOKIE_SECURE).toBe("true");
    expect(e.GF_SERVER_ROOT_URL).toBe("https://grafana.example.com/");
  });

  it.each([
    ["a relative password file", { adminPasswordFile: "password" }, /absolute path/],
    ["a password file with a newline", { adminPasswordFile: "/p\nGF_AUTH_ANONYMOUS_ENABLED=true" }, /absolute path/],
    ["an admin user with a space", { adminPasswordFile: "/p", adminUser: "ad min" }, /adminUser/],
    ["a root URL that is not http", { adminPasswordFile: "/p", rootUrl: "javascript:alert(1)" }, /http or https/],
  ] as const)("rejects %s", (_, params, message) => {
    expect(() => grafanaEnv(params)).toThrow(message);
  });
});
