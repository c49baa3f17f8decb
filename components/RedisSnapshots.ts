import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName, nodeTextfileDir } from "../lib/addresses";
import type { BackupSettings, RedisSnapshotSettings } from "../lib/config";
import { baseContainer, hostPath, replaceInPlace, stopGrace, upload, withoutSwap, STOP_GRACE } from "../lib/containers";
import { buildLocalImage } from "../lib/localImage";
import { REDIS_SNAPSHOT_JOB_MIB } from "../lib/memory";
import type { HostShell } from "../lib/remote";
import { REDIS_CONTAINER_GID, REDIS_CONTAINER_PATHS, REDIS_CONTAINER_UID } from "../templates/redis";
import { renderS3CurlCredentials } from "../templates/redis-backup";
import { redisBackupImageTag, renderRedisBackupImageDockerfile } from "../templates/redis-backup-image";
import { REDIS_SNAPSHOT_PATHS, renderRedisSnapshotJobFiles } from "../templates/redis-backup-scheduler";

export interface RedisSnapshotsArgs {
  hostName: string;
  shell: HostShell;
  networkMode: pulumi.Input<string>;
  timeoutSeconds: number;
  /** The fleet's Redis image (redisImage): the job's image is built FROM it, so its redis-cli and redis-check-rdb are the server's. */
  redisImage: string;
  /** This host's Redis master, reached on loopback over TLS as the backup user. */
  redis: { port: number; caPem: pulumi.Input<string>; backupPassword: pulumi.Input<string> };
  repository: BackupSettings["repository"];
  snapshots: RedisSnapshotSettings;
  /** The object storage's access key, and the repository's cipher pass (the snapshots' encryption passphrase). */
  secrets: { accessKeyId: pulumi.Input<string>; secretAccessKey: pulumi.Input<string>; cipherPass: pulumi.Input<string> };
  /** The job starts after these (the Redis pair, whose users step puts the backup user on the running server: the first snapshot is taken at once). */
  after: pulumi.Resource[];
}

/**
 * Redis snapshots into the backup repository, beside the Redis master
 * (templates/redis-backup-scheduler.ts): an image built on the host FROM the
 * fleet's Redis image with pinned curl, openssl and ca-certificates, and a
 * job container that takes a snapshot through the backup user, checks,
 * encrypts and uploads it, expires old ones, and reports through the node
 * exporter's textfile collector. Every secret is a 0600 file uploaded into
 * the container (the S3 key in a curl config file, the backup user's
 * password, the cipher pass), never an argument, a variable or a log line.
 */
export class RedisSnapshots extends pulumi.ComponentResource {
  public readonly containerName: string;
  public readonly container: docker.Container;
  public readonly imageId: pulumi.Output<string>;

  constructor(name: string, args: RedisSnapshotsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:RedisSnapshots", name, {}, opts);
    const parent = { parent: this };
    const P = REDIS_SNAPSHOT_PATHS;
    this.containerName = containerName(args.hostName, "redis-backup");

    const imageParams = { baseImage: args.redisImage, packages: args.snapshots.packages };
    const image = buildLocalImage(
      `${name}-image`,
      args.shell,
      { baseImage: args.redisImage, dockerfile: renderRedisBackupImageDockerfile(imageParams), tag: redisBackupImageTag(imageParams), timeoutSeconds: args.timeoutSeconds },
      parent,
    );
    this.imageId = image.imageId;

    const files = renderRedisSnapshotJobFiles({
      hostName: args.hostName,
      redis: { host: LOOPBACK, port: args.redis.port },
      repository: { ...args.repository, hasCaCertificate: args.repository.caCertificate !== undefined },
      hourUtc: args.snapshots.hourUtc,
      retention: args.snapshots.retention,
      // The install script runs in a one-off container with the Redis volume where the server has it (docs/runbook.md).
      redisDataDir: REDIS_CONTAINER_PATHS.dataDir,
      redisUid: REDIS_CONTAINER_UID,
      redisGid: REDIS_CONTAINER_GID,
    });

    const s = args.secrets;
    const curlCredentials = pulumi.secret(pulumi.all([s.accessKeyId, s.secretAccessKey]).apply(([s3Key, s3KeySecret]) => renderS3CurlCredentials({ s3Key, s3KeySecret })));
    // openssl's -pass file: reads the first line and cuts it at the line break (apps/lib/apps.c, app_get_pass).
    const cipherPass = pulumi.secret(pulumi.output(s.cipherPass).apply((v) => `${v}\n`));
    const state = new docker.Volume(`${name}-state`, { name: `synaxic-${args.hostName}-redis-backup-state`, labels: [{ label: "app", value: "synaxic" }] }, parent);
    this.container = new docker.Container(
      `${name}-container`,
      {
        name: this.containerName,
        image: image.imageId,
        entrypoints: ["/bin/bash", P.entrypoint],
        ...baseContainer(args.networkMode),
        ...withoutSwap(REDIS_SNAPSHOT_JOB_MIB),
        ...stopGrace(STOP_GRACE.backup),
        volumes: [
          { volumeName: state.name, containerPath: P.state },
          // The node exporter's textfile directory (created when missing: a -v bind, as lib/backup.ts's scheduler).
          { hostPath: hostPath(args.shell, nodeTextfileDir(args.hostName)), containerPath: P.textfile },
        ],
        uploads: [
          ...Object.entries(files).map(([file, script]) => upload(file, script, "0755", 0)),
          upload(P.caFile, args.redis.caPem, "0644", 0),
          ...(args.repository.caCertificate ? [upload(P.s3CaFile, args.repository.caCertificate, "0644", 0)] : []),
          upload(P.passwordFile, pulumi.secret(args.redis.backupPassword), "0600", 0),
          upload(P.cipherPassFile, cipherPass, "0600", 0),
          upload(P.s3CredentialsFile, curlCredentials, "0600", 0),
        ],
      },
      { ...parent, ...replaceInPlace, dependsOn: args.after },
    );
    this.registerOutputs({ containerName: this.containerName, imageId: this.imageId });
  }
}
