/**
 * The rendered Alertmanager configuration, checked by the real tools and
 * run for real (Debian's prometheus-alertmanager 0.25.0, the pinned image's
 * version):
 * - amtool check-config on every combination of receivers;
 * - amtool config routes test: every route, and every alert rule's labels,
 *   reach the receiver their severity names (the Watchdog only the heartbeat);
 * - a real Prometheus with the rendered rules and a real Alertmanager with the
 *   rendered configuration in a namespace, delivering to a local webhook,
 *   a Slack-shaped endpoint and an SMTP catcher; a disconnected replica's lag
 *   alerts are inhibited, the other replica's are not; the Watchdog keeps
 *   reaching the heartbeat endpoint and nothing else.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { TestNet, waitFor, type Host } from "../rig/net";
import { PrometheusServer } from "../rig/prometheus";
import { AlertmanagerServer, HttpCatcher, MetricsEndpoint, SmtpCatcher, amtool, type AmAlert } from "../rig/alertmanager";
import { RECEIVERS, REPLICA_DOWN_ALERTS, REPLICA_LAG_ALERTS, WATCHDOG_ALERT, renderAlertmanagerConfig, type AlertmanagerConfigParams } from "../../templates/alertmanager";
import { alertRuleGroups, renderAlertRules, renderPrometheusConfig, renderTargetsFiles, type AlertRulesParams, type MonitoredHost } from "../../templates/prometheus";

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "synaxic-alerts-"));
});

afterAll(() => {
  if (dir && !process.env.SYNAXIC_KEEP_RIG) rmSync(dir, { recursive: true, force: true });
});

const EMAIL = { smarthost: "smtp.example.com:587", from: "alerts@example.com", to: ["ops@example.com"], authUsername: "alerts", authPasswordFile: "/etc/alertmanager/secrets/smtp-password" };
const SLACK = { apiUrlFile: "/etc/alertmanager/secrets/slack-api-url", channel: "#ops" };
const WEBHOOK = { url: "https://hooks.example.com/synaxic/s3cr3t" };
const HEARTBEAT = { url: "https://hc-ping.example.com/0f1e2d3c" };

/** Every subset of the four receivers. */
function combinations(): { name: string; params: AlertmanagerConfigParams }[] {
  const parts = { email: EMAIL, slack: SLACK, webhook: WEBHOOK, heartbeat: HEARTBEAT } as const;
  const keys = Object.keys(parts) as (keyof typeof parts)[];
  const out: { name: string; params: AlertmanagerConfigParams }[] = [];
  for (let mask = 0; mask < 1 << keys.length; mask++) {
    const chosen = keys.filter((_, i) => mask & (1 << i));
    out.push({ name: chosen.join("+") || "none", params: Object.fromEntries(chosen.map((k) => [k, parts[k]])) });
  }
  return out;
}

function writeConfig(name: string, text: string): string {
  const file = join(dir, `${name}.yml`);
  writeFileSync(file, text);
  return file;
}

