import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerName } from "../lib/addresses";
import type { ReplicaEntry } from "../lib/config";
import {
  PG_PATHS,
  PG_ROLES,
  PRIMARY_READY,
  bootstrapPermitStep,
  postgresContainer,
  serverConf,
  serverHba,
  type PostgresServerArgs,
  promoteStep,
  psqlInContainer,
  replicationSlot,
} from "../lib/postgresContainer";
import { remoteStep } from "../lib/remote";
import { renderBootstrapPermit, renderPrimaryEntrypoint } from "../templates/postgres-entrypoint";
import { renderPostgresqlConf } from "../templates/postgres-conf";
import { renderRolesSql } from "../templates/postgres-sql";
import { restoreCommand } from "../lib/backup";
import type { BackupRestore } from "../lib/config";

export interface PostgresPasswords {
  app: pulumi.Input<string>;
  replication: pulumi.Input<string>;
  rewind: pulumi.Input<string>;
  exporter: pulumi.Input<string>;
}

export interface PostgresMasterArgs extends PostgresServerArgs {
  /** One slot, one pg_hba replication line and one rewind line per replica. */
  replicas: ReplicaEntry[];
  /** Where a former primary rewinds from (under a control stack: the fenced hosts); every replica when absent. */
  rewindAddresses?: string[];
  passwords: PostgresPasswords;
  /** The data volume (created by the stack, so that it outlives a switch between primary and replica). */
  volumeName: pulumi.Input<string>;
  /** Promote the standby running here first (taking the primary role back after following a promoted replica). */
  promoteFirst?: boolean;
  /**
   * The stack's bootstrap generation (default 0). The first deployment, and
   * every change of this number, writes a one-shot permit that lets the
   * primary initialise an empty data directory once; otherwise an empty data
   * directory is a lost cluster and the primary refuses to start.
   */
  bootstrapGeneration?: number;
  /** Restore from the backup repository into the (fresh) data volume, with this restore's permit (backupRestore). */
  restore?: BackupRestore;
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

    this.postgresqlConf = renderPostgresqlConf({ role: "primary", ...serverConf(args) });
    this.pgHba = serverHba(args.databaseName, args.replicas.map((r) => r.privateIp), args.rewindAddresses);

    const generation = args.bootstrapGeneration ?? 0;
    if (!Number.isInteger(generation) || generation < 0) throw new Error(`PostgresMaster: bootstrapGeneration must be a non-negative integer, got ${generation}`);

    const dependsOn: pulumi.Resource[] = args.promoteFirst
      ? [promoteStep(`${name}-promote`, args.shell, { containerName: this.containerName, port: args.port, timeoutSeconds: args.timeoutSeconds }, parent)]
      : [];

    // The one-shot permit to initialise an empty data directory, written
    // before the container is created (first deployment, or a new
    // bootstrapGeneration) and never by an update. The generation is part of
    // the entrypoint too, so a new one also re-creates the container, and
    // with it the roles of the new cluster.
    const bootstrapDir = `${args.hostName}/postgres-bootstrap`;
    dependsOn.push(
      bootstrapPermitStep(
        `${name}-bootstrap-permit`,
        args.shell,
        {
          dir: bootstrapDir,
          permit: renderBootstrapPermit({ cluster: args.hostName, generation, dataDir: PG_PATHS.dataDir, ...(args.restore ? { restore: args.restore.id } : {}) }),
          generation,
          ...(args.restore ? { restore: args.restore.id } : {}),
          timeoutSeconds: args.timeoutSeconds,
        },
        parent,
      ),
    );

    const { container, ready } = postgresContainer(
      args,
      {
        name,
        containerName: this.containerName,
        volumeName: args.volumeName,
        postgresqlConf: this.postgresqlConf,
        pgHba: this.pgHba,
        entrypoint: renderPrimaryEntrypoint({
          dataDir: PG_PATHS.dataDir,
          configFile: PG_PATHS.configFile,
          bootstrap: { permitFile: PG_PATHS.bootstrapPermit, cluster: args.hostName, generation },
          ...(args.restore ? { restore: { id: args.restore.id, target: args.restore.target, argv: restoreCommand(args.restore.target, PG_PATHS.dataDir) } } : {}),
        }),
        bootstrapDir,
        dependsOn,
        ready: PRIMARY_READY,
        startTimeoutSeconds: args.timeoutSeconds,
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
      { ...parent, dependsOn: [ready] },
    );

    // One slot per replica: created when the replica is added (so the
    // primary keeps its WAL from then on), dropped when it is removed.
    for (const r of args.replicas) {
      replicationSlot(
        `${name}-slot-${r.name}`,
        args.shell,
        { containerName: this.containerName, port: args.port, slotName: r.slotName, timeoutSeconds: args.timeoutSeconds },
        { ...parent, dependsOn: [ready] },
      );
    }

    this.registerOutputs({ containerName: this.containerName, address: this.address, port: this.port, slotNames: this.slotNames });
  }
}
