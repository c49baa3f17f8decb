/**
 * Names on each host. Every service container shares its host's network
 * namespace (Docker's host network on a VPS; one anchor container per host
 * on a single Docker engine), so services bind to the host's private
 * address or loopback exactly as processes on the VPS would, and address
 * rules (pg_hba, firewall) see real source addresses.
 */

/** The container name of a service on a host: unique on one Docker engine even when several hosts share it. */
export function containerName(hostName: string, service: string): string {
  return `synaxic-${hostName}-${service}`;
}

/** Loopback: where a host's own services reach each other. */
export const LOOPBACK = "127.0.0.1";

/** The node exporter's textfile directory on a host, below the host's files root: every textfile collector input goes there. */
export function nodeTextfileDir(hostName: string): string {
  return `${hostName}/node-exporter`;
}
