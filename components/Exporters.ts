import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName, nodeTextfileDir } from "../lib/addresses";
import { baseContainer, hostFile, hostPath, pullImage, replaceInPlace, upload, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import { PG_ROLES } from "../lib/postgresContainer";
import type { HostShell } from "../lib/remote";
import { renderPostgresExporterQueries } from "../templates/postgres-exporter";
import { EXPORTER_TLS_DIR, EXPORTER_WEB_FILES, redisExporterTlsEnv, renderExporterWebConfig } from "../templates/exporter-web";
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
  /** The exporters listen on this host's private address only; the firewall lets the Prometheus hosts in. */
  privateIp: string;
  ports: { nodeExporter: number; postgresExporter: number; redisExporter: number; postgres: number; redis: number };
  /**
   * The CAs each exporter trusts, one per service (components/Pki.ts):
   * postgres_exporter verifies PostgreSQL with the PostgreSQL CA,
   * redis_exporter Redis with the Redis CA, and all of them Prometheus'
   * client certificate with the metrics CA.
   */
  caPems: { postgres: pulumi.Input<string>; redis: pulumi.Input<string>; metrics: pulumi.Input<string> };
  passwords: { postgres: pulumi.Input<string>; redis: pulumi.Input<string> };
  /** The exporters' server certificate (the metrics CA, this host's private address as an IP SAN) and its key (secret). */
  tls: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string> };
  /** The user Prometheus scrapes as and the bcrypt hash of its password (secret); node_exporter and postgres_exporter check it. */
  scrapeAuth: { username: string; bcryptHash: pulumi.Input<string> };
  /** node_exporter textfile with the certificates' expiry times (rendered by the caller). */
  certExpiryTextfile: pulumi.Input<string>;
  timeoutSeconds: number;
}

