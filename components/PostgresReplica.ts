import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerName } from "../lib/addresses";
import { PG_PATHS, PG_ROLES, PRIMARY_READY, STANDBY_READY, postgresContainer, replicaPassfile, serverConf, serverHba, type PostgresServerArgs, promoteStep, replicationSlot } from "../lib/postgresContainer";
import { remoteStep } from "../lib/remote";
import { renderReplicaEntrypoint } from "../templates/postgres-entrypoint";
import { renderPostgresqlConf } from "../templates/postgres-conf";

export interface PostgresReplicaArgs extends PostgresServerArgs {
  /** The primary's sizing: settings a standby must match (max_connections, max_worker_processes) take the higher of the two. */
  primaryTune: { memoryMiB: number; cpus: number; maxConnections: number };
  /** The primary this replica streams from (its private address and port). */
  primary: { host: string; port: number };
  slotName: string;
  /** What must exist before the server first starts (the primary's roles and slots, when both are in one stack). */
  after?: pulumi.Resource[];
  /** Every other fleet member's private address: allowed to replicate from (and rewind against) this server once it is promoted. */
  peerAddresses: string[];
  /** Where a former primary rewinds from once this server is promoted (under a control stack: the fenced hosts); every peer when absent. */
  rewindAddresses?: string[];
  passwords: { replication: pulumi.Input<string>; rewind: pulumi.Input<string> };
  /** Promote this replica to primary. */
  promote: boolean;
  /** Once promoted, a slot for each server that follows it (the other replicas, the old primary). */
  followerSlots: { name: string; slotName: string }[];
  /** Rewind a diverged primary's data onto the primary's timeline (pg_rewind) instead of refusing it. */
  rejoin: boolean;
  /** Changing it wipes this replica's data and clones the primary again. */
  reinitGeneration: number;
  /** The primary's last restore from the backup repository (0: never): a new one is a new volume, cloned from the restored primary. */
  restoreId?: number;
  /** An existing data volume to run on (the main host's, when it follows a promoted replica) instead of this component's own. */
  volumeName?: pulumi.Input<string>;
  deleteDataOnDestroy: boolean;
}


/**
 * A PostgreSQL streaming replica: cloned with pg_basebackup into an empty
 * volume over verified TLS through its own slot, never re-cloned on later
 * runs or restarts, read-only, following the primary's timeline. Promotion
 * and re-initialisation are stack configuration values.
 */
export class PostgresReplica extends pulumi.ComponentResource {
  public readonly containerName: string;
  public readonly address: pulumi.Output<string>;
  public readonly port: number;
  public readonly volumeName: string;
  public readonly pgHba: string;
  public readonly postgresqlConf: string;
  public readonly mode: "replica" | "promoted" | "rejoin";
  public readonly container: docker.Container;
  /** Up in its role: a standby streaming, or a promoted server taking writes (the health gate). */
  public readonly ready: pulumi.CustomResource;

  constructor(name: string, args: PostgresReplicaArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:PostgresReplica", name, {}, opts);
    const parent = { parent: this };
    this.containerName = containerName(args.hostName, "postgres");
    this.address = pulumi.output(args.privateIp);
    this.port = args.port;
    this.mode = args.promote ? "promoted" : args.rejoin ? "rejoin" : "replica";
    const restoreId = args.restoreId ?? 0;
    this.volumeName = `synaxic-${args.hostName}-pgdata-g${args.reinitGeneration}${restoreId > 0 ? `-r${restoreId}` : ""}`;

    this.postgresqlConf = renderPostgresqlConf({
      role: "replica",
      ...serverConf(args),
      clusterTunes: [args.primaryTune, args.sizing],
      primary: args.primary,
      replicationUser: PG_ROLES.replication,
      passfile: PG_PATHS.passfile,
      applicationName: args.hostName,
      slotName: args.slotName,
    });
    this.pgHba = serverHba(args.databaseName, args.peerAddresses, args.rewindAddresses);
    const passfile = pulumi.secret(
      pulumi.all([args.passwords.replication, args.passwords.rewind]).apply(([replication, rewind]) =>
        replicaPassfile(args.primary, { replication, rewind }),
      ),
    );

    // A new generation is a new, empty volume: the entrypoint clones into it.
    const volumeName =
      args.volumeName ??
      new docker.Volume(
        `${name}-data`,
        { name: this.volumeName, labels: [{ label: "app", value: "synaxic" }, { label: "synaxic.generation", value: String(args.reinitGeneration) }] },
        { ...parent, retainOnDelete: !args.deleteDataOnDestroy },
      ).name;

    // Promotion happens on the running standby (pg_promote: a new timeline),
    // before the container is re-created in "promoted" mode over the same data.
    const dependsOn: pulumi.Resource[] = [...(args.after ?? [])];
    if (args.promote) {
      dependsOn.push(promoteStep(`${name}-promote`, args.shell, { containerName: this.containerName, port: args.port, timeoutSeconds: args.timeoutSeconds }, parent));
    }

    const { container, ready } = postgresContainer(
      args,
      {
        name,
        containerName: this.containerName,
        volumeName,
        postgresqlConf: this.postgresqlConf,
        pgHba: this.pgHba,
        entrypoint: renderReplicaEntrypoint({
          mode: this.mode,
          dataDir: PG_PATHS.dataDir,
          configFile: PG_PATHS.configFile,
          primary: args.primary,
          replicationUser: PG_ROLES.replication,
          rewindUser: PG_ROLES.rewind,
          slotName: args.slotName,
          applicationName: args.hostName,
          passfile: PG_PATHS.passfile,
          caFile: PG_PATHS.caFile,
        }),
        secretFiles: [{ path: PG_PATHS.passfile, content: passfile }],
        dependsOn,
        // A standby must be streaming from its primary: an `up` that re-points
        // it (followPrimary) fails, with the log, when it cannot follow.
        ready: this.mode === "promoted" ? PRIMARY_READY : STANDBY_READY,
        // A replica's first start clones the primary: give it time.
        startTimeoutSeconds: 1800,
      },
      parent,
    );
    this.container = container;
    this.ready = ready as pulumi.CustomResource;

    // A promoted server keeps WAL for everyone who follows it.
    if (args.promote) {
      for (const f of args.followerSlots) {
        replicationSlot(
          `${name}-slot-${f.name}`,
          args.shell,
          { containerName: this.containerName, port: args.port, slotName: f.slotName, timeoutSeconds: args.timeoutSeconds },
          { ...parent, dependsOn: [ready] },
        );
      }
    }

    // Earlier generations' volumes are removed once the new clone runs.
    if ((args.reinitGeneration > 0 || restoreId > 0) && args.volumeName === undefined) {
      remoteStep(
        `${name}-reinit-cleanup`,
        args.shell,
        {
          argv: [
            "sh",
            "-c",
            'docker volume ls -q --filter "label=synaxic.generation" --filter "name=$1" | grep -vx "$2" | while read -r v; do docker volume rm "$v"; done',
            "sh",
            `synaxic-${args.hostName}-pgdata-g`,
            this.volumeName,
          ],
          triggers: [this.volumeName],
          timeoutSeconds: args.timeoutSeconds,
        },
        { ...parent, dependsOn: [ready] },
      );
    }

    this.registerOutputs({ containerName: this.containerName, address: this.address, port: this.port, mode: this.mode, volumeName: this.volumeName });
  }
}
