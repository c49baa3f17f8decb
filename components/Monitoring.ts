import * as pulumi from "@pulumi/pulumi";
import { replicaSlotName } from "../templates/postgres-sql";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName } from "../lib/addresses";
import { baseContainer, digest, hostFile, hostPath, pullImage, replaceInPlace, upload, whenRunning, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import type { ReplicaEntry } from "../lib/config";
import { remoteStep, type HostShell } from "../lib/remote";
import { renderAlertRules, renderPrometheusConfig, renderTargetsFiles, type MonitoredHost } from "../templates/prometheus";
import { grafanaEnv, renderGrafanaDashboardProvider, renderGrafanaDatasources, renderReplicationDashboard } from "../templates/grafana";

/** uid of `grafana` in the Grafana image. */
const GRAFANA_UID = 472;

export interface MonitoringArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  shell: HostShell;
  images: { prometheus: string; grafana: string };
  networkMode: pulumi.Input<string>;
  ports: { prometheus: number; grafana: number; app: number; nodeExporter: number; postgresExporter: number; redisExporter: number };
  /** Every host (main and each replica) with its private address: exporters are scraped there. */
  hosts: MonitoredHost[];
  /** The replicas and their slots, for the replication alerts. */
  replicas: ReplicaEntry[];
  grafanaAdminPassword: pulumi.Input<string>;
  deleteDataOnDestroy: boolean;
  timeoutSeconds: number;
}

/**
 * Prometheus and Grafana on the main host, both reachable on loopback only.
 * Scrape targets are files generated from the replica list that Prometheus
 * re-reads by itself; alert rules cover replication lag (from LSNs), replicas
 * and slots, disks and certificates. Grafana has a provisioned datasource and
 * replication dashboard, a generated admin password, no sign-up and no
 * anonymous access.
 */
export class Monitoring extends pulumi.ComponentResource {
  public readonly targets: Record<string, string>;
  public readonly rules: string;

  constructor(name: string, args: MonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:Monitoring", name, {}, opts);
    const parent = { parent: this };

    const promDir = `${args.hostName}/prometheus`;
    const file = (label: string, path: string, content: string) =>
      hostFile(`${name}-${label}`, args.shell, { path: `${promDir}/${path}`, content, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds }, parent);
    this.targets = renderTargetsFiles({ hosts: args.hosts, ports: args.ports });
    // Target files are re-read by Prometheus as they change.
    const targetFiles = Object.entries(this.targets).map(([f, content]) => file(`targets-${f.replace(/\.json$/, "")}`, `targets/${f}`, content));

    const config = renderPrometheusConfig({
      ruleFiles: ["/etc/prometheus/rules/*.yml"],
      targetsDir: "/etc/prometheus/targets",
      selfTarget: `${LOOPBACK}:${args.ports.prometheus}`,
      selfLabels: { host: args.hostName, role: "main" },
    });
    // The main host's own slot exists on a promoted replica after a failover.
    this.rules = renderAlertRules({ replicas: args.replicas.map((r) => ({ name: r.name, slotName: r.slotName })), otherStandbys: [{ name: "main", slotName: replicaSlotName("main") }] });
    // The configuration and rules are files on the host too: a change is a
    // reload (SIGHUP), not a restart.
    const configFiles = [file("config", "prometheus.yml", config), file("rules", "rules/synaxic.yml", this.rules)];

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
        mounts: [{ type: "bind", source: hostPath(args.shell, promDir), target: "/etc/prometheus", readOnly: true }],
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

    const grafanaData = new docker.Volume(`${name}-grafana-data`, { name: `synaxic-${args.hostName}-grafana-data` }, { ...parent, retainOnDelete: !args.deleteDataOnDestroy });
    const grafanaImage = pullImage(`${name}-grafana-image`, args.images.grafana, parent);
    const passwordFile = "/run/synaxic/grafana-admin-password";
    new docker.Container(
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
          upload(passwordFile, pulumi.secret(args.grafanaAdminPassword), "0400", GRAFANA_UID),
          upload("/etc/grafana/provisioning/datasources/synaxic.yml", renderGrafanaDatasources({ prometheusUrl: `http://${LOOPBACK}:${args.ports.prometheus}` }), "0644", GRAFANA_UID),
          upload("/etc/grafana/provisioning/dashboards/synaxic.yml", renderGrafanaDashboardProvider({ path: "/var/lib/synaxic-dashboards" }), "0644", GRAFANA_UID),
          upload("/var/lib/synaxic-dashboards/replication.json", renderReplicationDashboard(), "0644", GRAFANA_UID),
        ],
      },
      { ...parent, ...replaceInPlace },
    );

    this.registerOutputs({ targets: this.targets });
  }
}
