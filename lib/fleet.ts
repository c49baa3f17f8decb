/**
 * Fleet-wide facts derived from configuration: who may reach which port,
 * and which names each host's certificates must carry. Pure functions.
 */
import { containerName } from "./addresses";
import { PGBACKREST_SERVER_PORT } from "./backup";
import type { MainConfig, Ports, ReplicaEntry } from "./config";
import type { FirewallRule } from "../components/Host";
import type { PkiHost } from "../components/Pki";
import type { HostFirewallRule } from "../templates/firewall";

const WORLD = ["0.0.0.0/0", "::/0"];

function ssh(adminCidrs: string[]): FirewallRule[] {
  return adminCidrs.length ? [{ description: "SSH from the operators", port: "22", protocol: "tcp", sources: adminCidrs }] : [];
}

/**
 * The main host's cloud firewall: the balancer's ports to the world, SSH to
 * the operators, PostgreSQL and Redis to each replica only. Prometheus and
 * Grafana are bound to loopback and have no rule at all.
 */
export function mainFirewallRules(cfg: Pick<MainConfig, "adminCidrs" | "replicas" | "ports" | "httpsCertificate"> & { backup?: unknown }): FirewallRule[] {
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
  return rules;
}

/**
 * A replica host's cloud firewall: SSH to the operators; its app and
 * exporters to the main host (balancer, Prometheus); PostgreSQL and Redis to
 * the other fleet members (they follow this host once it is promoted).
 */
export function replicaFirewallRules(p: { adminCidrs: string[]; mainIp: string; peers: ReplicaEntry[]; self: string; ports: Ports; balancer?: boolean; https?: boolean; backup?: boolean }): FirewallRule[] {
  const main = [`${p.mainIp}/32`];
  const others = [p.mainIp, ...p.peers.filter((r) => r.name !== p.self).map((r) => r.privateIp)].map((ip) => `${ip}/32`);
  return [
    ...ssh(p.adminCidrs),
    // A promoted replica runs the balancer: its HTTP port is public then.
    ...(p.balancer ? [{ description: "HTTP (balancer)", port: p.ports.http, protocol: "tcp" as const, sources: WORLD }] : []),
    ...(p.balancer && p.https ? [{ description: "HTTPS (balancer)", port: p.ports.https, protocol: "tcp" as const, sources: WORLD }] : []),
    // The balancer runs on the main host, or on a promoted replica after a failover.
    { description: "App from the balancer", port: p.ports.app, protocol: "tcp", sources: others },
    { description: "Node exporter from Prometheus", port: p.ports.nodeExporter, protocol: "tcp", sources: main },
    { description: "PostgreSQL exporter from Prometheus", port: p.ports.postgresExporter, protocol: "tcp", sources: main },
    { description: "Redis exporter from Prometheus", port: p.ports.redisExporter, protocol: "tcp", sources: main },
    { description: "PostgreSQL from the fleet", port: p.ports.postgres, protocol: "tcp", sources: others },
    { description: "Redis from the fleet", port: p.ports.redis, protocol: "tcp", sources: others },
    // Once promoted, a standby taking a backup reaches this host's pgBackRest TLS server.
    ...(p.backup ? [{ description: "pgBackRest from the fleet", port: PGBACKREST_SERVER_PORT, protocol: "tcp" as const, sources: others }] : []),
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
