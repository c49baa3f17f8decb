import * as pulumi from "@pulumi/pulumi";
import { renderBackupAlertRules } from "../templates/backup-alerts";
import { replicaSlotName } from "../templates/postgres-sql";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName } from "../lib/addresses";
import { baseContainer, digest, hostFile, hostPath, pullImage, replaceInPlace, upload, whenRunning, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import type { ReplicaEntry } from "../lib/config";
import { remoteStep, type HostShell } from "../lib/remote";
import { PROMETHEUS_SERVER_LABEL, renderAlertRules, renderPrometheusConfig, renderTargetsFiles, type HostRole, type MonitoredHost } from "../templates/prometheus";
import { grafanaEnv, renderGrafanaAdminPasswordScript, renderGrafanaDashboardProvider, renderGrafanaDatasources, renderReplicationDashboard } from "../templates/grafana";
import { alertmanagerClusterFlags, renderAlertmanagerConfig, type AlertmanagerConfigParams } from "../templates/alertmanager";
import type { AlertSeverity, AlertingConfig, StackConfig } from "../lib/config";

/** uid of `grafana` in the Grafana image. */
const GRAFANA_UID = 472;
/** uid and gid of `nobody`, Alertmanager's user in its image (its Dockerfile: USER nobody, on busybox). */
const ALERTMANAGER_UID = 65534;
/** uid and gid of `nobody`, Prometheus' user in its image (USER nobody). */
const PROMETHEUS_UID = 65534;
/** Where Prometheus sees the files it scrapes the exporters with (templates/exporter-web.ts). */
const PROM_DIR = "/etc/prometheus";
const SCRAPE_FILES = {
  caFile: `${PROM_DIR}/scrape/ca.crt`,
  certFile: `${PROM_DIR}/scrape/client.crt`,
  keyFile: `${PROM_DIR}/scrape/client.key`,
  passwordFile: `${PROM_DIR}/scrape/exporter-password`,
};
/** Alertmanager writes its silences and notification log on shutdown. */
const ALERTMANAGER_STOP = { seconds: 20 };

/** Where Alertmanager sees its files (the host directory is bind-mounted read-only). */
const AM_DIR = "/etc/alertmanager";
const SMTP_PASSWORD_FILE = `${AM_DIR}/secrets/smtp-password`;
const SLACK_URL_FILE = `${AM_DIR}/secrets/slack-api-url`;

/** The receivers, with their secrets as secret Outputs. */
export interface AlertingArgs {
  port: number;
  email?: { smarthost: string; from: string; to: string[]; username: string; password?: pulumi.Input<string>; requireTls: boolean; minSeverity: AlertSeverity };
  slack?: { webhookUrl: pulumi.Input<string>; channel: string; minSeverity: AlertSeverity };
  webhook?: { url: pulumi.Input<string>; minSeverity: AlertSeverity };
  heartbeat?: { url: pulumi.Input<string>; interval: string };
}

/**
 * One of the two monitoring hosts (the main host and monitoringReplica): its
 * Alertmanager listens on its private address and gossips with the other's,
 * and its Prometheus sends to both.
 */
export interface MonitoringPair {
  /** This host's private address. */
  privateIp: string;
  /** The other monitoring host. */
  peer: { name: string; privateIp: string };
  /** Gossip port (TCP and UDP), the same on both. */
  clusterPort: number;
}

export interface MonitoringArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  /** The `role` label of this Prometheus' own target (default main). */
  role?: HostRole;
  shell: HostShell;
  images: { prometheus: string; grafana: string; alertmanager: string };
  networkMode: pulumi.Input<string>;
  ports: { prometheus: number; grafana: number; app: number; nodeExporter: number; postgresExporter: number; redisExporter: number };
  /** Every host (main and each replica) with its private address: exporters are scraped there. */
  hosts: MonitoredHost[];
  /** The replicas and their slots, for the replication alerts. */
  replicas: ReplicaEntry[];
  /**
   * How this Prometheus proves itself to the exporters: the metrics CA, its
   * client certificate and key (secret), and the scrape user's password
   * (secret), which node_exporter and postgres_exporter check.
   */
  scrape: { caPem: pulumi.Input<string>; certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; username: string; password: pulumi.Input<string> };
  /** Grafana's admin password; absent: no Grafana on this host (the monitoring replica has none). */
  grafanaAdminPassword?: pulumi.Input<string>;
  /** Alertmanager and its receivers. */
  alerting: AlertingArgs;
  /** Monitoring on two hosts; absent: this host alone, Alertmanager on loopback and not clustered. */
  pair?: MonitoringPair;
  deleteDataOnDestroy: boolean;
  timeoutSeconds: number;
}

