import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName, nodeTextfileDir } from "../lib/addresses";
import { baseContainer, hostFile, hostPath, pullImage, replaceInPlace, upload, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import { PG_ROLES } from "../lib/postgresContainer";
import type { HostShell } from "../lib/remote";
import { renderPostgresExporterQueries } from "../templates/postgres-exporter";
import { REDIS_USER_NAMES } from "./RedisPair";

/** uid of the exporters' image users: postgres-exporter and node-exporter run as nobody, redis_exporter as 59000. */
const NOBODY = 65534;
const REDIS_EXPORTER_UID = 59000;

export interface ExportersArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  shell: HostShell;
  images: { nodeExporter: string; postgresExporter: string; redisExporter: string };
  networkMode: pulumi.Input<string>;
  /** The exporters listen on this host's private address only; the firewall lets the main host in. */
  privateIp: string;
  ports: { nodeExporter: number; postgresExporter: number; redisExporter: number; postgres: number; redis: number };
  caPem: pulumi.Input<string>;
  passwords: { postgres: pulumi.Input<string>; redis: pulumi.Input<string> };
  /** node_exporter textfile with the certificates' expiry times (rendered by the caller). */
  certExpiryTextfile: pulumi.Input<string>;
  timeoutSeconds: number;
}

/**
 * The metrics exporters every host runs: node (with a textfile of
 * certificate expiry times), PostgreSQL (with the fleet's replication
 * queries) and Redis. Credentials are files; the exporters connect over
 * verified TLS to the local servers.
 */
export class Exporters extends pulumi.ComponentResource {
  public readonly targets: { node: string; postgres: string; redis: string };

  constructor(name: string, args: ExportersArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:Exporters", name, {}, opts);
    const parent = { parent: this };
    const ip = args.privateIp;
    this.targets = {
      node: `${ip}:${args.ports.nodeExporter}`,
      postgres: `${ip}:${args.ports.postgresExporter}`,
      redis: `${ip}:${args.ports.redisExporter}`,
    };

    // node exporter: host network and host PID namespace, read-only root.
    const textfileDir = nodeTextfileDir(args.hostName);
    const textfile = hostFile(
      `${name}-cert-expiry`,
      args.shell,
      { path: `${textfileDir}/certificates.prom`, content: args.certExpiryTextfile, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds },
      parent,
    );
    const nodeImage = pullImage(`${name}-node-image`, args.images.nodeExporter, parent);
    new docker.Container(
      `${name}-node`,
      {
        name: containerName(args.hostName, "node-exporter"),
        ...memoryLimit(args.memory, "nodeExporter"),
        ...stopGrace(STOP_GRACE.exporter),
        image: nodeImage.imageId,
        restart: "unless-stopped",
        mustRun: true,
        networkMode: args.networkMode,
        pidMode: "host",
        user: `${NOBODY}:${NOBODY}`,
        command: [
          "--path.rootfs=/host",
          `--web.listen-address=${this.targets.node}`,
          "--collector.textfile.directory=/textfile",
          "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($|/)",
        ],
        mounts: [
          { type: "bind", source: "/", target: "/host", readOnly: true, bindOptions: { propagation: "rslave" } },
          { type: "bind", source: hostPath(args.shell, textfileDir), target: "/textfile", readOnly: true },
        ],
        labels: [{ label: "app", value: "synaxic" }],
      },
      { ...parent, ...replaceInPlace, dependsOn: [textfile] },
    );

    const pgImage = pullImage(`${name}-postgres-image`, args.images.postgresExporter, parent);
    new docker.Container(
      `${name}-postgres`,
      {
        name: containerName(args.hostName, "postgres-exporter"),
        ...memoryLimit(args.memory, "postgresExporter"),
        ...stopGrace(STOP_GRACE.exporter),
        image: pgImage.imageId,
        ...baseContainer(args.networkMode),
        envs: [
          `PG_EXPORTER_WEB_LISTEN_ADDRESS=${this.targets.postgres}`,
          `DATA_SOURCE_URI=${LOOPBACK}:${args.ports.postgres}/postgres?sslmode=verify-full&sslrootcert=/etc/synaxic/ca.crt`,
          `DATA_SOURCE_USER=${PG_ROLES.exporter}`,
          "DATA_SOURCE_PASS_FILE=/run/synaxic/postgres-password",
          "PG_EXPORTER_EXTEND_QUERY_PATH=/etc/synaxic/queries.yaml",
        ],
        uploads: [
          upload("/etc/synaxic/queries.yaml", renderPostgresExporterQueries(), "0644", NOBODY),
          upload("/etc/synaxic/ca.crt", args.caPem, "0644", NOBODY),
          upload("/run/synaxic/postgres-password", pulumi.secret(args.passwords.postgres), "0400", NOBODY),
        ],
      },
      { ...parent, ...replaceInPlace },
    );

    const redisImage = pullImage(`${name}-redis-image`, args.images.redisExporter, parent);
    const redisUri = `rediss://${LOOPBACK}:${args.ports.redis}`;
    new docker.Container(
      `${name}-redis`,
      {
        name: containerName(args.hostName, "redis-exporter"),
        ...memoryLimit(args.memory, "redisExporter"),
        ...stopGrace(STOP_GRACE.exporter),
        image: redisImage.imageId,
        ...baseContainer(args.networkMode),
        envs: [
          `REDIS_EXPORTER_WEB_LISTEN_ADDRESS=${this.targets.redis}`,
          `REDIS_ADDR=${redisUri}`,
          `REDIS_USER=${REDIS_USER_NAMES.exporter}`,
          "REDIS_PASSWORD_FILE=/run/synaxic/redis-passwords.json",
          "REDIS_EXPORTER_TLS_CA_CERT_FILE=/etc/synaxic/ca.crt",
          // CONFIG GET would show masterauth on replicas; the exporter user may not run it.
          "REDIS_EXPORTER_CONFIG_COMMAND=-",
        ],
        uploads: [
          upload("/etc/synaxic/ca.crt", args.caPem, "0644", REDIS_EXPORTER_UID),
          upload(
            "/run/synaxic/redis-passwords.json",
            pulumi.secret(pulumi.output(args.passwords.redis).apply((pw) => JSON.stringify({ [redisUri]: pw }))),
            "0400",
            REDIS_EXPORTER_UID,
          ),
        ],
      },
      { ...parent, ...replaceInPlace },
    );

    this.registerOutputs({ targets: this.targets });
  }
}
