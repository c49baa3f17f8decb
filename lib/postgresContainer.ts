/**
 * What PostgresMaster and PostgresReplica share: the container layout, the
 * pg_hba file on the host (re-read with a reload, no restart), and SQL run
 * inside the container over the local socket.
 */
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerIp } from "./addresses";
import { HOST_FILES_ROOT, baseContainer, digest, hostFile, pullImage, replaceInPlace, upload } from "./containers";
import { remoteStep, type Connection } from "./remote";
import { psqlScriptArgv } from "../templates/postgres-sql";

/** uid/gid of `postgres` in the official image. */
export const PG_UID = 999;
/** PostgreSQL listens on this port inside its container; the host port is configurable. */
export const PG_CONTAINER_PORT = 5432;

export const PG_PATHS = {
  dataDir: "/var/lib/postgresql/data",
  configFile: "/etc/synaxic/postgresql.conf",
  hbaDir: "/etc/synaxic/hba",
  hbaFile: "/etc/synaxic/hba/pg_hba.conf",
  certFile: "/etc/synaxic/tls/server.crt",
  keyFile: "/etc/synaxic/tls/server.key",
  caFile: "/etc/synaxic/tls/ca.crt",
  passfile: "/run/synaxic/pgpass",
  entrypoint: "/usr/local/bin/synaxic-entrypoint",
} as const;

/** The pg_hba role names; the app role is named after the database. */
export const PG_ROLES = { replication: "replicator", rewind: "synaxic_rewind", exporter: "synaxic_exporter" } as const;

export interface PostgresContainerArgs {
  name: string;
  containerName: string;
  hostName: string;
  connection: pulumi.Input<Connection>;
  sudo: boolean;
  image: string;
  networkName: pulumi.Input<string>;
  dockerSubnet: string;
  privateIp: pulumi.Input<string>;
  port: number;
  volumeName: pulumi.Input<string>;
  postgresqlConf: pulumi.Input<string>;
  pgHba: string;
  entrypoint: pulumi.Input<string>;
  tls: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; caPem: pulumi.Input<string> };
  /** Extra secret files (the replica's passfile). */
  secretFiles?: { path: string; content: pulumi.Input<string> }[];
  timeoutSeconds: number;
  dependsOn?: pulumi.Resource[];
}

/** psql inside the container as the postgres OS user (peer authentication on the local socket), SQL on stdin. */
export function psqlInContainer(containerName: string, sudo: boolean, database = "postgres"): string[] {
  return [...(sudo ? ["sudo", "-n"] : []), "docker", "exec", "-i", "-u", "postgres", containerName, ...psqlScriptArgv({ database })];
}

export function postgresContainer(args: PostgresContainerArgs, opts: pulumi.CustomResourceOptions): { container: docker.Container; hba: pulumi.Resource } {
  const hostHbaDir = `${HOST_FILES_ROOT}/${args.hostName}/postgres-hba`;
  const hba = hostFile(
    `${args.name}-hba`,
    {
      connection: args.connection,
      path: `${hostHbaDir}/pg_hba.conf`,
      content: args.pgHba,
      mode: "0640",
      owner: `0:${PG_UID}`,
      timeoutSeconds: args.timeoutSeconds,
      sudo: args.sudo,
    },
    opts,
  );
  const image = pullImage(`${args.name}-image`, args.image, opts);
  const container = new docker.Container(
    `${args.name}-container`,
    {
      name: args.containerName,
      image: image.imageId,
      hostname: args.containerName,
      entrypoints: [PG_PATHS.entrypoint],
      ...baseContainer(args.networkName, containerIp(args.dockerSubnet, "postgres"), ["postgres"]),
      // The private address only: never the public interface.
      ports: [{ internal: PG_CONTAINER_PORT, external: args.port, ip: args.privateIp }],
      volumes: [{ volumeName: args.volumeName, containerPath: PG_PATHS.dataDir }],
      mounts: [{ type: "bind", source: hostHbaDir, target: PG_PATHS.hbaDir, readOnly: true }],
      uploads: [
        { file: PG_PATHS.entrypoint, content: args.entrypoint, permissions: "0755", owner: "0", group: "0", executable: true },
        upload(PG_PATHS.configFile, args.postgresqlConf, "0644", PG_UID),
        upload(PG_PATHS.certFile, args.tls.certPem, "0644", PG_UID),
        upload(PG_PATHS.keyFile, pulumi.secret(args.tls.keyPem), "0600", PG_UID),
        upload(PG_PATHS.caFile, args.tls.caPem, "0644", PG_UID),
        ...(args.secretFiles ?? []).map((f) => upload(f.path, pulumi.secret(f.content), "0600", PG_UID)),
      ],
      shmSize: 256,
      stopSignal: "SIGINT",
      stopTimeout: 120,
      destroyGraceSeconds: 120,
      healthcheck: {
        tests: ["CMD-SHELL", "pg_isready -q -U postgres -d postgres"],
        interval: "10s",
        timeout: "5s",
        retries: 6,
        startPeriod: "30s",
      },
      // A replica's first start clones the primary: give it time.
      wait: true,
      waitTimeout: 1800,
    },
    { ...opts, ...replaceInPlace, dependsOn: [hba, ...(args.dependsOn ?? [])] },
  );
  // pg_hba changes (a replica added or removed) are re-read without a restart.
  remoteStep(
    `${args.name}-hba-reload`,
    {
      connection: args.connection,
      argv: psqlInContainer(args.containerName, args.sudo),
      stdin: "SELECT pg_catalog.pg_reload_conf();\n",
      triggers: [digest(args.pgHba), container.id],
      timeoutSeconds: args.timeoutSeconds,
    },
    { ...opts, dependsOn: [container, hba] },
  );
  return { container, hba };
}
