/**
 * Monitoring that outlives the main host, on real servers (Debian's
 * prometheus 2.42 and prometheus-alertmanager 0.25.0, the pinned images'
 * versions): two hosts each run Prometheus with the rendered configuration
 * and rules and Alertmanager with the rendered configuration and cluster
 * flags, as the main host and the monitoring replica do.
 *
 * - Each Prometheus sends to both Alertmanagers, with its own external label
 *   dropped from alerts (templates/prometheus.ts alertLabelsDropped): the two
 *   servers' alerts are one alert in Alertmanager.
 * - The Alertmanagers gossip (templates/alertmanager.ts
 *   alertmanagerClusterFlags): one notification per group reaches the
 *   webhook, not two, and the heartbeat is not doubled.
 * - With the main host's pair killed, the Watchdog heartbeat keeps coming,
 *   from the replica's Alertmanager; with the replica's pair killed instead,
 *   from the main host's.
 *
 * Only timings are shortened (the peer timeout, rendered with the flags;
 * push-pull, settle and reconnect intervals).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { PrometheusServer } from "../rig/prometheus";
import { AlertmanagerServer, HttpCatcher, MetricsEndpoint } from "../rig/alertmanager";
import { DEFAULT_CLUSTER_PORT, RECEIVERS, WATCHDOG_ALERT, alertmanagerClusterFlags, renderAlertmanagerConfig } from "../../templates/alertmanager";
import { PROMETHEUS_SERVER_LABEL, renderAlertRules, renderPrometheusConfig, renderTargetsFiles, type MonitoredHost } from "../../templates/prometheus";

interface WebhookPayload {
  receiver: string;
  status: string;
  groupKey: string;
  groupLabels: Record<string, string>;
  alerts: { status: string; labels: Record<string, string> }[];
}

const REPLICAS = [
  { name: "replica1", slotName: "synaxic_replica1" },
  { name: "replica2", slotName: "synaxic_replica2" },
];
/** The heartbeat interval; its repeat_interval is half of it, which must exceed the peer timeout (as lib/config.ts requires). */
const HEARTBEAT_S = 6;
const PEER_TIMEOUT = "2s";
const WEBHOOK_PATH = "/webhook/mha-0001";
const HEARTBEAT_PATH = "/heartbeat/mha-0001";

/** replica1 disconnected (its slot inactive): one critical alert, for one group. */
function exporterText(): string {
  const lines: string[] = [];
  for (const r of REPLICAS) {
    lines.push(`synaxic_slot_active{slot_name="${r.slotName}"} ${r.name === "replica1" ? 0 : 1}`);
    lines.push(`synaxic_slot_retained_bytes{slot_name="${r.slotName}"} 0`);
    lines.push(`synaxic_slot_lost{slot_name="${r.slotName}"} 0`);
    lines.push(`synaxic_replication_lag_bytes{application_name="${r.name}",client_addr="10.0.0.9",state="streaming"} 0`);
    lines.push(`synaxic_replication_replay_lag_seconds{application_name="${r.name}",client_addr="10.0.0.9"} 0`);
  }
  lines.push("pg_up 1");
  return `${lines.join("\n")}\n`;
}

interface Pair {
  name: string;
  host: Host;
  prom: PrometheusServer;
  am: AlertmanagerServer;
}

