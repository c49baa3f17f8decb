import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  DEFAULT_CLUSTER_PORT,
  GROUP_BY,
  RECEIVERS,
  REPLICA_DOWN_ALERTS,
  REPLICA_LAG_ALERTS,
  WATCHDOG_ALERT,
  alertmanagerClusterFlags,
  renderAlertmanagerConfig,
  severitiesFrom,
  type AlertmanagerConfigParams,
} from "../../../templates/alertmanager";
import { WATCHDOG_ALERT as RULES_WATCHDOG, alertRuleGroups } from "../../../templates/prometheus";

const ALL: AlertmanagerConfigParams = {
  email: { smarthost: "smtp.example.com:587", from: "alerts@example.com", to: ["ops@example.com", "oncall@example.com"], authUsername: "alerts", authPasswordFile: "/etc/alertmanager/secrets/smtp-password" },
  slack: { apiUrlFile: "/etc/alertmanager/secrets/slack-api-url", channel: "#ops" },
  webhook: { url: "https://hooks.example.com/x/secret" },
  heartbeat: { url: "https://hc-ping.example.com/uuid", interval: "1m" },
};

interface Doc {
  route: { receiver: string; group_by: string[]; routes: { receiver: string; matchers: string[]; group_interval?: string; repeat_interval?: string; group_wait?: string }[] };
  inhibit_rules: { source_matchers: string[]; target_matchers: string[]; equal: string[] }[];
  receivers: { name: string; email_configs?: Record<string, unknown>[]; slack_configs?: Record<string, unknown>[]; webhook_configs?: Record<string, unknown>[] }[];
}

const doc = (p: AlertmanagerConfigParams): Doc => parse(renderAlertmanagerConfig(p)) as Doc;
const receiver = (d: Doc, name: string) => d.receivers.find((r) => r.name === name)!;