function compareIPv4(a: string, b: string): number {
  const n = (ip: string) => ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  return n(a) - n(b);
}

/** The receivers of a main stack's configuration, with their secrets from StackConfig. */
export function alertingArgs(cfg: { alerting: AlertingConfig; secrets: StackConfig["secrets"] }): AlertingArgs {
  const a = cfg.alerting;
  const need = (v: pulumi.Output<string> | undefined, key: string): pulumi.Output<string> => {
    if (!v) throw new Error(`alertingArgs: ${key} is configured but its secret was not read`);
    return v;
  };
  return {
    port: a.port,
    ...(a.email ? { email: { ...a.email, ...(a.email.username ? { password: need(cfg.secrets.alertSmtpPassword, "alertSmtpPassword") } : {}) } } : {}),
    ...(a.slack ? { slack: { ...a.slack, webhookUrl: need(cfg.secrets.alertSlackWebhookUrl, "alertSlackWebhookUrl") } } : {}),
    ...(a.webhook ? { webhook: { ...a.webhook, url: need(cfg.secrets.alertWebhookUrl, "alertWebhookUrl") } } : {}),
    ...(a.heartbeat ? { heartbeat: { ...a.heartbeat, url: need(cfg.secrets.alertHeartbeatUrl, "alertHeartbeatUrl") } } : {}),
  };
}

/**
 * Prometheus, Alertmanager and Grafana on the main host, reachable on
 * loopback only; with a pair (monitoringReplica), Prometheus and Alertmanager
 * on that replica too, scraping the same targets with the same rules and the
 * Alertmanagers clustered (see MonitoringPair and alertmanagerClusterFlags). Prometheus sends its alerts to Alertmanager, which notifies
 * the receivers from stack config (templates/alertmanager.ts) and sends the
 * Watchdog to the heartbeat URL.
 * Scrape targets are files generated from the replica list that Prometheus
 * re-reads by itself; alert rules cover replication lag (from LSNs), replicas
 * and slots, disks and certificates. Grafana has a provisioned datasource and
 * replication dashboard, a generated admin password, no sign-up and no
 * anonymous access.
 */
export class Monitoring extends pulumi.ComponentResource {
  public readonly targets: Record<string, string>;
  public readonly rules: string;
  /** alertmanager.yml as written to the host: a secret when it holds a webhook URL. */
  public readonly alertmanagerConfig: pulumi.Output<string>;

