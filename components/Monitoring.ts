import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerIp, containerName } from "../lib/addresses";
import { HOST_FILES_ROOT, baseContainer, digest, hostFile, pullImage, replaceInPlace, upload } from "../lib/containers";
import type { ReplicaEntry } from "../lib/config";
import { remoteStep, type Connection } from "../lib/remote";
import { renderAlertRules, renderPrometheusConfig, renderTargetsFiles, type MonitoredHost } from "../templates/prometheus";
import { grafanaEnv, renderGrafanaDashboardProvider, renderGrafanaDatasources, renderReplicationDashboard } from "../templates/grafana";

/** uid of `grafana` in the Grafana image. */
const GRAFANA_UID = 472;

export interface MonitoringArgs {
  hostName: string;
  connection: pulumi.Input<Connection>;
  sudo: boolean;
  images: { prometheus: string; grafana: string };
  networkName: pulumi.Input<string>;
  dockerSubnet: string;
  ports: { prometheus: number; grafana: number; app: number; nodeExporter: number; postgresExporter: number; redisExporter: number };
  /** Every host (main and each replica) with its private address: exporters are scraped there. */
  hosts: MonitoredHost[];
  /** The replicas and their slots, for the replication alerts. */
  replicas: ReplicaEntry[];
  /** The main app is scraped over the Docker network; replica apps on their private address. */
  mainAppAddress: string;
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

    const promDir = `${HOST_FILES_ROOT}/${args.hostName}/prometheus`;
    const file = (label: string, path: string, content: string) =>
      hostFile(`${name}-${label}`, { connection: args.connection, path: `${promDir}/${path}`, content, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds, sudo: args.sudo }, parent);
    this.targets = renderTargetsFiles({ hosts: args.hosts, ports: args.ports });
    // The main app is reached over the Docker network, not its (unpublished) host port.
    const appFile = "synaxic-app.json";
    this.targets[appFile] = this.targets[appFile]!.replace(`"${args.hosts.find((h) => h.role === "main")!.address}:${args.ports.app}"`, JSON.stringify(args.mainAppAddress));
    // Target files are re-read by Prometheus as they change.
    const targetFiles = Object.entries(this.targets).map(([f, content]) => file(`targets-${f.replace(/\.json$/, "")}`, `targets/${f}`, content));

    const config = renderPrometheusConfig({
      ruleFiles: ["/etc/prometheus/rules/*.yml"],
      targetsDir: "/etc/prometheus/targets",
      selfTarget: "localhost:9090",
      selfLabels: { host: args.hostName, role: "main" },
    });
    this.rules = renderAlertRules({ replicas: args.replicas.map((r) => ({ name: r.name, slotName: r.slotName })) });
    // The configuration and rules are files on the host too: a change is a
    // reload (SIGHUP), not a restart.
    const configFiles = [file("config", "prometheus.yml", config), file("rules", "rules/synaxic.yml", this.rules)];

    const promData = new docker.Volume(`${name}-prometheus-data`, { name: `synaxic-${args.hostName}-prometheus-data` }, { ...parent, retainOnDelete: !args.deleteDataOnDestroy });
    const promImage = pullImage(`${name}-prometheus-image`, args.images.prometheus, parent);
    const prometheus = new docker.Container(
      `${name}-prometheus`,
      {
        name: containerName(args.hostName, "prometheus"),
        image: promImage.imageId,
        ...baseContainer(args.networkName, containerIp(args.dockerSubnet, "prometheus"), ["prometheus"]),
        command: [
          "--config.file=/etc/prometheus/prometheus.yml",
          "--storage.tsdb.path=/prometheus",
          "--storage.tsdb.retention.time=30d",
          "--web.enable-lifecycle",
        ],
        // Loopback only: reach it through an SSH tunnel.
        ports: [{ internal: 9090, external: args.ports.prometheus, ip: "127.0.0.1" }],
        volumes: [{ volumeName: promData.name, containerPath: "/prometheus" }],
        mounts: [{ type: "bind", source: promDir, target: "/etc/prometheus", readOnly: true }],
      },
      { ...parent, ...replaceInPlace, dependsOn: [...targetFiles, ...configFiles] },
    );
    remoteStep(
      `${name}-reload`,
      {
        connection: args.connection,
        argv: [...(args.sudo ? ["sudo", "-n"] : []), "docker", "kill", "--signal=HUP", containerName(args.hostName, "prometheus")],
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
        image: grafanaImage.imageId,
        ...baseContainer(args.networkName, containerIp(args.dockerSubnet, "grafana"), ["grafana"]),
        envs: grafanaEnv({ adminPasswordFile: passwordFile }),
        ports: [{ internal: 3000, external: args.ports.grafana, ip: "127.0.0.1" }],
        volumes: [{ volumeName: grafanaData.name, containerPath: "/var/lib/grafana" }],
        uploads: [
          upload(passwordFile, pulumi.secret(args.grafanaAdminPassword), "0400", GRAFANA_UID),
          upload("/etc/grafana/provisioning/datasources/synaxic.yml", renderGrafanaDatasources({ prometheusUrl: `http://${containerIp(args.dockerSubnet, "prometheus")}:9090` }), "0644", GRAFANA_UID),
          upload("/etc/grafana/provisioning/dashboards/synaxic.yml", renderGrafanaDashboardProvider({ path: "/var/lib/synaxic-dashboards" }), "0644", GRAFANA_UID),
          upload("/var/lib/synaxic-dashboards/replication.json", renderReplicationDashboard(), "0644", GRAFANA_UID),
        ],
      },
      { ...parent, ...replaceInPlace },
    );

    this.registerOutputs({ targets: this.targets });
  }
}