describe("renderAlertmanagerConfig", () => {
  it("renders with no receivers (snapshot)", () => {
    expect(renderAlertmanagerConfig()).toMatchSnapshot();
  });

  it("renders every receiver (snapshot)", () => {
    expect(renderAlertmanagerConfig(ALL)).toMatchSnapshot();
  });

  it("the Watchdog route comes first, goes only to the heartbeat, and repeats within its interval", () => {
    const d = doc(ALL);
    const first = d.route.routes[0]!;
    expect(first.matchers).toEqual([`alertname="${WATCHDOG_ALERT}"`]);
    expect(first.receiver).toBe(RECEIVERS.heartbeat);
    expect(first).not.toHaveProperty("continue");
    expect(first.group_wait).toBe("0s");
    expect(first.group_interval).toBe("1m");
    expect(first.repeat_interval).toBe("30s");
    expect(receiver(d, RECEIVERS.heartbeat).webhook_configs).toEqual([{ url: ALL.heartbeat!.url, send_resolved: false, max_alerts: 1 }]);
    // The template and the rules name the same alert.
    expect(WATCHDOG_ALERT).toBe(RULES_WATCHDOG);
  });

  it("without a heartbeat the Watchdog still has its own route, to a receiver that sends nothing", () => {
    const d = doc({ webhook: ALL.webhook });
    expect(d.route.routes[0]!.receiver).toBe(RECEIVERS.heartbeat);
    expect(receiver(d, RECEIVERS.heartbeat)).toEqual({ name: RECEIVERS.heartbeat });
  });

  it("routes by severity: email critical only by default, Slack and the webhook warnings too; an unknown severity as critical", () => {
    const d = doc(ALL);
    expect(d.route.receiver).toBe(RECEIVERS.critical);
    expect(d.route.routes.slice(1).map((r) => [r.matchers, r.receiver])).toEqual([
      [['severity="critical"'], RECEIVERS.critical],
      [['severity="warning"'], RECEIVERS.warning],
    ]);
    const critical = receiver(d, RECEIVERS.critical);
    const warning = receiver(d, RECEIVERS.warning);
    expect(critical.email_configs).toHaveLength(1);
    expect(warning.email_configs).toBeUndefined();
    expect(critical.slack_configs).toHaveLength(1);
    expect(warning.slack_configs).toHaveLength(1);
    expect(critical.webhook_configs).toEqual([{ url: ALL.webhook!.url, send_resolved: true }]);
    expect(warning.webhook_configs).toEqual([{ url: ALL.webhook!.url, send_resolved: true }]);

    // Each channel's minimum severity is its own.
    const d2 = doc({ ...ALL, email: { ...ALL.email!, minSeverity: "warning" }, slack: { ...ALL.slack!, minSeverity: "critical" } });
    expect(receiver(d2, RECEIVERS.warning).email_configs).toHaveLength(1);
    expect(receiver(d2, RECEIVERS.warning).slack_configs).toBeUndefined();
    expect(severitiesFrom("critical")).toEqual(["critical"]);
    expect(severitiesFrom("warning")).toEqual(["critical", "warning"]);
  });

  it("secrets are referenced as files where Alertmanager 0.25 allows it", () => {
    const d = doc(ALL);
    const email = receiver(d, RECEIVERS.critical).email_configs![0]!;
    expect(email).toMatchObject({ auth_username: "alerts", auth_password_file: "/etc/alertmanager/secrets/smtp-password", require_tls: true, to: "ops@example.com, oncall@example.com" });
    expect(email).not.toHaveProperty("auth_password");
    const slack = receiver(d, RECEIVERS.critical).slack_configs![0]!;
    expect(slack).toMatchObject({ api_url_file: "/etc/alertmanager/secrets/slack-api-url", channel: "#ops" });
    expect(slack).not.toHaveProperty("api_url");
  });

  it("groups per host and replica", () => {
    expect(doc(ALL).route.group_by).toEqual([...GROUP_BY]);
    expect(GROUP_BY).toEqual(["host", "replica"]);
  });

  it("inhibits a disconnected replica's lag alerts on the replica label, which every rule on both sides carries", () => {
    const rule = doc(ALL).inhibit_rules[0]!;
    expect(rule.equal).toEqual(["replica"]);
    expect(rule.source_matchers).toEqual([`alertname=~"${REPLICA_DOWN_ALERTS.join("|")}"`]);
    expect(rule.target_matchers).toEqual([`alertname=~"${REPLICA_LAG_ALERTS.join("|")}"`]);
    // Alertmanager counts a label missing on both sides as equal, so a rule
    // without `replica` on either side would be silenced by any replica's alert.
    const rules = alertRuleGroups({ replicas: [{ name: "replica1", slotName: "synaxic_replica1" }, { name: "replica2", slotName: "synaxic_replica2" }], otherStandbys: [{ name: "main", slotName: "synaxic_main" }] }).flatMap((g) => g.rules);
    for (const name of [...REPLICA_DOWN_ALERTS, ...REPLICA_LAG_ALERTS]) {
      const these = rules.filter((r) => r.alert === name);
      expect(these.length, name).toBeGreaterThan(0);
      for (const r of these) expect(r.labels.replica, name).toMatch(/^(replica1|replica2|main)$/);
    }
  });

  it("a critical certificate or disk alert inhibits its warning on the same host and object", () => {
    const [, cert, disk] = doc(ALL).inhibit_rules;
    expect(cert).toEqual({ source_matchers: ['alertname="SynaxicCertificateExpiryCritical"'], target_matchers: ['alertname="SynaxicCertificateExpiringSoon"'], equal: ["host", "name"] });
    expect(disk).toEqual({ source_matchers: ['alertname="SynaxicDiskSpaceLow"'], target_matchers: ['alertname="SynaxicDiskFillingUp"'], equal: ["host", "mountpoint"] });
  });

  it("an error about a secret URL names the field, never the value", () => {
    let message = "";
    try {
      renderAlertmanagerConfig({ webhook: { url: "ftp://user:hunter2@example.com/x" } });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/webhook\.url must be an http\(s\) URL/);
    expect(message).not.toContain("hunter2");
  });

  it.each([
    ["a smarthost without a port", { email: { ...ALL.email!, smarthost: "smtp.example.com" } }, /email\.smarthost must be host:port/],
    ["a smarthost with a port out of range", { email: { ...ALL.email!, smarthost: "smtp.example.com:70000" } }, /email\.smarthost/],
    ["a bad from address", { email: { ...ALL.email!, from: "alerts" } }, /email\.from must be an address/],
    ["no recipients", { email: { ...ALL.email!, to: [] } }, /email\.to must list at least one/],
    ["a recipient with a header injection", { email: { ...ALL.email!, to: ["a@example.com\r\nBcc: x@evil.test"] } }, /email\.to has an invalid address/],
    ["a user without a password file", { email: { ...ALL.email!, authPasswordFile: undefined } }, /authUsername needs email\.authPasswordFile/],
    ["a password file without a user", { email: { ...ALL.email!, authUsername: undefined } }, /authPasswordFile needs email\.authUsername/],
    ["a relative password file", { email: { ...ALL.email!, authPasswordFile: "secrets/pw" } }, /authPasswordFile must be an absolute path/],
    ["an unknown severity", { email: { ...ALL.email!, minSeverity: "info" as "warning" } }, /email\.minSeverity must be critical or warning/],
    ["a relative Slack URL file", { slack: { apiUrlFile: "slack-url" } }, /slack\.apiUrlFile must be an absolute path/],
    ["a Slack channel without # or @", { slack: { ...ALL.slack!, channel: "ops" } }, /slack\.channel must be like #ops/],
    ["a webhook URL that is not a URL", { webhook: { url: "not a url" } }, /webhook\.url must be an http\(s\) URL/],
    ["a heartbeat interval without a unit", { heartbeat: { url: ALL.heartbeat!.url, interval: "60" } }, /heartbeat\.interval must be a duration/],
    ["a heartbeat interval under 2s", { heartbeat: { url: ALL.heartbeat!.url, interval: "1s" } }, /heartbeat\.interval must be at least 2s/],
    ["a repeat interval shorter than the group interval", { groupInterval: "10m", repeatInterval: "5m" }, /repeatInterval 5m is shorter than groupInterval 10m/],
    ["a zero group wait", { groupWait: "0s" }, /groupWait must be longer than zero/],
  ] as [string, AlertmanagerConfigParams, RegExp][])("rejects %s", (_, params, message) => {
    expect(() => renderAlertmanagerConfig(params)).toThrow(message);
  });
});

describe("alertmanagerClusterFlags", () => {
  it("without peers: clustering off (no gossip on 0.0.0.0:9094)", () => {
    expect(alertmanagerClusterFlags()).toEqual(["--cluster.listen-address="]);
  });

  it("a member of a pair (snapshot): gossip on its private address, the other member as peer on the same port", () => {
    const flags = alertmanagerClusterFlags({ address: "10.0.1.11", port: DEFAULT_CLUSTER_PORT, peers: ["10.0.1.10"] });
    expect(flags).toMatchSnapshot();
    expect(flags).toEqual(["--cluster.listen-address=10.0.1.11:9094", "--cluster.peer=10.0.1.10:9094", "--cluster.peer-timeout=15s"]);
    expect(alertmanagerClusterFlags({ address: "10.0.1.10", port: 9300, peers: ["10.0.1.11"], peerTimeout: "2s" })).toEqual(["--cluster.listen-address=10.0.1.10:9300", "--cluster.peer=10.0.1.11:9300", "--cluster.peer-timeout=2s"]);
  });

  it.each([
    ["a wildcard address", { address: "0.0.0.0x", port: 9094, peers: ["10.0.1.10"] }, /cluster.address must be an IPv4 address/],
    ["a host name", { address: "main", port: 9094, peers: ["10.0.1.10"] }, /cluster.address must be an IPv4 address/],
    ["no peers", { address: "10.0.1.11", port: 9094, peers: [] }, /cluster.peers must list at least one/],
    ["itself as peer", { address: "10.0.1.11", port: 9094, peers: ["10.0.1.11"] }, /own address/],
    ["a peer twice", { address: "10.0.1.11", port: 9094, peers: ["10.0.1.10", "10.0.1.10"] }, /twice/],
    ["a bad port", { address: "10.0.1.11", port: 0, peers: ["10.0.1.10"] }, /cluster.port must be a port number/],
    ["a peer timeout without a unit", { address: "10.0.1.11", port: 9094, peers: ["10.0.1.10"], peerTimeout: "15" }, /cluster.peerTimeout must be a duration/],
  ] as const)("rejects %s", (_, params, message) => {
    expect(() => alertmanagerClusterFlags(params)).toThrow(message);
  });
});
