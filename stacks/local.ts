/**
 * The whole topology on this machine's Docker engine: the main host and
 * every replica in the main stack's list, each as a LocalHost (an anchor
 * container holding the host's network namespace, on a Docker network of its
 * own and on a shared network standing for the private network). The same
 * components as on VPSs, with no special cases; replicas are wired to the
 * main host's outputs directly instead of through a StackReference.
 */
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { resolve } from "node:path";
import type { MainConfig, StackConfig } from "../lib/config";
import { LocalHost } from "../components/LocalHost";
import { StandinAppImage } from "../components/StandinAppImage";
import { standinAppSource } from "../lib/standinApp";
import { buildMain, checkPostgresMajorKept, checkRotationNotLowered, fleetFacts } from "./main";
import { buildReplica } from "./replica";
import { hostMemoryBudget } from "../lib/memory";

/** Where the local hosts' files live on this machine (bind-mounted into the containers). */
export function localFilesRoot(stack: string): string {
  return resolve(".state", "hosts", stack);
}

export async function localStack(config: MainConfig & StackConfig) {
  if (config.host.provider !== "local") throw new Error("localStack: hostProvider must be local");
  // No appImage of the stack's own: the stand-in app, built here from
  // standin-app/, runs on every host (its tag is the fleet's appImage).
  const standin = config.host.standinApp ? new StandinAppImage("standin-app", { source: standinAppSource(), timeoutSeconds: config.commandTimeoutSeconds }) : undefined;
  const cfg = standin ? { ...config, appImage: standin.tag, appImageId: standin.imageId } : config;
  const { cpus, memoryMiB } = cfg.host;
  // Each local host is sized as a VPS of memoryMiB: refused before anything is declared if that is too small.
  hostMemoryBudget("main", cfg.host);
  const engine = new docker.Provider("local-engine", {});
  const privateNet = new docker.Network(
    "private-network",
    {
      name: "synaxic-local-private",
      driver: "bridge",
      ipamConfigs: [{ subnet: cfg.privateNetworkCidr }],
      labels: [{ label: "app", value: "synaxic" }],
    },
    { provider: engine },
  );
  const filesRoot = localFilesRoot(pulumi.getStack());
  const localHost = (name: string, privateIp: string, publish?: { port: number; localPort: number }[]) =>
    new LocalHost(
      name,
      { hostName: name, privateIp, privateNetworkName: privateNet.name, filesRoot, cpus, memoryMiB, ...(publish ? { publish } : {}) },
      { dockerProvider: engine },
    );

  // The balancer is the one thing published on this machine: http://127.0.0.1:<httpPort + 8000>.
  const localHttpPort = cfg.ports.http + 8000;
  const main = localHost("main", cfg.privateIp, [{ port: cfg.ports.http, localPort: localHttpPort }]);
  await checkRotationNotLowered(cfg.passwordRotation);
  await checkPostgresMajorKept(cfg.images.postgres);
  // Every key is made here, replicas' included (their certificates as a
  // replica stack once read them from replicaTls): one stack holds every
  // host, so its state holds every key whichever resource makes it, and no
  // other stack reads its outputs. A replica's own HostKeys would move keys
  // between resources of the same state and add nothing.
  const built = buildMain(cfg, main, null, { requests: {}, legacy: cfg.replicas.map((r) => r.name) });

  const replicas = cfg.replicas.map((r) => {
    const host = localHost(r.name, r.privateIp);
    // This replica's certificates, as a replica stack reads them from replicaTls.
    const tls = pulumi.secret(built.outputs.replicaTls.apply((t) => t[r.name]!));
    return buildReplica(
      { ...cfg, hostName: r.name, privateIp: r.privateIp, promote: false, followPrimary: "", rejoin: false, reinitGeneration: 0 },
      fleetFacts(cfg, null),
      built.cas,
      r,
      built.credentials,
      tls,
      host,
      `${r.name}-`,
      // One stack holds the whole fleet: clone only once the primary has its roles and slots.
      [built.postgres],
    );
  });

  return {
    ...built.outputs,
    balancerUrl: `http://127.0.0.1:${localHttpPort}`,
    replicaHosts: replicas.map((r) => ({ name: r.replicaName, slot: r.slotName, postgresMode: r.postgresMode })),
  };
}
