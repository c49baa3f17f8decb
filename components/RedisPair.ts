import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName } from "../lib/addresses";
import { baseContainer, healthcheck, pullImage, replaceInPlace, upload, whenRunning, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
import { remoteStep, type HostShell } from "../lib/remote";
import { REDIS_BACKUP_USER, renderRedisBackupAclLine } from "../templates/redis-backup";
import {
  REDIS_CONTAINER_GID,
  redisAclPasswordHash,
  REDIS_CONTAINER_PATHS,
  REDIS_CONTAINER_UID,
  renderRedisAcl,
  renderRedisConf,
  renderRedisPromoteFromStdin,
} from "../templates/redis";

/** The Redis users; passwords are secrets from FleetSecrets. */
export interface RedisUsers {
  app: pulumi.Input<string>;
  replication: pulumi.Input<string>;
  exporter: pulumi.Input<string>;
  admin: pulumi.Input<string>;
  /**
   * With Redis snapshots: the backup user (REDIS_BACKUP_USER), which may only
   * SYNC, REPLCONF and PING. Every host has it: the job runs beside whichever
   * server is the master, a promoted replica's too.
   */
  backup?: pulumi.Input<string>;
}

export const REDIS_USER_NAMES = { app: "synaxic", replication: "replicator", exporter: "exporter", admin: "admin" } as const;

export interface RedisPairArgs {
  /** This host's memory budget (lib/memory.ts): the container's limit comes from it. */
  memory: MemoryBudget;
  hostName: string;
  /** master on the main host; replica on a replica host (master again once promoted). */
  role: "master" | "replica";
  shell: HostShell;
  image: string;
  networkMode: pulumi.Input<string>;
  /** This host's private address: Redis listens there and on loopback only, and a replica announces it. */
  privateIp: string;
  port: number;
  /** The master's private address and port (replica role). */
  master?: { host: pulumi.Input<string>; port: number };
  /** Promote this replica: REPLICAOF NO ONE on the running server, then run it as a master from its own data. */
  promote?: boolean;
  tls: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; caPem: pulumi.Input<string> };
  passwords: RedisUsers;
  deleteDataOnDestroy: boolean;
  timeoutSeconds: number;
}

/**
 * One side of the Redis master/replica pair: TLS only (plain port off),
 * certificates from the fleet CA, ACL users (default user off), AOF
 * persistence on a named volume. A replica follows the master over TLS,
 * verifying its certificate, and announces its own private address.
 */
export class RedisPair extends pulumi.ComponentResource {
  public readonly containerName: string;
  public readonly address: pulumi.Output<string>;
  public readonly port: number;
  public readonly role: pulumi.Output<string>;
  public readonly container: docker.Container;

