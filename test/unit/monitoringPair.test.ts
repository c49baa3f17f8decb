/**
 * Monitoring on two hosts (monitoringReplica), under mocks: the main stack
 * and the chosen replica's stack each declare Prometheus and a clustered
 * Alertmanager (Grafana on main only) with the same targets, rules and
 * receivers; the receivers' secrets reach the replica inside the secret
 * replicaCredentials output; the firewalls open the gossip and Alertmanager
 * ports between the two hosts only, and every replica's exporters to both
 * Prometheus servers. Replicas not chosen declare nothing new.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { memoryBudget } from "../../lib/memory";
import { PROMETHEUS_SERVER_LABEL } from "../../templates/prometheus";
import { findLeaks, type Recorded } from "./harness";
import { runLocal, runMain, runReplica } from "./fixtures";

const P = "synaxic:";
const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";
const FIREWALL = "hcloud:index/firewall:Firewall";

const ALERT_SECRETS = {
  [`${P}alertSmtpPassword`]: "SmtpPasswordValue0123",
  [`${P}alertSlackWebhookUrl`]: "https://hooks.slack.com/services/T000/B000/SlackTokenValue0123",
  [`${P}alertWebhookUrl`]: "https://hooks.example.com/WebhookTokenValue0123",
  [`${P}alertHeartbeatUrl`]: "https://hc-ping.com/HeartbeatTokenValue0123",
};
const MAIN_EXTRA = {
  [`${P}monitoringReplica`]: "replica-1",
  [`${P}alertEmailTo`]: JSON.stringify(["ops@example.com"]),
  [`${P}alertEmailFrom`]: "alerts@example.com",
  [`${P}alertSmtpSmarthost`]: "smtp.example.com:587",
  [`${P}alertSmtpUsername`]: "alerts",
  [`${P}alertSlackChannel`]: "#ops",
  ...ALERT_SECRETS,
};

type Replica = Awaited<ReturnType<typeof runReplica>>;
let mon: Replica;
let other: Replica;
let unpaired: Replica;

beforeAll(async () => {
  mon = await runReplica("replica-1", "10.10.0.3", { mainExtra: MAIN_EXTRA });
  other = await runReplica("replica-2", "10.10.0.4", { mainExtra: MAIN_EXTRA });
  unpaired = await runReplica("replica-1", "10.10.0.3");
}, 180_000);

type Rule = { direction: string; protocol: string; port: string; sourceIps: string[]; description: string };
const rulesOf = (run: { one: (t: string, n: string) => Recorded }, name: string) => run.one(FIREWALL, name).inputs.rules as Rule[];
const sources = (rules: Rule[], port: number, protocol = "tcp") => rules.filter((r) => r.port === String(port) && r.protocol === protocol).flatMap((r) => r.sourceIps);
const stdin = (run: { one: (t: string, n: string) => Recorded }, name: string) => String(run.one(COMMAND, name).inputs.stdin);

describe("the main stack with monitoringReplica set", () => {
  it("Alertmanager listens on the private address and gossips there, with the replica as peer; Grafana stays", () => {
    const am = mon.main.one(CONTAINER, "monitoring-alertmanager").inputs;
    expect(am.command).toEqual([
      "--config.file=/etc/alertmanager/alertmanager.yml",
      "--storage.path=/alertmanager",
      "--web.listen-address=10.10.0.2:9093",
      "--cluster.listen-address=10.10.0.2:9094",
      "--cluster.peer=10.10.0.3:9094",
      "--cluster.peer-timeout=15s",
    ]);
    expect(mon.main.of(CONTAINER).map((c) => c.inputs.name)).toContain("synaxic-main-grafana");
  });

  it("Prometheus sends to both Alertmanagers, with its own external label dropped from alerts", () => {
    const conf = parse(stdin(mon.main, "monitoring-config")) as { global: { external_labels: Record<string, string> }; alerting: { alert_relabel_configs: unknown[]; alertmanagers: { static_configs: { targets: string[] }[] }[] } };
    expect(conf.alerting.alertmanagers[0]!.static_configs[0]!.targets).toEqual(["10.10.0.2:9093", "10.10.0.3:9093"]);
    expect(conf.global.external_labels).toEqual({ [PROMETHEUS_SERVER_LABEL]: "main" });
    expect(conf.alerting.alert_relabel_configs).toEqual([{ action: "labeldrop", regex: PROMETHEUS_SERVER_LABEL }]);
  });

  it("fleet.monitoring names the replica and the receivers' plain settings; their secrets are only in the secret replicaCredentials", () => {
    const fleet = mon.main.values.fleet as { monitoring: Record<string, unknown> };
    expect(fleet.monitoring).toEqual({
      replica: "replica-1",
      alertmanagerImage: "prom/alertmanager:v0.33.1",
      alertmanagerPort: 9093,
      clusterPort: 9094,
      email: { smarthost: "smtp.example.com:587", from: "alerts@example.com", to: ["ops@example.com"], username: "alerts", requireTls: true, minSeverity: "critical" },
      slack: { channel: "#ops", minSeverity: "warning" },
      webhook: { minSeverity: "warning" },
      heartbeat: { interval: "1m" },
    });
    expect(findLeaks(mon.main.values.fleet, Object.values(ALERT_SECRETS))).toEqual([]);
    expect(mon.main.secretOutputs.has("replicaCredentials")).toBe(true);
    const creds = mon.main.values.replicaCredentials as Record<string, string>;
    expect(creds.alertSmtpPassword).toBe(ALERT_SECRETS[`${P}alertSmtpPassword`]);
    expect(creds.alertSlackWebhookUrl).toBe(ALERT_SECRETS[`${P}alertSlackWebhookUrl`]);
    expect(creds.alertWebhookUrl).toBe(ALERT_SECRETS[`${P}alertWebhookUrl`]);
    expect(creds.alertHeartbeatUrl).toBe(ALERT_SECRETS[`${P}alertHeartbeatUrl`]);
  });

  it("without monitoringReplica the receivers' secrets stay on the main stack, and fleet.monitoring is null", async () => {
    const withoutPair: Record<string, string> = { ...MAIN_EXTRA };
    delete withoutPair[`${P}monitoringReplica`];
    const main = await runMain(2, withoutPair);
    expect((main.values.fleet as { monitoring: unknown }).monitoring).toBeNull();
    expect(Object.keys(main.values.replicaCredentials as object).filter((k) => k.startsWith("alert"))).toEqual([]);
    expect(main.one(CONTAINER, "monitoring-alertmanager").inputs.command).toContain("--cluster.listen-address=");
  });

  it("the main firewall opens the app, the exporters, Alertmanager and its gossip (TCP and UDP) to the monitoring replica only", () => {
    const rules = rulesOf(mon.main, "main-firewall");
    for (const port of [8080, 9100, 9187, 9121, 9093, 9094]) expect(sources(rules, port), String(port)).toEqual(["10.10.0.3/32"]);
    expect(sources(rules, 9094, "udp")).toEqual(["10.10.0.3/32"]);
    // Not the other replica.
    expect(rules.filter((r) => r.sourceIps.includes("10.10.0.4/32")).map((r) => r.port).sort()).toEqual(["5432", "6380"]);
  });
});

describe("the monitoring replica's stack", () => {
  it("declares Prometheus and Alertmanager with its monitoring memory shares, and no Grafana", () => {
    const names = mon.replica.of(CONTAINER).map((c) => c.inputs.name);
    expect(names).toContain("synaxic-replica-1-prometheus");
    expect(names).toContain("synaxic-replica-1-alertmanager");
    expect(names.filter((n) => String(n).includes("grafana"))).toEqual([]);
    const budget = memoryBudget("monitoringReplica", 8192);
    expect(mon.replica.one(CONTAINER, "monitoring-prometheus").inputs.memory).toBe(budget.limitsMiB.prometheus);
    expect(mon.replica.one(CONTAINER, "monitoring-alertmanager").inputs.memory).toBe(budget.limitsMiB.alertmanager);
    // The others' shares shrink to make room.
    expect(mon.replica.one(CONTAINER, "postgres-container").inputs.memory).toBe(budget.limitsMiB.postgres);
    expect(budget.limitsMiB.postgres).toBeLessThan(memoryBudget("replica", 8192).limitsMiB.postgres!);
  });

  it("Alertmanager: its private address, gossip with main as peer", () => {
    expect(mon.replica.one(CONTAINER, "monitoring-alertmanager").inputs.command).toEqual([
      "--config.file=/etc/alertmanager/alertmanager.yml",
      "--storage.path=/alertmanager",
      "--web.listen-address=10.10.0.3:9093",
      "--cluster.listen-address=10.10.0.3:9094",
      "--cluster.peer=10.10.0.2:9094",
      "--cluster.peer-timeout=15s",
    ]);
  });

  it("the same targets, rules and alertmanager.yml as main's; Prometheus differs only in its own name", () => {
    for (const f of ["targets-synaxic-app", "targets-postgres", "targets-redis", "targets-node", "rules", "rules-backup", "alertmanager-config"]) {
      expect(stdin(mon.replica, `monitoring-${f}`), f).toBe(stdin(mon.main, `monitoring-${f}`));
    }
    const conf = stdin(mon.replica, "monitoring-config");
    expect(conf.replaceAll("replica-1", "main").replace("role: replica", "role: main")).toBe(stdin(mon.main, "monitoring-config"));
    expect(parse(conf).global.external_labels).toEqual({ [PROMETHEUS_SERVER_LABEL]: "replica-1" });
    // Every host of the fleet, main included, scraped at its private address.
    expect(JSON.parse(stdin(mon.replica, "monitoring-targets-node")).flatMap((g: { targets: string[] }) => g.targets)).toEqual(["10.10.0.2:9100", "10.10.0.3:9100", "10.10.0.4:9100"]);
  });

  it("the receivers' secrets arrive as secrets: 0600 files and a secret alertmanager.yml, never in plain inputs or outputs", () => {
    const secrets = Object.values(ALERT_SECRETS);
    expect(stdin(mon.replica, "monitoring-alertmanager-smtp-password")).toBe(ALERT_SECRETS[`${P}alertSmtpPassword`]);
    expect(String(mon.replica.one(COMMAND, "monitoring-alertmanager-smtp-password").inputs.create)).toMatch(/replica-1\/alertmanager\/secrets\/smtp-password 0600 65534:65534/);
    expect(stdin(mon.replica, "monitoring-alertmanager-slack-url")).toBe(ALERT_SECRETS[`${P}alertSlackWebhookUrl`]);
    expect(stdin(mon.replica, "monitoring-alertmanager-config")).toContain(ALERT_SECRETS[`${P}alertWebhookUrl`]);
    const leaks = mon.replica.resources.flatMap((r) => findLeaks(r.raw, secrets).map((p) => `${r.type} ${r.name}: ${p}`));
    expect(leaks).toEqual([]);
    for (const c of mon.replica.of(COMMAND)) for (const s of secrets) expect(String(c.inputs.create), c.name).not.toContain(s);
    for (const [k, v] of Object.entries(mon.replica.values)) expect(findLeaks(v, secrets), k).toEqual([]);
  });

  it("its firewall opens Alertmanager and gossip to the main host only; its exporters to main's Prometheus", () => {
    const rules = rulesOf(mon.replica, "replica-1-firewall");
    expect(sources(rules, 9093)).toEqual(["10.10.0.2/32"]);
    expect(sources(rules, 9094)).toEqual(["10.10.0.2/32"]);
    expect(sources(rules, 9094, "udp")).toEqual(["10.10.0.2/32"]);
    for (const port of [9100, 9187, 9121]) expect(sources(rules, port), String(port)).toEqual(["10.10.0.2/32"]);
  });

  it("a main stack that names it but lacks a receiver's secret stops it with an error naming the output", async () => {
    await expect(
      runReplica("replica-1", "10.10.0.3", { mainExtra: MAIN_EXTRA, mutateMainOutputs: (o) => delete (o.replicaCredentials as Record<string, unknown>).alertWebhookUrl }),
    ).rejects.toThrow(/replicaCredentials\.alertWebhookUrl" is missing/);
  });

  it("too small for Prometheus and Alertmanager besides the rest: refused, naming the key", async () => {
    // 2 GB fits a replica, not the monitoring replica.
    await expect(
      runReplica("replica-1", "10.10.0.3", { mainExtra: MAIN_EXTRA, extra: { [`${P}hostProvider`]: "existing", [`${P}sshHost`]: "203.0.113.7", [`${P}sshHostKey`]: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorHostKey0123456789abcdefghijklmnop", [`${P}memoryMiB`]: "2048", [`${P}cpus`]: "2" } }),
    ).rejects.toThrow(/synaxic:memoryMiB: got 2048; a monitoring replica host \(monitoringReplica\) needs at least 2560 MiB/);
  });
});

describe("replicas not chosen", () => {
  it("declare no Prometheus, Alertmanager or Grafana, with or without a monitoring replica", () => {
    for (const run of [other.replica, unpaired.replica]) {
      expect(run.of("synaxic:components:Monitoring")).toEqual([]);
      expect(run.of(CONTAINER).map((c) => String(c.inputs.name)).filter((n) => /prometheus|alertmanager|grafana/.test(n))).toEqual([]);
    }
  });

  it("admit the monitoring replica's Prometheus to their exporters and app, and nothing else new", () => {
    const rules = rulesOf(other.replica, "replica-2-firewall");
    for (const port of [9100, 9187, 9121]) expect(sources(rules, port), String(port)).toEqual(["10.10.0.2/32", "10.10.0.3/32"]);
    expect(sources(rules, 8080)).toEqual(["10.10.0.2/32", "10.10.0.3/32"]);
    expect(sources(rules, 9093)).toEqual([]);
    expect(sources(rules, 9094, "udp")).toEqual([]);
    // Without a monitoring replica: main alone.
    expect(sources(rulesOf(unpaired.replica, "replica-1-firewall"), 9100)).toEqual(["10.10.0.2/32"]);
  });
});

describe("the local stack (the whole fleet on one Docker engine)", () => {
  it("runs the second pair on the chosen replica's local host, clustered with main's", async () => {
    const local = await runLocal(2, MAIN_EXTRA);
    const names = local.of(CONTAINER).map((c) => String(c.inputs.name));
    for (const n of ["synaxic-main-prometheus", "synaxic-main-alertmanager", "synaxic-main-grafana", "synaxic-replica-1-prometheus", "synaxic-replica-1-alertmanager"]) expect(names).toContain(n);
    expect(names.filter((n) => /replica-2-(prometheus|alertmanager)|replica-1-grafana/.test(n))).toEqual([]);
    const cmd = (n: string) => local.one(CONTAINER, n).inputs.command as string[];
    expect(cmd("replica-1-monitoring-alertmanager")).toContain("--cluster.peer=10.10.0.2:9094");
    expect(cmd("monitoring-alertmanager")).toContain("--cluster.peer=10.10.0.3:9094");
    expect(local.one(CONTAINER, "replica-1-monitoring-alertmanager").inputs.memory).toBe(memoryBudget("monitoringReplica", 8192).limitsMiB.alertmanager);
  });
});
