import * as pulumi from "@pulumi/pulumi";
import type { MemoryBudget } from "../lib/memory";
import * as docker from "@pulumi/docker";
import { LOOPBACK, containerName } from "../lib/addresses";
import { baseContainer, healthcheck, hostFile, hostPath, pullImage, replaceInPlace, upload, whenRunning, STOP_GRACE, stopGrace, memoryLimit } from "../lib/containers";
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
import { REDIS_ACL_DIR, REDIS_ACL_FILE, renderRedisUsersScript, type RedisUsersMode } from "../templates/redis-users";

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
 * certificates from the Redis CA (components/Pki.ts), ACL users (default user off), AOF
 * persistence on a named volume. A replica follows the master over TLS,
 * verifying its certificate, and announces its own private address.
 */
export class RedisPair extends pulumi.ComponentResource {
  public readonly containerName: string;
  public readonly address: pulumi.Output<string>;
  public readonly port: number;
  public readonly role: pulumi.Output<string>;
  public readonly container: docker.Container;
  /** The running server's users changed to match users.acl (templates/redis-users.ts), in "add" or "sync" mode. */
  private readonly usersStep: (mode: RedisUsersMode, opts: pulumi.CustomResourceOptions) => pulumi.Resource;
  private readonly usersAdded: pulumi.Resource;

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
              ? { role: "master", bind: [args.privateIp, LOOPBACK], port: args.port, announce: { ip: args.privateIp, port: args.port }, maxmemory, aclFile: REDIS_ACL_FILE }
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
                  aclFile: REDIS_ACL_FILE,
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

    const dependsOn: pulumi.Resource[] = [];
    const volume = new docker.Volume(
      `${name}-data`,
      { name: `synaxic-${args.hostName}-redis-data`, labels: [{ label: "app", value: "synaxic" }] },
      { ...parent, retainOnDelete: !args.deleteDataOnDestroy },
    );
    const image = pullImage(`${name}-image`, args.image, parent);

    // users.acl is a file on the host, mounted read-only: a new password
    // changes the file and the running server (the users steps below), and
    // never re-creates the container, which would cut every client off.
    // A local stack run by a user other than root cannot hand a host file
    // to Redis's user (hostFile's chown needs root), so there the file is an
    // upload into the container, which a password change re-creates.
    const aclDir = `${args.hostName}/redis-acl`;
    const aclOnHost = args.shell.kind !== "local";
    const aclFile = aclOnHost
      ? hostFile(`${name}-acl`, args.shell, { path: `${aclDir}/users.acl`, content: acl, mode: "0600", owner: `${REDIS_CONTAINER_UID}:${REDIS_CONTAINER_GID}`, timeoutSeconds: args.timeoutSeconds }, parent)
      : undefined;
    if (aclFile) dependsOn.push(aclFile);

    // Promotion: REPLICAOF NO ONE on the running replica first, so that it
    // keeps serving its data as a master; the container below is then
    // re-created with the master configuration over the same volume.
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
        mounts: aclOnHost ? [{ type: "bind", source: hostPath(args.shell, aclDir), target: REDIS_ACL_DIR, readOnly: true }] : [],
        uploads: [
          ...(aclOnHost ? [] : [upload(REDIS_ACL_FILE, acl, "0600", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID)]),
          upload(P.conf, conf, "0600", REDIS_CONTAINER_UID, REDIS_CONTAINER_GID),
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

    // The users on the running server (templates/redis-users.ts), as admin
    // with its password on stdin: "add" here, before any client is given a
    // new password (the app waits for this component); "sync", which drops
    // old passwords, from syncUsersAfter once the old clients are gone.
    const usersStdin = pulumi.secret(pulumi.interpolate`${args.passwords.admin}\n${acl}`);
    this.usersStep = (mode, opts) =>
      remoteStep(
        `${name}-users-${mode}`,
        args.shell,
        {
          argv: whenRunning(this.containerName, ["docker", "exec", "-i", this.containerName, "sh", "-c", renderRedisUsersScript(mode, { port: args.port, caFile: P.caFile, adminUser: REDIS_USER_NAMES.admin })]),
          stdin: usersStdin,
          timeoutSeconds: args.timeoutSeconds,
          secretOutput: true,
        },
        opts,
      );
    this.usersAdded = this.usersStep("add", { ...parent, dependsOn: [this.container, ...(aclFile ? [aclFile] : [])] });

    this.registerOutputs({ containerName: this.containerName, address: this.address, port: this.port, role: this.role });
  }

  /**
   * Sets every Redis user to exactly its users.acl line once `after` is done
   * (the old app slot retired): old passwords are dropped then, never while a
   * client may still open a connection with one. Runs whenever users.acl or
   * the admin password changes. Not a child of this component: the app
   * depends on the component, and this step waits for the app.
   */
  syncUsersAfter(after: pulumi.Resource[]): pulumi.Resource {
    return this.usersStep("sync", { dependsOn: [this.usersAdded, ...after] });
  }
}
