/**
 * Who may reach the app and the exporters, as lib/fleet.ts derives it: the
 * exporters only from the hosts running Prometheus; the main host's app
 * from the monitoring replica and, while the main host follows a promoted
 * replica, from that replica's balancer.
 */
import { describe, expect, it } from "vitest";
import { mainFirewallRules, replicaFirewallRules } from "../../lib/fleet";
import type { Ports } from "../../lib/config";

const PORTS: Ports = { http: 80, https: 443, postgres: 5432, redis: 6380, app: 8080, prometheus: 9090, grafana: 3000, nodeExporter: 9100, postgresExporter: 9187, redisExporter: 9121 };
const REPLICAS = [
  { name: "replica-1", privateIp: "10.10.0.3", slotName: "synaxic_replica_1" },
  { name: "replica-2", privateIp: "10.10.0.4", slotName: "synaxic_replica_2" },
];
const BASE = { adminCidrs: ["198.51.100.0/24"], replicas: REPLICAS, ports: PORTS, httpsCertificate: "" };
const PAIR = { port: 9093, pair: { replica: "replica-1", clusterPort: 9094 } };
const from = (rules: ReturnType<typeof mainFirewallRules>, port: number) => rules.filter((r) => r.port === port && r.protocol === "tcp").flatMap((r) => r.sources);

describe("mainFirewallRules", () => {
  it("the app and the exporters: no other host without a monitoring replica; only it with one", () => {
    for (const p of [PORTS.app, PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) {
      expect(from(mainFirewallRules(BASE), p), String(p)).toEqual([]);
      expect(from(mainFirewallRules({ ...BASE, alerting: PAIR }), p), String(p)).toEqual(["10.10.0.3/32"]);
    }
  });

  it("following a promoted replica: its balancer reaches the app, not the exporters", () => {
    const rules = mainFirewallRules({ ...BASE, followPrimary: "replica-2" });
    expect(from(rules, PORTS.app)).toEqual(["10.10.0.4/32"]);
    expect(rules.find((r) => r.port === PORTS.app)!.description).toBe("App from the balancer on replica-2 (deploy slot a)");
    // The app's second deploy slot, from the same host.
    expect(from(rules, PORTS.app + 1)).toEqual(["10.10.0.4/32"]);
    for (const p of [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) expect(from(rules, p), String(p)).toEqual([]);
    // With a monitoring replica besides: both, each once.
    expect(from(mainFirewallRules({ ...BASE, alerting: PAIR, followPrimary: "replica-2" }), PORTS.app).sort()).toEqual(["10.10.0.3/32", "10.10.0.4/32"]);
  });

  it("following the monitoring replica: one app rule (per deploy slot) for its Prometheus and balancer", () => {
    const rules = mainFirewallRules({ ...BASE, alerting: PAIR, followPrimary: "replica-1" }).filter((r) => r.port === PORTS.app);
    expect(rules).toEqual([{ description: "App from the Prometheus and balancer on replica-1 (deploy slot a)", port: PORTS.app, protocol: "tcp", sources: ["10.10.0.3/32"] }]);
  });

  it("a followPrimary outside the replicas is refused", () => {
    expect(() => mainFirewallRules({ ...BASE, followPrimary: "replica-9" })).toThrow(/followPrimary replica-9 is not among the replicas/);
  });
});

describe("replicaFirewallRules", () => {
  it("the exporters only from the Prometheus hosts: main, and the monitoring replica from another replica", () => {
    const p = { adminCidrs: [], mainIp: "10.10.0.2", peers: REPLICAS, ports: PORTS };
    const mon = { replica: "replica-1", alertmanagerPort: 9093, clusterPort: 9094 };
    for (const port of [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter]) {
      expect(from(replicaFirewallRules({ ...p, self: "replica-2" }), port)).toEqual(["10.10.0.2/32"]);
      expect(from(replicaFirewallRules({ ...p, self: "replica-2", monitoring: mon }), port)).toEqual(["10.10.0.2/32", "10.10.0.3/32"]);
      // The monitoring replica scrapes its own exporters locally.
      expect(from(replicaFirewallRules({ ...p, self: "replica-1", monitoring: mon }), port)).toEqual(["10.10.0.2/32"]);
    }
  });
});
