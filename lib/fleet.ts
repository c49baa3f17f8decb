/**
 * Fleet-wide facts derived from configuration: who may reach which port,
 * and which names each host's certificates must carry. Pure functions.
 */
import { containerName } from "./addresses";
import { PGBACKREST_SERVER_PORT } from "./backup";
import type { AlertingConfig, MainConfig, Ports, ReplicaEntry } from "./config";
import type { MonitoredHost } from "../templates/prometheus";
import type { FirewallRule } from "../components/Host";
import type { PkiHost } from "../components/Pki";
import type { HostFirewallRule } from "../templates/firewall";
import { APP_SLOTS, appSlotPort } from "../templates/app";

const WORLD = ["0.0.0.0/0", "::/0"];

function ssh(adminCidrs: string[]): FirewallRule[] {
  return adminCidrs.length ? [{ description: "SSH from the operators", port: "22", protocol: "tcp", sources: adminCidrs }] : [];
}

/** Every host Prometheus scrapes, on both monitoring hosts alike: the main host and each replica at its private address. */
export function monitoredHosts(mainIp: string, replicas: readonly ReplicaEntry[]): MonitoredHost[] {
  return [{ name: "main", role: "main", address: mainIp }, ...replicas.map((r) => ({ name: r.name, role: "replica" as const, address: r.privateIp }))];
}

/** The app's two deploy-slot ports (templates/app.ts, appSlotPort), from the same sources. */
function appRules(description: string, appPort: number, sources: string[]): FirewallRule[] {
  return APP_SLOTS.map((slot) => ({ description: `${description} (deploy slot ${slot})`, port: appSlotPort(appPort, slot), protocol: "tcp" as const, sources }));
}

/** What the two monitoring hosts open to each other: Alertmanager's API (the other Prometheus sends there) and its gossip, TCP and UDP. */
function alertmanagerPeerRules(peer: { name: string; privateIp: string }, alertmanagerPort: number, clusterPort: number): FirewallRule[] {
  const from = [`${peer.privateIp}/32`];
  return [
    { description: `Alertmanager from the Prometheus on ${peer.name}`, port: alertmanagerPort, protocol: "tcp", sources: from },
    // Gossip is plain text in Alertmanager 0.25 (mutual TLS only behind the experimental --cluster.tls-config): the peer alone reaches it.
    { description: `Alertmanager gossip (TCP) from ${peer.name}`, port: clusterPort, protocol: "tcp", sources: from },
    { description: `Alertmanager gossip (UDP) from ${peer.name}`, port: clusterPort, protocol: "udp", sources: from },
  ];
}

/**
 * The main host's cloud firewall: the balancer's ports to the world, SSH to
 * the operators, PostgreSQL and Redis to each replica only. Prometheus and
 * Grafana are bound to loopback and have no rule at all. With a monitoring
 * replica: its Prometheus scrapes this host's app and exporters, and the two
 * Alertmanagers reach each other. Following a promoted replica
 * (followPrimary): that replica's balancer reaches this host's app.
 */
export function mainFirewallRules(
  cfg: Pick<MainConfig, "adminCidrs" | "replicas" | "ports" | "httpsCertificate"> & { alerting?: Pick<AlertingConfig, "port" | "pair">; backup?: unknown; followPrimary?: string },
): FirewallRule[] {
  const rules: FirewallRule[] = [
    ...ssh(cfg.adminCidrs),
    { description: "HTTP (balancer)", port: cfg.ports.http, protocol: "tcp", sources: WORLD },
  ];
  if (cfg.httpsCertificate) rules.push({ description: "HTTPS (balancer)", port: cfg.ports.https, protocol: "tcp", sources: WORLD });
  for (const r of cfg.replicas) {
    rules.push(
      { description: `PostgreSQL from ${r.name}`, port: cfg.ports.postgres, protocol: "tcp", sources: [`${r.privateIp}/32`] },
      { description: `Redis from ${r.name}`, port: cfg.ports.redis, protocol: "tcp", sources: [`${r.privateIp}/32`] },
      // A standby taking a backup reaches the primary's pgBackRest TLS server (lib/backup.ts).
      ...(cfg.backup ? [{ description: `pgBackRest from ${r.name}`, port: PGBACKREST_SERVER_PORT, protocol: "tcp" as const, sources: [`${r.privateIp}/32`] }] : []),
    );
  }
  // Following a promoted replica: its balancer sends reads to this host's app.
  const followed = cfg.followPrimary ? cfg.replicas.find((r) => r.name === cfg.followPrimary) : undefined;
  if (cfg.followPrimary && !followed) throw new Error(`mainFirewallRules: followPrimary ${cfg.followPrimary} is not among the replicas`);
  const pair = cfg.alerting?.pair;
  if (followed && followed.name !== pair?.replica) {
    rules.push(...appRules(`App from the balancer on ${followed.name}`, cfg.ports.app, [`${followed.privateIp}/32`]));
  }
  if (pair) {
    const mon = cfg.replicas.find((r) => r.name === pair.replica);
    if (!mon) throw new Error(`mainFirewallRules: monitoringReplica ${pair.replica} is not among the replicas`);
    const from = [`${mon.privateIp}/32`];
    rules.push(
      ...appRules(followed === mon ? `App from the Prometheus and balancer on ${mon.name}` : `App from the Prometheus on ${mon.name}`, cfg.ports.app, from),
      { description: `Node exporter from the Prometheus on ${mon.name}`, port: cfg.ports.nodeExporter, protocol: "tcp", sources: from },
      { description: `PostgreSQL exporter from the Prometheus on ${mon.name}`, port: cfg.ports.postgresExporter, protocol: "tcp", sources: from },
      { description: `Redis exporter from the Prometheus on ${mon.name}`, port: cfg.ports.redisExporter, protocol: "tcp", sources: from },
      ...alertmanagerPeerRules(mon, cfg.alerting!.port, pair.clusterPort),
    );
  }
  return rules;
}