  constructor(name: string, args: MonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:Monitoring", name, {}, opts);
    const parent = { parent: this };

    const promDir = `${args.hostName}/prometheus`;
    const file = (label: string, path: string, content: string) =>
      hostFile(`${name}-${label}`, args.shell, { path: `${promDir}/${path}`, content, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds }, parent);
    this.targets = renderTargetsFiles({ hosts: args.hosts, ports: args.ports });
    // Target files are re-read by Prometheus as they change.
    const targetFiles = Object.entries(this.targets).map(([f, content]) => file(`targets-${f.replace(/\.json$/, "")}`, `targets/${f}`, content));
    // The scrape credentials: Prometheus (nobody) alone reads the key and the
    // password, which it reads again for every scrape (password_file).
    const scrapeFile = (label: string, path: string, content: pulumi.Input<string>, mode: string) =>
      hostFile(`${name}-scrape-${label}`, args.shell, { path: `${promDir}/scrape/${path}`, content, mode, owner: `${PROMETHEUS_UID}:${PROMETHEUS_UID}`, timeoutSeconds: args.timeoutSeconds }, parent);
    const scrapeFiles = [
      scrapeFile("ca", "ca.crt", args.scrape.caPem, "0444"),
      scrapeFile("cert", "client.crt", args.scrape.certPem, "0444"),
      scrapeFile("key", "client.key", pulumi.secret(args.scrape.keyPem), "0400"),
      scrapeFile("password", "exporter-password", pulumi.secret(args.scrape.password), "0400"),
    ];

    const pair = args.pair;
    // With a pair each Alertmanager listens on its private address (the other
    // host's Prometheus sends there; the firewall admits that host only), and
    // each Prometheus sends to both: the documented HA setup, every alert to
    // every Alertmanager (Alertmanager README, "High Availability", v0.25.0).
    const amListen = pair ? pair.privateIp : LOOPBACK;
    // In the same order on both hosts: the two prometheus.yml differ only in the server's own name.
    const alertmanagers = pair
      ? [pair.privateIp, pair.peer.privateIp].sort(compareIPv4).map((ip) => `${ip}:${args.alerting.port}`)
      : [`${LOOPBACK}:${args.alerting.port}`];
    const config = renderPrometheusConfig({
      ruleFiles: ["/etc/prometheus/rules/*.yml"],
      targetsDir: "/etc/prometheus/targets",
      selfTarget: `${LOOPBACK}:${args.ports.prometheus}`,
      selfLabels: { host: args.hostName, role: args.role ?? "main" },
      alertmanagers,
      // Each server's series say which server they come from; its alerts do
      // not, so that both servers' copies of an alert are one alert.
      ...(pair ? { externalLabels: { [PROMETHEUS_SERVER_LABEL]: args.hostName }, alertLabelsDropped: [PROMETHEUS_SERVER_LABEL] } : {}),
      exporterAuth: { caFile: SCRAPE_FILES.caFile, certFile: SCRAPE_FILES.certFile, keyFile: SCRAPE_FILES.keyFile, basicAuth: { username: args.scrape.username, passwordFile: SCRAPE_FILES.passwordFile } },
    });
    // The main host's own slot exists on a promoted replica after a failover.
    this.rules = renderAlertRules({ replicas: args.replicas.map((r) => ({ name: r.name, slotName: r.slotName })), otherStandbys: [{ name: "main", slotName: replicaSlotName("main") }] });
    // The configuration and rules are files on the host too: a change is a
    // reload (SIGHUP), not a restart.
    // Backup and archiving rules (templates/backup-alerts.ts): silent on a fleet without backups, whose metrics do not exist.
    const configFiles = [file("config", "prometheus.yml", config), file("rules", "rules/synaxic.yml", this.rules), file("rules-backup", "rules/backup.yml", renderBackupAlertRules()), ...scrapeFiles];

    const promData = new docker.Volume(`${name}-prometheus-data`, { name: `synaxic-${args.hostName}-prometheus-data` }, { ...parent, retainOnDelete: !args.deleteDataOnDestroy });
    const promImage = pullImage(`${name}-prometheus-image`, args.images.prometheus, parent);
    const prometheus = new docker.Container(
      `${name}-prometheus`,
      {
        name: containerName(args.hostName, "prometheus"),
        ...memoryLimit(args.memory, "prometheus"),
        ...stopGrace(STOP_GRACE.prometheus),
        image: promImage.imageId,
        ...baseContainer(args.networkMode),
        command: [
          // Loopback only: reach it through an SSH tunnel.
          `--web.listen-address=${LOOPBACK}:${args.ports.prometheus}`,
          "--config.file=/etc/prometheus/prometheus.yml",
          "--storage.tsdb.path=/prometheus",
          "--storage.tsdb.retention.time=30d",
          // No --web.enable-lifecycle and no --web.enable-admin-api: the
          // program reloads with SIGHUP, and nothing may shut Prometheus down
          // or delete its data over HTTP.
        ],
        volumes: [{ volumeName: promData.name, containerPath: "/prometheus" }],
        mounts: [{ type: "bind", source: hostPath(args.shell, promDir), target: PROM_DIR, readOnly: true }],
      },
      { ...parent, ...replaceInPlace, dependsOn: [...targetFiles, ...configFiles] },
    );
    remoteStep(
      `${name}-reload`,
      args.shell,
      {
        // SIGHUP from inside the container: `docker kill --signal` marks the
        // container as stopped by hand, and Docker then never restarts it
        // after the daemon restarts (moby/moby#41302), so monitoring would
        // stay down after a power loss.
        argv: whenRunning(containerName(args.hostName, "prometheus"), ["docker", "exec", containerName(args.hostName, "prometheus"), "sh", "-c", "kill -HUP 1"]),
        triggers: [digest(config), digest(this.rules), prometheus.id],
        timeoutSeconds: args.timeoutSeconds,
      },
      { ...parent, dependsOn: [prometheus, ...configFiles] },
    );

    // --- Alertmanager ---------------------------------------------------
    // Its files: 0600, owned by its user. alertmanager.yml holds the webhook
    // and heartbeat URLs (Alertmanager 0.25 has no url_file for webhooks;
    // see templates/alertmanager.ts), so it is a secret whenever one is set;
    // the SMTP password and the Slack URL are files of their own, which
    // Alertmanager reads on every send. Files are written exactly as given:
    // the password file is read without trimming (notify/email/email.go
    // getPassword, v0.25.0).
    const amDir = `${args.hostName}/alertmanager`;
    const amFile = (label: string, path: string, content: pulumi.Input<string>) =>
      hostFile(`${name}-alertmanager-${label}`, args.shell, { path: `${amDir}/${path}`, content, mode: "0600", owner: `${ALERTMANAGER_UID}:${ALERTMANAGER_UID}`, timeoutSeconds: args.timeoutSeconds }, parent);
    const a = args.alerting;
    const secretFiles: pulumi.Resource[] = [];
    if (a.email?.username) {
      if (a.email.password === undefined) throw new Error("Monitoring: alerting.email.username needs alerting.email.password");
      secretFiles.push(amFile("smtp-password", "secrets/smtp-password", pulumi.secret(a.email.password)));
    }
    if (a.slack) secretFiles.push(amFile("slack-url", "secrets/slack-api-url", pulumi.secret(a.slack.webhookUrl)));
    const webhookUrl = a.webhook ? pulumi.output(a.webhook.url) : pulumi.output(undefined);
    const heartbeatUrl = a.heartbeat ? pulumi.output(a.heartbeat.url) : pulumi.output(undefined);
    const amText = pulumi.all([webhookUrl, heartbeatUrl]).apply(([webhook, heartbeat]) => {
      const params: AlertmanagerConfigParams = {
        ...(a.email
          ? {
              email: {
                smarthost: a.email.smarthost,
                from: a.email.from,
                to: a.email.to,
                ...(a.email.username ? { authUsername: a.email.username, authPasswordFile: SMTP_PASSWORD_FILE } : {}),
                requireTls: a.email.requireTls,
                minSeverity: a.email.minSeverity,
              },
            }
          : {}),
        ...(a.slack ? { slack: { apiUrlFile: SLACK_URL_FILE, ...(a.slack.channel ? { channel: a.slack.channel } : {}), minSeverity: a.slack.minSeverity } } : {}),
        ...(a.webhook && webhook !== undefined ? { webhook: { url: webhook, minSeverity: a.webhook.minSeverity } } : {}),
        ...(a.heartbeat && heartbeat !== undefined ? { heartbeat: { url: heartbeat, interval: a.heartbeat.interval } } : {}),
      };
      return renderAlertmanagerConfig(params);
    });
    this.alertmanagerConfig = a.webhook || a.heartbeat ? pulumi.secret(amText) : amText;
    const amConfigFile = amFile("config", "alertmanager.yml", this.alertmanagerConfig);

    const amData = new docker.Volume(`${name}-alertmanager-data`, { name: `synaxic-${args.hostName}-alertmanager-data` }, { ...parent, retainOnDelete: !args.deleteDataOnDestroy });
    const amImage = pullImage(`${name}-alertmanager-image`, args.images.alertmanager, parent);
    const alertmanager = new docker.Container(
      `${name}-alertmanager`,
      {
        name: containerName(args.hostName, "alertmanager"),
        ...memoryLimit(args.memory, "alertmanager"),
        ...stopGrace(ALERTMANAGER_STOP),
        image: amImage.imageId,
        ...baseContainer(args.networkMode),
        command: [
          `--config.file=${AM_DIR}/alertmanager.yml`,
          "--storage.path=/alertmanager",
          // Its API lists the configuration, webhook URLs included: loopback
          // alone, or with a pair the private address, which the firewall
          // opens to the other monitoring host only (it holds the same file).
          `--web.listen-address=${amListen}:${a.port}`,
          // Alone: no cluster. In a pair: gossip on the private address with the other host as peer.
          ...alertmanagerClusterFlags(pair ? { address: pair.privateIp, port: pair.clusterPort, peers: [pair.peer.privateIp] } : undefined),
        ],
        volumes: [{ volumeName: amData.name, containerPath: "/alertmanager" }],
        mounts: [{ type: "bind", source: hostPath(args.shell, amDir), target: AM_DIR, readOnly: true }],
      },
      { ...parent, ...replaceInPlace, dependsOn: [amConfigFile, ...secretFiles] },
    );
    remoteStep(
      `${name}-alertmanager-reload`,
      args.shell,
      {
        // SIGHUP reloads alertmanager.yml (cmd/alertmanager/main.go), from
        // inside the container for the reason given for Prometheus above.
        argv: whenRunning(containerName(args.hostName, "alertmanager"), ["docker", "exec", containerName(args.hostName, "alertmanager"), "sh", "-c", "kill -HUP 1"]),
        // A digest of the file as trigger, kept secret like the file itself.
        triggers: [pulumi.secret(amText.apply(digest)), alertmanager.id],
        timeoutSeconds: args.timeoutSeconds,
      },
      { ...parent, dependsOn: [alertmanager, amConfigFile] },
    );

    const grafanaAdminPassword = args.grafanaAdminPassword;
    if (grafanaAdminPassword !== undefined) {
      const grafanaData = new docker.Volume(`${name}-grafana-data`, { name: `synaxic-${args.hostName}-grafana-data` }, { ...parent, retainOnDelete: !args.deleteDataOnDestroy });
      const grafanaImage = pullImage(`${name}-grafana-image`, args.images.grafana, parent);
      const passwordFile = "/run/synaxic/grafana-admin-password";
      const grafana = new docker.Container(
        `${name}-grafana`,
        {
          name: containerName(args.hostName, "grafana"),
          ...memoryLimit(args.memory, "grafana"),
          ...stopGrace(STOP_GRACE.grafana),
          image: grafanaImage.imageId,
          ...baseContainer(args.networkMode),
          // Loopback only, like Prometheus.
          envs: [...grafanaEnv({ adminPasswordFile: passwordFile }), `GF_SERVER_HTTP_ADDR=${LOOPBACK}`, `GF_SERVER_HTTP_PORT=${args.ports.grafana}`],
          volumes: [{ volumeName: grafanaData.name, containerPath: "/var/lib/grafana" }],
          uploads: [
            upload(passwordFile, pulumi.secret(grafanaAdminPassword), "0400", GRAFANA_UID),
            upload("/etc/grafana/provisioning/datasources/synaxic.yml", renderGrafanaDatasources({ prometheusUrl: `http://${LOOPBACK}:${args.ports.prometheus}` }), "0644", GRAFANA_UID),
            upload("/etc/grafana/provisioning/dashboards/synaxic.yml", renderGrafanaDashboardProvider({ path: "/var/lib/synaxic-dashboards" }), "0644", GRAFANA_UID),
            upload("/var/lib/synaxic-dashboards/replication.json", renderReplicationDashboard(), "0644", GRAFANA_UID),
          ],
        },
        { ...parent, ...replaceInPlace },
      );
      // The settings give the admin its password on Grafana's first start
      // only: apply it on every change (a rotation) and to every new container.
      const grafanaName = containerName(args.hostName, "grafana");
      remoteStep(
        `${name}-grafana-admin-password`,
        args.shell,
        {
          argv: ["sh", "-c", renderGrafanaAdminPasswordScript(Math.min(120, Math.max(10, args.timeoutSeconds - 10))), "sh", grafanaName],
          stdin: pulumi.secret(pulumi.interpolate`${grafanaAdminPassword}\n`),
          triggers: [grafana.id],
          timeoutSeconds: args.timeoutSeconds,
          secretOutput: true,
        },
        { ...parent, dependsOn: [grafana] },
      );
    }

    this.registerOutputs({ targets: this.targets, alertmanagerConfig: this.alertmanagerConfig });
  }
}