describe("a monitoring pair on two hosts: Prometheus and clustered Alertmanager on each", () => {
  let net: TestNet;
  let http: HttpCatcher;
  let exporters: MetricsEndpoint;
  let quiet: MetricsEndpoint;
  const pairs: Record<"main" | "mon", Pair> = {} as Record<"main" | "mon", Pair>;

  const beats = (since = 0) => http.on(HEARTBEAT_PATH).filter((r) => r.at >= since);
  const hooks = () => http.json<WebhookPayload>(WEBHOOK_PATH);
  const replica1Firing = () => hooks().filter((h) => h.groupLabels.replica === "replica1" && h.status === "firing");

  beforeAll(async () => {
    net = await TestNet.create(["mha-main", "mha-mon"]);
    http = await new HttpCatcher(net.rootIp).start();
    exporters = await new MetricsEndpoint(net.rootIp).start();
    exporters.text = exporterText();
    quiet = await new MetricsEndpoint(net.rootIp).start();

    const amConfig = renderAlertmanagerConfig({
      webhook: { url: `${http.base}${WEBHOOK_PATH}` },
      heartbeat: { url: `${http.base}${HEARTBEAT_PATH}`, interval: `${HEARTBEAT_S}s` },
      groupWait: "1s",
      groupInterval: "2s",
      repeatInterval: "1h",
      criticalRepeatInterval: "1h",
    });
    const rules = renderAlertRules({ replicas: REPLICAS, otherStandbys: [{ name: "main", slotName: "synaxic_main" }], expectedRedisReplicas: 0, thresholds: { slotInactiveFor: "1s", targetDownFor: "1s" } });
    // The fleet's hosts as both servers see them: the same target files on each.
    const hosts: MonitoredHost[] = [
      { name: "main", role: "main", address: "10.0.0.1", targetOverrides: { app: quiet.target, nodeExporter: quiet.target, postgresExporter: exporters.target, redisExporter: quiet.target } },
    ];
    const main = net.host("mha-main");
    const mon = net.host("mha-mon");
    const amAddresses = [main, mon].map((h) => `${h.ip}:9093`);

    const build = (name: string, host: Host, peer: Host): Pair => {
      const amRoot = net.mkdir(`am-${name}`);
      writeFileSync(join(amRoot, "alertmanager.yml"), amConfig, { mode: 0o600 });
      const am = new AlertmanagerServer(host, join(amRoot, "alertmanager.yml"), net.mkdir(`am-data-${name}`), {
        clusterFlags: alertmanagerClusterFlags({ address: host.ip, port: DEFAULT_CLUSTER_PORT, peers: [peer.ip], peerTimeout: PEER_TIMEOUT }),
        extraArgs: ["--cluster.pushpull-interval=5s", "--cluster.settle-timeout=5s", "--cluster.reconnect-interval=2s"],
      });
      const promRoot = net.mkdir(`prometheus-${name}`);
      mkdirSync(join(promRoot, "rules"));
      mkdirSync(join(promRoot, "targets"));
      writeFileSync(join(promRoot, "rules", "synaxic.yml"), rules);
      for (const [f, content] of Object.entries(renderTargetsFiles({ hosts }))) writeFileSync(join(promRoot, "targets", f), content);
      writeFileSync(
        join(promRoot, "prometheus.yml"),
        renderPrometheusConfig({
          ruleFiles: [join(promRoot, "rules", "*.yml")],
          targetsDir: join(promRoot, "targets"),
          scrapeInterval: "1s",
          scrapeTimeout: "1s",
          evaluationInterval: "1s",
          selfTarget: `${host.ip}:9090`,
          selfLabels: { host: name, role: name === "main" ? "main" : "replica" },
          externalLabels: { [PROMETHEUS_SERVER_LABEL]: name },
          alertLabelsDropped: [PROMETHEUS_SERVER_LABEL],
          alertmanagers: amAddresses,
        }),
      );
      const prom = new PrometheusServer(host, join(promRoot, "prometheus.yml"), net.mkdir(`tsdb-${name}`), 9090, ["--rules.alert.resend-delay=2s"]);
      return { name, host, prom, am };
    };
    pairs.main = build("main", main, mon);
    pairs.mon = build("mon", mon, main);
    await Promise.all([pairs.main.am.start(), pairs.mon.am.start()]);
    await Promise.all([pairs.main.prom.start(), pairs.mon.prom.start()]);
  });

  afterAll(async () => {
    for (const p of Object.values(pairs)) {
      await p?.prom.stop();
      await p?.am.stop();
    }
    await http?.stop();
    await exporters?.stop();
    await quiet?.stop();
    await net?.destroy();
  });

  const clusterPeers = async (am: AlertmanagerServer) => (await am.status()).cluster.peers.map((p) => p.address.replace(/:\d+$/, "")).sort();

  it("the two Alertmanagers form one cluster over their private addresses (gossip bound there, --cluster.peer both ways)", async () => {
    const want = [pairs.main.host.ip, pairs.mon.host.ip].sort();
    for (const p of Object.values(pairs)) {
      await waitFor(`${p.name}'s Alertmanager sees both members`, async () => JSON.stringify(await clusterPeers(p.am)) === JSON.stringify(want), 30_000, 250);
      // Settled: from here on it evaluates notifications (notify/notify.go GossipSettleStage).
      await waitFor(`${p.name}'s Alertmanager settled`, async () => (await p.am.status()).cluster.status === "ready", 30_000, 250);
    }
  });

  it("each Prometheus sends to both Alertmanagers", async () => {
    for (const p of Object.values(pairs)) {
      const active = await waitFor(`${p.name}'s Prometheus discovered both`, async () => {
        const r = await fetch(`${p.prom.url}/api/v1/alertmanagers`);
        const body = (await r.json()) as { data: { activeAlertmanagers: { url: string }[] } };
        return body.data.activeAlertmanagers.length === 2 ? body.data.activeAlertmanagers : undefined;
      }, 15_000, 200);
      expect(active.map((a) => a.url).sort()).toEqual([pairs.main.am, pairs.mon.am].map((am) => `http://${am.address}/api/v2/alerts`).sort());
    }
  });

  it("the two servers' alerts are one alert in each Alertmanager: the server label is dropped, the series keep it", async () => {
    for (const p of Object.values(pairs)) {
      const alerts = await waitFor(`replica1's disconnection in ${p.name}'s Alertmanager`, async () => {
        const a = await p.am.alerts();
        return a.some((x) => x.labels.alertname === "SynaxicReplicaDisconnected") && a.some((x) => x.labels.alertname === WATCHDOG_ALERT) ? a : undefined;
      }, 60_000, 250);
      for (const name of ["SynaxicReplicaDisconnected", WATCHDOG_ALERT]) expect(alerts.filter((x) => x.labels.alertname === name), `${name} in ${p.name}`).toHaveLength(1);
      for (const a of alerts) expect(a.labels[PROMETHEUS_SERVER_LABEL], a.labels.alertname).toBeUndefined();
      // The label is still on what each server stores and shows: the external label is there, for federation or remote storage.
      const cfg = (await (await fetch(`${p.prom.url}/api/v1/status/config`)).json()) as { data: { yaml: string } };
      expect(cfg.data.yaml).toContain(`${PROMETHEUS_SERVER_LABEL}: ${p.name}`);
    }
  });

  it("with both pairs up, one notification per group reaches the webhook, not two; the heartbeat is not doubled", async () => {
    await waitFor("replica1's group on the webhook", async () => replica1Firing().length > 0, 60_000, 250);
    // Several group intervals and peer timeouts later: still the one notification.
    const start = Date.now();
    await new Promise((r) => setTimeout(r, 4 * HEARTBEAT_S * 1000));
    const groups = new Map<string, number>();
    for (const h of hooks().filter((x) => x.status === "firing")) groups.set(h.groupKey, (groups.get(h.groupKey) ?? 0) + 1);
    process.stdout.write(`[alertmanager-ha] firing notifications per group: ${JSON.stringify([...groups.values()])}\n`);
    expect(replica1Firing()).toHaveLength(1);
    expect([...groups.values()].every((n) => n === 1), JSON.stringify([...groups])).toBe(true);
    expect(replica1Firing()[0]!.receiver).toBe(RECEIVERS.critical);
    // Doubled, 4 intervals would give about 8 beats.
    const window = beats(start);
    process.stdout.write(`[alertmanager-ha] ${window.length} heartbeats in ${4 * HEARTBEAT_S}s (interval ${HEARTBEAT_S}s), from ${[...new Set(window.map((b) => b.remote))].join(", ")}\n`);
    expect(window.length).toBeGreaterThanOrEqual(3);
    expect(window.length).toBeLessThanOrEqual(5);
  });

  /** Kills a host's pair as a vanished host would lose it, and checks the heartbeat keeps coming from the other. */
  async function killAndFollow(dead: Pair, alive: Pair): Promise<void> {
    const killedAt = Date.now();
    await Promise.all([dead.prom.stop(), dead.am.stop("SIGKILL")]);
    const after = await waitFor(`three heartbeats after ${dead.name}'s pair is gone`, async () => {
      const b = beats(killedAt + 500);
      return b.length >= 3 ? b : undefined;
    }, 60_000, 250);
    process.stdout.write(`[alertmanager-ha] ${dead.name}'s pair killed: heartbeats at +${after.map((b) => b.at - killedAt).join(", +")} ms from ${[...new Set(after.map((b) => b.remote))].join(", ")}\n`);
    for (const b of after) expect(b.remote).toBe(alive.host.ip);
    // Every interval still: no long silence for a heartbeat service to page on.
    for (let i = 1; i < after.length; i++) expect(after[i]!.at - after[i - 1]!.at).toBeLessThan(2 * HEARTBEAT_S * 1000);
    // Nothing is re-sent for a group the cluster already notified.
    expect(replica1Firing()).toHaveLength(1);
  }

  it("kill the main host's pair: the Watchdog heartbeat continues from the replica's pair", async () => {
    await killAndFollow(pairs.main, pairs.mon);
  });

  it("the main pair back: it rejoins, and a restarted member does not re-send what the cluster already sent", async () => {
    // SIGKILLed, it kept no notification log of its own; it learns the cluster's on joining.
    await pairs.main.am.start();
    await pairs.main.prom.start();
    const want = [pairs.main.host.ip, pairs.mon.host.ip].sort();
    for (const p of Object.values(pairs)) await waitFor(`${p.name} sees both members again`, async () => JSON.stringify(await clusterPeers(p.am)) === JSON.stringify(want), 30_000, 250);
    await waitFor("main's Alertmanager has the alerts again", async () => (await pairs.main.am.alerts()).some((x) => x.labels.alertname === "SynaxicReplicaDisconnected"), 60_000, 250);
    await new Promise((r) => setTimeout(r, 3 * HEARTBEAT_S * 1000));
    expect(replica1Firing()).toHaveLength(1);
  });

  it("kill the replica's pair instead: the heartbeat continues from the main host's", async () => {
    await killAndFollow(pairs.mon, pairs.main);
  });
});