/**
 * The metrics exporters every host runs: node (with a textfile of
 * certificate expiry times), PostgreSQL (with the fleet's replication
 * queries) and Redis. Credentials are files; the exporters connect over
 * verified TLS to the local servers. Each serves its metrics over TLS only,
 * to clients with a certificate from the metrics CA, and node_exporter and
 * postgres_exporter also ask for the scrape user's password
 * (templates/exporter-web.ts says what each version supports).
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

    // The same TLS files in every exporter, owned by its user; the key and
    // the web configuration (a password hash) are secrets.
    const webConfig = pulumi.secret(
      pulumi.output(args.scrapeAuth.bcryptHash).apply((bcryptHash) =>
        renderExporterWebConfig({
          certFile: EXPORTER_WEB_FILES.cert,
          keyFile: EXPORTER_WEB_FILES.key,
          clientCaFile: EXPORTER_WEB_FILES.clientCa,
          basicAuth: { username: args.scrapeAuth.username, bcryptHash },
        }),
      ),
    );
    const tlsUploads = (uid: number) => [
      upload(EXPORTER_WEB_FILES.cert, args.tls.certPem, "0444", uid),
      upload(EXPORTER_WEB_FILES.key, pulumi.secret(args.tls.keyPem), "0400", uid),
      upload(EXPORTER_WEB_FILES.clientCa, args.caPems.metrics, "0444", uid),
    ];
    const webUploads = (uid: number) => [...tlsUploads(uid), upload(EXPORTER_WEB_FILES.webConfig, webConfig, "0400", uid)];

    // node exporter: host network and host PID namespace, read-only root.
    const textfileDir = nodeTextfileDir(args.hostName);
    const textfile = hostFile(
      `${name}-cert-expiry`,
      args.shell,
      { path: `${textfileDir}/certificates.prom`, content: args.certExpiryTextfile, mode: "0644", owner: "0:0", timeoutSeconds: args.timeoutSeconds },
      parent,
    );
    // Its web files are files on the host, bind-mounted, not uploads: to
    // extract an upload, dockerd mounts the container's filesystem and
    // rbinds each of its bind mounts into it (moby daemon/containerfs_linux.go,
    // openContainerFS), here the host's whole root with every mount below
    // it, which on the engine tier's hosts failed with "no space left on
    // device" (a mount count limit). The binds at start are runc's, in the
    // container's own namespace, and work.
    const webDir = `${args.hostName}/node-exporter-web`;
    const webFiles = [
      { file: EXPORTER_WEB_FILES.cert, content: pulumi.output(args.tls.certPem), mode: "0444" },
      { file: EXPORTER_WEB_FILES.key, content: pulumi.secret(args.tls.keyPem), mode: "0400" },
      { file: EXPORTER_WEB_FILES.clientCa, content: pulumi.output(args.caPems.metrics), mode: "0444" },
      { file: EXPORTER_WEB_FILES.webConfig, content: webConfig, mode: "0400" },
    ].map((f) =>
      hostFile(
        `${name}-node-web-${f.file.split("/").pop()!.replace(/\./g, "-")}`,
        args.shell,
        { path: `${webDir}/${f.file.split("/").pop()!}`, content: f.content, mode: f.mode, owner: `${NOBODY}:${NOBODY}`, timeoutSeconds: args.timeoutSeconds },
        parent,
      ),
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
          `--web.config.file=${EXPORTER_WEB_FILES.webConfig}`,
          "--collector.textfile.directory=/textfile",
          "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($|/)",
        ],
        mounts: [
          { type: "bind", source: "/", target: "/host", readOnly: true, bindOptions: { propagation: "rslave" } },
          { type: "bind", source: hostPath(args.shell, textfileDir), target: "/textfile", readOnly: true },
          { type: "bind", source: hostPath(args.shell, webDir), target: EXPORTER_TLS_DIR, readOnly: true },
        ],
        labels: [{ label: "app", value: "synaxic" }],
      },
      { ...parent, ...replaceInPlace, dependsOn: [textfile, ...webFiles] },
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
        // The image's entrypoint is the exporter: these are its arguments.
        command: [`--web.config.file=${EXPORTER_WEB_FILES.webConfig}`],
        envs: [
          `PG_EXPORTER_WEB_LISTEN_ADDRESS=${this.targets.postgres}`,
          `DATA_SOURCE_URI=${LOOPBACK}:${args.ports.postgres}/postgres?sslmode=verify-full&sslrootcert=/etc/synaxic/ca.crt`,
          `DATA_SOURCE_USER=${PG_ROLES.exporter}`,
          "DATA_SOURCE_PASS_FILE=/run/synaxic/postgres-password",
          "PG_EXPORTER_EXTEND_QUERY_PATH=/etc/synaxic/queries.yaml",
        ],
        uploads: [
          upload("/etc/synaxic/queries.yaml", renderPostgresExporterQueries(), "0644", NOBODY),
          upload("/etc/synaxic/ca.crt", args.caPems.postgres, "0644", NOBODY),
          upload("/run/synaxic/postgres-password", pulumi.secret(args.passwords.postgres), "0400", NOBODY),
          ...webUploads(NOBODY),
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
          // TLS with a client certificate required (templates/exporter-web.ts).
          ...redisExporterTlsEnv({ certFile: EXPORTER_WEB_FILES.cert, keyFile: EXPORTER_WEB_FILES.key, clientCaFile: EXPORTER_WEB_FILES.clientCa }),
        ],
        uploads: [
          ...tlsUploads(REDIS_EXPORTER_UID),
          upload("/etc/synaxic/ca.crt", args.caPems.redis, "0644", REDIS_EXPORTER_UID),
          upload(
            "/run/synaxic/redis-passwords.json",
            pulumi.secret(pulumi.output(args.passwords.redis).apply((pw) => JSON.stringify(redisExporterPasswordMap(redisUri, REDIS_USER_NAMES.exporter, pw)))),
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

/**
 * The exporter's password file: one entry under the address alone, which
 * redis_exporter up to 1.68 looks up, and one under the address with the
 * user in it, which 1.69 and later look up when a user is set ("Support
 * usernames in password file", oliver006/redis_exporter#983:
 * lookupPasswordInPasswordMap in exporter/redis.go puts REDIS_USER into the
 * URI before the lookup). A newer exporter finding no entry connects without
 * a password and reports redis_up 0.
 */
export function redisExporterPasswordMap(redisUri: string, user: string, password: string): Record<string, string> {
  const withUser = redisUri.replace("://", `://${encodeURIComponent(user)}@`);
  return { [redisUri]: password, [withUser]: password };
}