/**
 * A replica host's cloud firewall: SSH to the operators; its app and
 * exporters to the main host (balancer, Prometheus) and to the monitoring
 * replica's Prometheus; PostgreSQL and Redis to the other fleet members (they
 * follow this host once it is promoted). On the monitoring replica itself:
 * its Alertmanager's API and gossip to the main host only.
 */
export function replicaFirewallRules(p: {
  adminCidrs: string[];
  mainIp: string;
  peers: ReplicaEntry[];
  self: string;
  ports: Ports;
  balancer?: boolean;
  https?: boolean;
  /** With backups on: a standby taking a backup reaches this host's pgBackRest TLS server once it is promoted. */
  backup?: boolean;
  /** The fleet's monitoring replica, when there is one (the main stack's monitoringReplica). */
  monitoring?: { replica: string; alertmanagerPort: number; clusterPort: number } | null;
}): FirewallRule[] {
  const mon = p.monitoring ? p.peers.find((r) => r.name === p.monitoring!.replica) : undefined;
  if (p.monitoring && !mon) throw new Error(`replicaFirewallRules: the monitoring replica ${p.monitoring.replica} is not among the replicas`);
  // The exporters: to every Prometheus, main's and (from another replica) the monitoring replica's.
  const prometheus = [p.mainIp, ...(mon && mon.name !== p.self ? [mon.privateIp] : [])].map((ip) => `${ip}/32`);
  const others = [p.mainIp, ...p.peers.filter((r) => r.name !== p.self).map((r) => r.privateIp)].map((ip) => `${ip}/32`);
  return [
    ...ssh(p.adminCidrs),
    // A promoted replica runs the balancer: its HTTP port is public then.
    ...(p.balancer ? [{ description: "HTTP (balancer)", port: p.ports.http, protocol: "tcp" as const, sources: WORLD }] : []),
    ...(p.balancer && p.https ? [{ description: "HTTPS (balancer)", port: p.ports.https, protocol: "tcp" as const, sources: WORLD }] : []),
    // The balancer runs on the main host, or on a promoted replica after a failover.
    ...appRules("App from the balancer", p.ports.app, others),
    { description: "Node exporter from Prometheus", port: p.ports.nodeExporter, protocol: "tcp", sources: prometheus },
    { description: "PostgreSQL exporter from Prometheus", port: p.ports.postgresExporter, protocol: "tcp", sources: prometheus },
    { description: "Redis exporter from Prometheus", port: p.ports.redisExporter, protocol: "tcp", sources: prometheus },
    { description: "PostgreSQL from the fleet", port: p.ports.postgres, protocol: "tcp", sources: others },
    { description: "Redis from the fleet", port: p.ports.redis, protocol: "tcp", sources: others },
    // Once promoted, a standby taking a backup reaches this host's pgBackRest TLS server.
    ...(p.backup ? [{ description: "pgBackRest from the fleet", port: PGBACKREST_SERVER_PORT, protocol: "tcp" as const, sources: others }] : []),
    ...(mon && mon.name === p.self ? alertmanagerPeerRules({ name: "main", privateIp: p.mainIp }, p.monitoring!.alertmanagerPort, p.monitoring!.clusterPort) : []),
  ];
}

/**
 * Names and addresses clients use for a host's PostgreSQL and Redis: its
 * private address (other hosts) and, added by Pki, loopback and localhost
 * (its own app and exporters).
 */
export function pkiHost(hostName: string, privateIp: string): PkiHost {
  return {
    hostName,
    privateIp,
    extraNames: { postgres: [containerName(hostName, "postgres")], redis: [containerName(hostName, "redis")] },
  };
}

/**
 * The host firewall's rules (nftables, on every VPS): the cloud firewall's
 * rules, with SSH on the host's own port. Hetzner's cloud firewall does not
 * filter the private network, and existing hosts have no cloud firewall, so
 * these are what keeps each private port to the peers that need it. Without
 * adminCidrs (allowed on existing hosts only) SSH stays open to any source.
 */
export function hostFirewallRules(rules: FirewallRule[], sshPort: number): HostFirewallRule[] {
  const out = rules.map((r) => ({ description: r.description, port: r.port === "22" ? sshPort : r.port, protocol: r.protocol, sources: r.sources }));
  if (!rules.some((r) => r.port === "22")) out.unshift({ description: "SSH (no adminCidrs: any source)", port: sshPort, protocol: "tcp", sources: WORLD });
  return out;
}
