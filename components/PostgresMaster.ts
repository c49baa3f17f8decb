import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName } from "../lib/addresses";
import type { ReplicaEntry } from "../lib/config";
import { PG_PATHS, PG_ROLES, pgListenAddresses, postgresContainer, promoteStep, psqlInContainer, replicationSlot } from "../lib/postgresContainer";
import { remoteStep, type HostShell } from "../lib/remote";
import { renderPrimaryEntrypoint } from "../templates/postgres-entrypoint";
import { renderPostgresqlConf } from "../templates/postgres-conf";
import { renderPgHba } from "../templates/postgres-hba";
import { renderRolesSql } from "../templates/postgres-sql";

export interface PostgresPasswords {
  app: pulumi.Input<string>;
  replication: pulumi.Input<string>;
  rewind: pulumi.Input<string>;
  exporter: pulumi.Input<string>;
}

export interface PostgresMasterArgs {
  hostName: string;
  shell: HostShell;
  image: string;
  networkMode: pulumi.Input<string>;
  /** This host's private address: PostgreSQL listens there (other hosts) and on loopback (this host's app and exporter). */
  privateIp: string;
  port: number;
  databaseName: string;
  sizing: { memoryMiB: number; cpus: number; maxConnections: number };
  /** The same on every server of the fleet (a standby needs at least its primary's). */
  maxWalSenders: number;
  maxReplicationSlots: number;
  maxSlotWalKeepSizeMB: number;
  walKeepSizeMB: number;
  /** One slot, one pg_hba replication line and one rewind line per replica. */
  replicas: ReplicaEntry[];

  tls: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; caPem: pulumi.Input<string> };
  passwords: PostgresPasswords;
  /** The data volume (created by the stack, so that it outlives a switch between primary and replica). */
  volumeName: pulumi.Input<string>;
  /** Promote the standby running here first (taking the primary role back after following a promoted replica). */
  promoteFirst?: boolean;
  timeoutSeconds: number;
}

/**
 * The PostgreSQL primary on the main host: official image, data on a named
 * volume kept by `pulumi destroy` unless the operator says otherwise,
 * configuration sized from the host, TLS and SCRAM only, roles kept in step
 * with their passwords, and one physical replication slot per replica that
 * lives and dies with the replica's entry in the stack configuration.
 */
export class PostgresMaster extends pulumi.ComponentResource {
  public readonly containerName: string;
  public readonly address: pulumi.Output<string>;
  public readonly port: number;
  public readonly slotNames: Record<string, string>;
  public readonly pgHba: string;
  public readonly postgresqlConf: string;
  public readonly container: docker.Container;
  /** Ready for clients: roles exist with their current passwords. */
  public readonly ready: pulumi.Resource;

  constructor(name: string, args: PostgresMasterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:PostgresMaster", name, {}, opts);
    const parent = { parent: this };
    this.containerName = containerName(args.hostName, "postgres");
    this.address = pulumi.output(args.privateIp);
    this.port = args.port;
    this.slotNames = Object.fromEntries(args.replicas.map((r) => [r.name, r.slotName]));

    this.postgresqlConf = renderPostgresqlConf({
      role: "primary",
      name: args.hostName,
      dataDir: PG_PATHS.dataDir,
      hbaFile: PG_PATHS.hbaFile,
      listenAddresses: pgListenAddresses(args.privateIp),
      port: args.port,
      tune: args.sizing,
      tls: { certFile: PG_PATHS.certFile, keyFile: PG_PATHS.keyFile, caFile: PG_PATHS.caFile },
      maxWalSenders: args.maxWalSenders,
      maxReplicationSlots: args.maxReplicationSlots,
      maxSlotWalKeepSizeMB: args.maxSlotWalKeepSizeMB,
      walKeepSizeMB: args.walKeepSizeMB,
    });
    this.pgHba = renderPgHba({
      appDatabase: args.databaseName,
      appUser: args.databaseName,
      // The app and the exporter run on this host and connect over loopback.
      appAddresses: [LOOPBACK],
      replicationUser: PG_ROLES.replication,
      replicaAddresses: args.replicas.map((r) => r.privateIp),
      rewindUser: PG_ROLES.rewind,
      exporterUser: PG_ROLES.exporter,
      exporterAddresses: [LOOPBACK],
    });

    const dependsOn = args.promoteFirst
      ? [promoteStep(`${name}-promote`, args.shell, { containerName: this.containerName, port: args.port, timeoutSeconds: args.timeoutSeconds }, parent)]
      : [];

    const { container } = postgresContainer(
      {
        name,
        containerName: this.containerName,
        hostName: args.hostName,
        shell: args.shell,
        image: args.image,
        networkMode: args.networkMode,
        port: args.port,
        volumeName: args.volumeName,
        postgresqlConf: this.postgresqlConf,
        pgHba: this.pgHba,
        entrypoint: renderPrimaryEntrypoint({ dataDir: PG_PATHS.dataDir, configFile: PG_PATHS.configFile }),
        tls: args.tls,
        timeoutSeconds: args.timeoutSeconds,
        dependsOn,
      },
      parent,
    );
    this.container = container;

    // Roles and the app database: created, or their passwords updated,
    // whenever a password changes. The SQL holds SCRAM verifiers, never a
    // plain password, and travels on stdin.
    const rolesSql = pulumi.secret(
      pulumi.all([args.passwords.app, args.passwords.replication, args.passwords.rewind, args.passwords.exporter]).apply(([app, replication, rewind, exporter]) =>
        renderRolesSql({
          appDatabase: args.databaseName,
          app: { name: args.databaseName, password: app },
          replication: { name: PG_ROLES.replication, password: replication },
          rewind: { name: PG_ROLES.rewind, password: rewind },
          exporter: { name: PG_ROLES.exporter, password: exporter },
        }),
      ),
    );
    this.ready = remoteStep(
      `${name}-roles`,
      args.shell,
      {
        argv: psqlInContainer(this.containerName, args.port),
        stdin: rolesSql,
        triggers: [container.id],
        timeoutSeconds: args.timeoutSeconds,
        secretOutput: true,
      },
      { ...parent, dependsOn: [container] },
    );

    // One slot per replica: created when the replica is added (so the
    // primary keeps its WAL from then on), dropped when it is removed.
    for (const r of args.replicas) {
      replicationSlot(
        `${name}-slot-${r.name}`,
        args.shell,
        { containerName: this.containerName, port: args.port, slotName: r.slotName, timeoutSeconds: args.timeoutSeconds },
        { ...parent, dependsOn: [container] },
      );
    }

    this.registerOutputs({ containerName: this.containerName, address: this.address, port: this.port, slotNames: this.slotNames });
  }
}