/**
 * The same two hosts without what the pair relies on, to show the checks
 * above can fail: Alertmanagers not clustered, and each Prometheus' own
 * label left on its alerts. Both copies of the alert reach each
 * Alertmanager, and each Alertmanager notifies on its own.
 */
describe("control: the same pair without the cluster and without dropping the server label", () => {
  let net: TestNet;
  let http: HttpCatcher;
  let exporters: MetricsEndpoint;
  let quiet: MetricsEndpoint;
  const servers: { prom: PrometheusServer; am: AlertmanagerServer }[] = [];

  beforeAll(async () => {
    net = await TestNet.create(["mha-cmain", "mha-cmon"]);
    http = await new HttpCatcher(net.rootIp).start();
    exporters = await new MetricsEndpoint(net.rootIp).start();
    exporters.text = exporterText();
    quiet = await new MetricsEndpoint(net.rootIp).start();
    const amConfig = renderAlertmanagerConfig({ webhook: { url: `${http.base}${WEBHOOK_PATH}` }, groupWait: "1s", groupInterval: "2s", repeatInterval: "1h", criticalRepeatInterval: "1h" });
    const rules = renderAlertRules({ replicas: REPLICAS, otherStandbys: [{ name: "main", slotName: "synaxic_main" }], expectedRedisReplicas: 0, thresholds: { slotInactiveFor: "1s", targetDownFor: "1s" } });
    const hosts: MonitoredHost[] = [
      { name: "main", role: "main", address: "10.0.0.1", targetOverrides: { app: quiet.target, nodeExporter: quiet.target, postgresExporter: exporters.target, redisExporter: quiet.target } },
    ];
    const all = [net.host("mha-cmain"), net.host("mha-cmon")];
    for (const [i, host] of all.entries()) {
      const name = i === 0 ? "main" : "mon";
      const amRoot = net.mkdir(`am-${name}`);
      writeFileSync(join(amRoot, "alertmanager.yml"), amConfig, { mode: 0o600 });
      // No cluster flags: each Alertmanager on its own (alertmanagerClusterFlags() without peers).
      const am = new AlertmanagerServer(host, join(amRoot, "alertmanager.yml"), net.mkdir(`am-data-${name}`), { clusterFlags: alertmanagerClusterFlags() });
      const promRoot = net.mkdir(`prometheus-${name}`);
      mkdirSync(join(promRoot, "rules"));
      mkdirSync(join(promRoot, "targets"));
      writeFileSync(join(promRoot, "rules", "synaxic.yml"), rules);
      for (const [f, content] of Object.entries(renderTargetsFiles({ hosts }))) writeFileSync(join(promRoot, "targets", f), content);
      writeFileSync(
        join(promRoot, "prometheus.yml"),
        renderPrometheusConfig({
          ruleFiles: [join(promRoot, "rules", "*.yml")],
          targetsDir: join(promRoot, "targets"),
          scrapeInterval: "1s",
          scrapeTimeout: "1s",
          evaluationInterval: "1s",
          selfTarget: `${host.ip}:9090`,
          selfLabels: { host: name, role: name === "main" ? "main" : "replica" },
          externalLabels: { [PROMETHEUS_SERVER_LABEL]: name },
          alertmanagers: all.map((h) => `${h.ip}:9093`),
        }),
      );
      servers.push({ prom: new PrometheusServer(host, join(promRoot, "prometheus.yml"), net.mkdir(`tsdb-${name}`), 9090, ["--rules.alert.resend-delay=2s"]), am });
    }
    await Promise.all(servers.map((s) => s.am.start()));
    await Promise.all(servers.map((s) => s.prom.start()));
  });

  afterAll(async () => {
    for (const s of servers) {
      await s.prom.stop();
      await s.am.stop();
    }
    await http?.stop();
    await exporters?.stop();
    await quiet?.stop();
    await net?.destroy();
  });

  it("each Alertmanager holds both servers' copies of the alert, and the group is notified twice", async () => {
    for (const { am } of servers) {
      const copies = await waitFor("both copies", async () => {
        const a = (await am.alerts()).filter((x) => x.labels.alertname === "SynaxicReplicaDisconnected");
        return a.length === 2 ? a : undefined;
      }, 60_000, 250);
      expect(copies.map((a) => a.labels[PROMETHEUS_SERVER_LABEL]).sort()).toEqual(["main", "mon"]);
    }
    const firing = () => http.json<WebhookPayload>(WEBHOOK_PATH).filter((h) => h.groupLabels.replica === "replica1" && h.status === "firing");
    await waitFor("two notifications of replica1's group", async () => firing().length >= 2, 60_000, 250);
    await new Promise((r) => setTimeout(r, 5000));
    expect(firing()).toHaveLength(2);
    expect(new Set(http.on(WEBHOOK_PATH).map((r) => r.remote)).size).toBe(2);
  });
});