  constructor(name: string, args: RedisPairArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:RedisPair", name, {}, opts);
    const parent = { parent: this };
    const effectiveRole = args.role === "replica" && args.promote ? "master" : args.role;
    if (args.role === "replica" && !args.master) throw new Error(`RedisPair ${name}: a replica needs the master's address`);
    this.containerName = containerName(args.hostName, "redis");
    this.port = args.port;
    this.address = pulumi.output(args.privateIp);
    this.role = pulumi.output(effectiveRole);
    const P = REDIS_CONTAINER_PATHS;

    // The host's budget: room for a fork's copy-on-write stays inside the container's limit.
    const maxmemory = `${args.memory.redisMaxMemoryMiB}mb`;
    const conf = pulumi.secret(
      pulumi
        .all([args.master?.host ?? "", args.passwords.replication])
        .apply(([masterHost, replicationPassword]) =>
          renderRedisConf(
            effectiveRole === "master"
              ? { role: "master", bind: [args.privateIp, LOOPBACK], port: args.port, announce: { ip: args.privateIp, port: args.port }, maxmemory }
              : {
                  role: "replica",
                  bind: [args.privateIp, LOOPBACK],
                  port: args.port,
                  announce: { ip: args.privateIp, port: args.port },
                  masterHost,
                  masterPort: args.master!.port,
                  masterUser: REDIS_USER_NAMES.replication,
                  masterPassword: replicationPassword,
                  maxmemory,
                },
          ),
        ),
    );
    const acl = pulumi.secret(
      pulumi
        .all([args.passwords.app, args.passwords.replication, args.passwords.exporter, args.passwords.admin, args.passwords.backup ?? ""])
        .apply(
          ([app, replication, exporter, admin, backup]) =>
            renderRedisAcl({
              app: { name: REDIS_USER_NAMES.app, password: app },
              replication: { name: REDIS_USER_NAMES.replication, password: replication },
              exporter: { name: REDIS_USER_NAMES.exporter, password: exporter },
              admin: { name: REDIS_USER_NAMES.admin, password: admin },
            }) +
            (args.passwords.backup === undefined ? "" : `${renderRedisBackupAclLine({ name: REDIS_BACKUP_USER, passwordSha256Hex: redisAclPasswordHash(backup).slice(1) })}\n`),
        ),
    );

    const volume = new docker.Volume(
      `${name}-data`,
      { name: `synaxic-${args.hostName}-redis-data`, labels: [{ label: "app", value: "synaxic" }] },
      { ...parent, retainOnDelete: !args.deleteDataOnDestroy },
    );
    const image = pullImage(`${name}-image`, args.image, parent);

    // Promotion: REPLICAOF NO ONE on the running replica first, so that it
    // keeps serving its data as a master; the container below is then
    // re-created with the master configuration over the same volume.
    const dependsOn: pulumi.Resource[] = [];
    if (args.role === "replica" && args.promote) {
      const script = renderRedisPromoteFromStdin({ host: LOOPBACK, port: args.port, caFile: P.caFile, user: REDIS_USER_NAMES.admin });
      dependsOn.push(
        remoteStep(
          `${name}-promote`,
          args.shell,
          {
            // The admin password arrives on stdin and becomes REDISCLI_AUTH
            // inside the container; the script is a plain argument.
            argv: whenRunning(this.containerName, ["docker", "exec", "-i", this.containerName, "sh", "-c", script], "no running Redis to promote; it starts as a master"),
            stdin: pulumi.secret(pulumi.interpolate`${args.passwords.admin}\n`),
            timeoutSeconds: args.timeoutSeconds,
            secretOutput: true,
          },
          parent,
        ),
      );
    }

    this.container = new docker.Container(
      `${name}-container`,
      {
        name: this.containerName,
        ...memoryLimit(args.memory, "redis"),
        ...stopGrace(STOP_GRACE.redis),
        image: image.imageId,
        command: ["redis-server", P.conf],
        ...baseContainer(args.networkMode),
        volumes: [{ volumeName: volume.name, containerPath: P.dataDir }],
        uploads: [
          upload(P.conf, conf, "0600", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID),
          upload(P.acl, acl, "0600", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID),
          upload(P.certFile, args.tls.certPem, "0644", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID),
          upload(P.keyFile, args.tls.keyPem, "0600", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID),
          upload(P.caFile, args.tls.caPem, "0644", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID),
        ],
        healthcheck: healthcheck({
          // No credentials needed to see that the server answers over TLS:
          // an unauthenticated PING is refused with NOAUTH.
          tests: ["CMD-SHELL", `redis-cli --tls --cacert ${P.caFile} -h ${LOOPBACK} -p ${args.port} PING 2>&1 | grep -Eq 'PONG|NOAUTH'`],
          intervalSeconds: 10,
          timeoutSeconds: 5,
          retries: 6,
          startPeriodSeconds: 10,
        }),
        wait: true,
        waitTimeout: 120,
      },
      { ...parent, ...replaceInPlace, dependsOn },
    );

    this.registerOutputs({ containerName: this.containerName, address: this.address, port: this.port, role: this.role });
  }
}