/** amtool config routes test: the receivers these labels reach. */
async function routeOf(file: string, labels: Record<string, string>): Promise<string> {
  const r = await amtool(["config", "routes", "test", `--config.file=${file}`, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return r.stdout.trim();
}

describe("amtool on the rendered configuration", () => {
  it.each(combinations())("check-config passes with receivers: $name", async ({ name, params }) => {
    const file = writeConfig(`check-${name}`, renderAlertmanagerConfig(params));
    const r = await amtool(["check-config", file]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("SUCCESS");
    expect(r.stdout).toContain(" - 3 receivers");
    expect(r.stdout).toContain(" - 3 inhibit rules");
  });

  it("check-config fails on a broken configuration (the check does read the file)", async () => {
    const text = renderAlertmanagerConfig({ webhook: WEBHOOK }).replace(`receiver: ${RECEIVERS.warning}`, "receiver: no-such-receiver");
    const r = await amtool(["check-config", writeConfig("broken", text)]);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain("no-such-receiver");
  });

  it("config routes test: each route reaches its receiver, the Watchdog only the heartbeat", async () => {
    const file = writeConfig("routes", renderAlertmanagerConfig({ email: EMAIL, slack: SLACK, webhook: WEBHOOK, heartbeat: HEARTBEAT }));
    expect(await routeOf(file, { alertname: WATCHDOG_ALERT, severity: "none" })).toBe(RECEIVERS.heartbeat);
    // Even a Watchdog that claimed to be critical goes only to the heartbeat.
    expect(await routeOf(file, { alertname: WATCHDOG_ALERT, severity: "critical" })).toBe(RECEIVERS.heartbeat);
    expect(await routeOf(file, { alertname: "SynaxicPostgresDown", severity: "critical", host: "main" })).toBe(RECEIVERS.critical);
    expect(await routeOf(file, { alertname: "SynaxicReplicationLagBytes", severity: "warning", replica: "replica1" })).toBe(RECEIVERS.warning);
    // No or an unknown severity: treated as critical, never dropped.
    expect(await routeOf(file, { alertname: "Something" })).toBe(RECEIVERS.critical);
    expect(await routeOf(file, { alertname: "Something", severity: "info" })).toBe(RECEIVERS.critical);

    // --verify.receivers fails on a mismatch, so the check can fail.
    const wrong = await amtool(["config", "routes", "test", `--config.file=${file}`, `--verify.receivers=${RECEIVERS.critical}`, "severity=warning"]);
    expect(wrong.code).not.toBe(0);
  });

  it("config routes test: every alert rule's labels reach the receiver of its severity", async () => {
    const file = writeConfig("rules-routes", renderAlertmanagerConfig({ email: EMAIL, slack: SLACK, webhook: WEBHOOK, heartbeat: HEARTBEAT }));
    const rules = alertRuleGroups({ replicas: [{ name: "replica1", slotName: "synaxic_replica1" }], otherStandbys: [{ name: "main", slotName: "synaxic_main" }] }).flatMap((g) => g.rules);
    const seen = new Set<string>();
    for (const r of rules) {
      const key = `${r.alert}/${r.labels.severity}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const expected = r.alert === WATCHDOG_ALERT ? RECEIVERS.heartbeat : r.labels.severity === "warning" ? RECEIVERS.warning : RECEIVERS.critical;
      const got = await routeOf(file, { alertname: r.alert, ...r.labels, host: "main" });
      expect(got, r.alert).toBe(expected);
    }
    expect(seen.size).toBeGreaterThan(15);
  });
});

// ---------------------------------------------------------------------------
// The real pair
// ---------------------------------------------------------------------------

interface WebhookPayload {
  receiver: string;
  status: string;
  groupLabels: Record<string, string>;
  alerts: { status: string; labels: Record<string, string> }[];
}

const REPLICAS = [
  { name: "replica1", slotName: "synaxic_replica1" },
  { name: "replica2", slotName: "synaxic_replica2" },
];
const GiB = 1024 ** 3;

/** What the exporters would say: replica1 down (slot inactive, WAL piling up), replica2 streaming but far behind. */
function exporterText(): string {
  const lines: string[] = [];
  for (const r of REPLICAS) {
    const down = r.name === "replica1";
    lines.push(`synaxic_slot_active{slot_name="${r.slotName}"} ${down ? 0 : 1}`);
    lines.push(`synaxic_slot_retained_bytes{slot_name="${r.slotName}"} ${3 * GiB}`);
    lines.push(`synaxic_slot_lost{slot_name="${r.slotName}"} 0`);
    // A disconnected replica still lagging in the primary's view (the row lingers while the walsender times out).
    lines.push(`synaxic_replication_lag_bytes{application_name="${r.name}",client_addr="10.0.0.9",state="streaming"} ${GiB}`);
    lines.push(`synaxic_replication_replay_lag_seconds{application_name="${r.name}",client_addr="10.0.0.9"} 120`);
  }
  lines.push("pg_up 1");
  return `${lines.join("\n")}\n`;
}

describe("a real Prometheus and Alertmanager with the rendered files", () => {
  let net: TestNet;
  let main: Host;
  let prom: PrometheusServer;
  let am: AlertmanagerServer;
  let exporters: MetricsEndpoint;
  let quiet: MetricsEndpoint;
  let http: HttpCatcher;
  let smtp: SmtpCatcher;
  const SMTP_PASSWORD = "smtp-pa55-from-a-file";
  const SLACK_PATH = "/slack/services/T0001/B0001/slacktoken0001";
  const WEBHOOK_PATH = "/webhook/synaxic-0001";
  const HEARTBEAT_PATH = "/heartbeat/ping-0001";

  beforeAll(async () => {
    net = await TestNet.create(["main"]);
    main = net.host("main");
    http = await new HttpCatcher(net.rootIp).start();
    smtp = await new SmtpCatcher(net.rootIp).start();
    exporters = await new MetricsEndpoint(net.rootIp).start();
    exporters.text = exporterText();
    // The app, node and Redis exporters: up, with nothing to alert on.
    quiet = await new MetricsEndpoint(net.rootIp).start();

    // Alertmanager's files, laid out as the deployment does under /etc/alertmanager.
    const amRoot = net.mkdir("alertmanager");
    mkdirSync(join(amRoot, "secrets"));
    writeFileSync(join(amRoot, "secrets", "smtp-password"), SMTP_PASSWORD, { mode: 0o600 });
    writeFileSync(join(amRoot, "secrets", "slack-api-url"), `${http.base}${SLACK_PATH}`, { mode: 0o600 });
    const amConfig = renderAlertmanagerConfig({
      email: { smarthost: smtp.smarthost, from: "alerts@synaxic.test", to: ["ops@synaxic.test", "oncall@synaxic.test"], authUsername: "alerts", authPasswordFile: join(amRoot, "secrets", "smtp-password"), requireTls: false },
      slack: { apiUrlFile: join(amRoot, "secrets", "slack-api-url"), channel: "#synaxic-ops" },
      webhook: { url: `${http.base}${WEBHOOK_PATH}` },
      heartbeat: { url: `${http.base}${HEARTBEAT_PATH}`, interval: "2s" },
      groupWait: "1s",
      groupInterval: "2s",
      repeatInterval: "1h",
      criticalRepeatInterval: "1h",
    });
    writeFileSync(join(amRoot, "alertmanager.yml"), amConfig, { mode: 0o600 });
    chmodSync(join(amRoot, "alertmanager.yml"), 0o600);
    am = await new AlertmanagerServer(main, join(amRoot, "alertmanager.yml"), net.mkdir("am-data")).start();

    // Prometheus: every exporter of the main host is the test's endpoint.
    const promRoot = net.mkdir("prometheus");
    mkdirSync(join(promRoot, "rules"));
    mkdirSync(join(promRoot, "targets"));
    const rules: AlertRulesParams = {
      replicas: REPLICAS,
      otherStandbys: [{ name: "main", slotName: "synaxic_main" }],
      expectedRedisReplicas: 0,
      // The inhibiting alert must be active before the ones it silences are sent.
      thresholds: { slotInactiveFor: "1s", replicationLagFor: "5s", replayLagFor: "5s", slotRetainedFor: "5s", targetDownFor: "1s" },
    };
    writeFileSync(join(promRoot, "rules", "synaxic.yml"), renderAlertRules(rules));
    const hosts: MonitoredHost[] = [
      { name: "main", role: "main", address: main.ip, targetOverrides: { app: quiet.target, nodeExporter: quiet.target, postgresExporter: exporters.target, redisExporter: quiet.target } },
    ];
    for (const [f, content] of Object.entries(renderTargetsFiles({ hosts }))) writeFileSync(join(promRoot, "targets", f), content);
    writeFileSync(
      join(promRoot, "prometheus.yml"),
      renderPrometheusConfig({
        ruleFiles: [join(promRoot, "rules", "*.yml")],
        targetsDir: join(promRoot, "targets"),
        scrapeInterval: "1s",
        scrapeTimeout: "1s",
        evaluationInterval: "1s",
        selfTarget: `${main.ip}:9090`,
        selfLabels: { host: "main", role: "main" },
        alertmanagers: [am.address],
      }),
    );
    // Prometheus re-sends firing alerts every minute by default; an alert
    // that fired before it had discovered Alertmanager would wait that long.
    prom = await new PrometheusServer(main, join(promRoot, "prometheus.yml"), net.mkdir("tsdb"), 9090, ["--rules.alert.resend-delay=2s"]).start();
  });

  afterAll(async () => {
    await prom?.stop();
    await am?.stop();
    await http?.stop();
    await smtp?.stop();
    await exporters?.stop();
    await quiet?.stop();
    await net?.destroy();
  });

  const notified = (path: string): Record<string, string>[] => http.json<WebhookPayload>(path).flatMap((p) => p.alerts.map((a) => ({ ...a.labels, _status: a.status, _receiver: p.receiver })));

  it("Prometheus sends to the Alertmanager in its alerting block", async () => {
    const active = await waitFor("Alertmanager discovered", async () => {
      const r = await fetch(`${prom.url}/api/v1/alertmanagers`);
      const body = (await r.json()) as { data: { activeAlertmanagers: { url: string }[] } };
      return body.data.activeAlertmanagers.length > 0 ? body.data.activeAlertmanagers : undefined;
    }, 15_000, 200);
    expect(active.map((a) => a.url)).toEqual([`http://${am.address}/api/v2/alerts`]);
  });

  it("a disconnected replica's lag and retention alerts are inhibited; the other replica's are not", async () => {
    const alerts = await waitFor("lag alerts of both replicas in Alertmanager", async () => {
      const a = await am.alerts();
      const lag = a.filter((x) => (REPLICA_LAG_ALERTS as readonly string[]).includes(x.labels.alertname!));
      return lag.length === 2 * REPLICA_LAG_ALERTS.length ? a : undefined;
    }, 60_000, 500);
    const state = (alertname: string, replica: string): AmAlert => alerts.find((x) => x.labels.alertname === alertname && x.labels.replica === replica)!;
    const disconnected = state("SynaxicReplicaDisconnected", "replica1");
    expect(disconnected.status.state).toBe("active");
    for (const a of REPLICA_LAG_ALERTS) {
      expect(state(a, "replica1").status.state, `${a} replica1`).toBe("suppressed");
      expect(state(a, "replica1").status.inhibitedBy, `${a} replica1`).toEqual([disconnected.fingerprint]);
      // replica1's disconnection does not silence replica2's lag.
      expect(state(a, "replica2").status.state, `${a} replica2`).toBe("active");
      expect(state(a, "replica2").status.inhibitedBy).toEqual([]);
    }
    // The inhibiting alerts are among the rendered ones.
    expect(REPLICA_DOWN_ALERTS).toContain("SynaxicReplicaDisconnected");

    // Delivered: replica2's lag (warning) and replica1's disconnection (critical); never replica1's lag.
    await waitFor("replica2's lag on the webhook", async () => notified(WEBHOOK_PATH).filter((l) => l.replica === "replica2" && (REPLICA_LAG_ALERTS as readonly string[]).includes(l.alertname!)).length === REPLICA_LAG_ALERTS.length, 30_000, 250);
    await waitFor("replica1's disconnection on the webhook", async () => notified(WEBHOOK_PATH).some((l) => l.alertname === "SynaxicReplicaDisconnected" && l.replica === "replica1"), 30_000, 250);
    // Several group intervals later, still nothing of replica1's lag anywhere.
    await new Promise((r) => setTimeout(r, 5000));
    for (const path of [WEBHOOK_PATH, SLACK_PATH]) {
      expect(http.on(path).length, path).toBeGreaterThan(0);
      expect(http.on(path).filter((r) => r.body.includes('"replica1"') && REPLICA_LAG_ALERTS.some((a) => r.body.includes(a))), path).toEqual([]);
    }
    const lagInMail = smtp.mails.filter((m) => REPLICA_LAG_ALERTS.some((a) => m.data.includes(a)));
    expect(lagInMail).toEqual([]);
  });

  it("routes by severity and groups per host and replica: email gets critical only, the webhook and Slack both", async () => {
    await waitFor("a mail", async () => smtp.mails.length > 0, 30_000, 250);
    const hooks = http.json<WebhookPayload>(WEBHOOK_PATH);
    // One group per (host, replica): replica2's three lag alerts arrive together.
    const replica2 = hooks.find((h) => h.groupLabels.replica === "replica2")!;
    expect(replica2.groupLabels).toEqual({ host: "main", replica: "replica2" });
    expect(replica2.receiver).toBe(RECEIVERS.warning);
    expect(replica2.alerts.map((a) => a.labels.alertname).sort()).toEqual([...REPLICA_LAG_ALERTS].sort());
    const replica1 = hooks.find((h) => h.groupLabels.replica === "replica1")!;
    expect(replica1.receiver).toBe(RECEIVERS.critical);
    expect(replica1.alerts.map((a) => a.labels.alertname)).toEqual(["SynaxicReplicaDisconnected"]);

    // Email: only the critical receiver has it.
    for (const m of smtp.mails) {
      expect(m.data).not.toMatch(/severity = warning|severity=warning/);
      expect(m.from).toBe("alerts@synaxic.test");
      expect(m.to.sort()).toEqual(["oncall@synaxic.test", "ops@synaxic.test"]);
      // Authenticated with the password from the file (AUTH LOGIN).
      expect(m.authUser).toBe("alerts");
      expect(m.authPassword).toBe(SMTP_PASSWORD);
    }
    expect(smtp.mails.some((m) => m.data.includes("SynaxicReplicaDisconnected"))).toBe(true);

    // Slack: the URL came from api_url_file; the body is Slack's attachment format with the channel.
    const slack = http.on(SLACK_PATH).map((r) => JSON.parse(r.body) as { channel: string; attachments: { title: string; text: string }[] });
    expect(slack.length).toBeGreaterThan(0);
    expect(slack.every((s) => s.channel === "#synaxic-ops")).toBe(true);
    const texts = slack.flatMap((s) => s.attachments.map((a) => `${a.title}\n${a.text}`)).join("\n");
    // The rendered text lists each alert's summary.
    expect(texts).toContain("*SynaxicReplicaDisconnected* (critical): Replica replica1 is not streaming (slot synaxic_replica1 inactive)");
    expect(texts).toContain("*SynaxicReplicationLagBytes* (warning): Replica replica2 is 1Gi");
  });

  it("the Watchdog reaches the heartbeat endpoint every interval, and nothing else", async () => {
    const before = http.on(HEARTBEAT_PATH).length;
    const started = Date.now();
    await waitFor("three more heartbeats", async () => http.on(HEARTBEAT_PATH).length >= before + 3, 30_000, 250);
    const beats = http.on(HEARTBEAT_PATH).slice(-3);
    process.stdout.write(`[alertmanager] 3 heartbeats in ${Date.now() - started} ms (interval 2s): ${beats.map((b) => b.at - started).join(", ")} ms\n`);
    // Every interval, not every other one.
    expect(beats[2]!.at - beats[0]!.at).toBeLessThan(2 * 2000 + 1000);
    for (const b of http.json<WebhookPayload>(HEARTBEAT_PATH)) {
      expect(b.receiver).toBe(RECEIVERS.heartbeat);
      expect(b.alerts.map((a) => a.labels.alertname)).toEqual([WATCHDOG_ALERT]);
    }
    for (const path of [WEBHOOK_PATH, SLACK_PATH]) expect(http.on(path).some((r) => r.body.includes(WATCHDOG_ALERT)), path).toBe(false);
    expect(smtp.mails.some((m) => m.data.includes(WATCHDOG_ALERT))).toBe(false);
  });

  it("the file-held secrets (SMTP password, Slack URL) appear neither in its status API nor in its log", async () => {
    const status = await am.status();
    const original = parse(status.config.original) as { receivers: { name: string; slack_configs?: { api_url_file?: string }[] }[] };
    expect(original.receivers.find((r) => r.name === RECEIVERS.warning)!.slack_configs![0]!.api_url_file).toMatch(/slack-api-url$/);
    const log = readFileSync(am.log, "utf8");
    for (const secret of [SMTP_PASSWORD, "slacktoken0001"]) {
      expect(status.config.original).not.toContain(secret);
      expect(log).not.toContain(secret);
    }
  });
});
