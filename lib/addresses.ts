/**
 * Fixed addresses of the services on each host's Docker network, so that
 * pg_hba and Redis rules can name the app and the exporters by address.
 */
import { isIPv4 } from "node:net";

export const SERVICE_SLOTS = {
  postgres: 10,
  redis: 11,
  app: 20,
  nginx: 30,
  prometheus: 40,
  grafana: 41,
  nodeExporter: 50,
  postgresExporter: 51,
  redisExporter: 52,
} as const;

export type Service = keyof typeof SERVICE_SLOTS;

/** The address of `service` inside a Docker network such as 172.30.88.0/24. */
export function containerIp(subnet: string, service: Service): string {
  const [net, bits] = subnet.split("/");
  if (!net || !isIPv4(net) || !bits) throw new Error(`containerIp: ${subnet} is not an IPv4 CIDR`);
  const base = net.split(".").map(Number);
  const host = SERVICE_SLOTS[service];
  if (Number(bits) > 28 && host >= 2 ** (32 - Number(bits))) {
    throw new Error(`containerIp: ${subnet} is too small for ${service}`);
  }
  const n = ((base[0]! << 24) | (base[1]! << 16) | (base[2]! << 8) | base[3]!) + host;
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** Docker's gateway address for the subnet (.1). */
export function gatewayIp(subnet: string): string {
  const [net] = subnet.split("/");
  const o = net!.split(".").map(Number);
  return [o[0], o[1], o[2], o[3]! + 1].join(".");
}

/** The container name of a service on a host: unique on one Docker engine even when several hosts share it. */
export function containerName(hostName: string, service: string): string {
  return `synaxic-${hostName}-${service}`;
}
