/**
 * What PostgresMaster and PostgresReplica share: the container layout, the
 * pg_hba file on the host (re-read with a reload, no restart), and SQL run
 * inside the container over the local socket.
 */
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import * as command from "@pulumi/command";
import { LOOPBACK } from "./addresses";
import { withoutSwap, baseContainer, digest, healthcheck, hostFile, hostPath, replaceInPlace, upload, whenRunning } from "./containers";
import { buildPostgresImage } from "./postgresImage";
import { backupArchiveSettings, backupFiles, schedulerContainer, serverContainer, stanzaStep, type PostgresBackupArgs } from "./backup";
import { asRoot, remoteStep, withAfter, withTimeout, type HostShell } from "./remote";
import { psqlScriptArgv, renderPromoteSql, renderSlotCreateSql, renderSlotDropSql } from "../templates/postgres-sql";
import type { PostgresConfCommon } from "../templates/postgres-conf";
import { renderPgHba, renderPgpass } from "../templates/postgres-hba";
import { renderHealthGateScript, renderRestartIfStaleScript } from "../templates/health-gate";
import { restartSettingNames, restartSettings } from "../templates/postgres-conf";

/** uid/gid of `postgres` in the official image. */
export const PG_UID = 999;

export const PG_PATHS = {
  dataDir: "/var/lib/postgresql/data",
  confDir: "/etc/synaxic/conf",
  configFile: "/etc/synaxic/conf/postgresql.conf",
  hbaDir: "/etc/synaxic/hba",
  hbaFile: "/etc/synaxic/hba/pg_hba.conf",
  certFile: "/etc/synaxic/tls/server.crt",
  keyFile: "/etc/synaxic/tls/server.key",
  caFile: "/etc/synaxic/tls/ca.crt",
  passfile: "/run/synaxic/pgpass",
  entrypoint: "/usr/local/bin/synaxic-entrypoint",
  /** The primary's bootstrap permit directory (a host directory, read-write: the entrypoint removes the permit). */
  bootstrapDir: "/etc/synaxic/bootstrap",
  bootstrapPermit: "/etc/synaxic/bootstrap/permit",
} as const;

/** The pg_hba role names; the app role is named after the database. */
export const PG_ROLES = { replication: "replicator", rewind: "synaxic_rewind", exporter: "synaxic_exporter" } as const;

/** What every PostgreSQL server of the fleet is given, primary or replica. */
export interface PostgresServerArgs {
  hostName: string;
  shell: HostShell;
  /** The pinned official image the fleet's image is built from (templates/postgres-image.ts). */
  image: string;
  /** The pgbackrest package version built into the image. */
  pgbackrestVersion: string;
  networkMode: pulumi.Input<string>;
  /** This host's private address: PostgreSQL listens there (other hosts) and on loopback (this host's app and exporter). */
  privateIp: string;
  port: number;
  databaseName: string;
  /** PGTune's input: memoryMiB is PostgreSQL's share of the host's memory budget (lib/memory.ts), not the host's RAM. */
  sizing: { memoryMiB: number; cpus: number; maxConnections: number };
  /** The container's memory limit, in MiB: PostgreSQL's share of the host's budget. */
  memoryLimitMiB: number;
  /** The same on every server of the fleet (a standby needs at least its primary's). */
  maxWalSenders: number;
  maxReplicationSlots: number;
  maxSlotWalKeepSizeMB: number;
  walKeepSizeMB: number;
  /** synchronousReplication any1: the other servers' names (application_name), one of which must flush a commit while this server is primary. */
  synchronousStandbys?: string[];
  tls: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; caPem: pulumi.Input<string> };
  /** Backups into the fleet's repository (lib/backup.ts); absent: no archiving, no scheduler. */
  backup?: PostgresBackupArgs;
  timeoutSeconds: number;
}

/** The postgresql.conf settings a server's role does not change. */
export function serverConf(args: PostgresServerArgs): PostgresConfCommon {
  return {
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
    ...(args.synchronousStandbys ? { synchronousStandbyNames: args.synchronousStandbys } : {}),
    ...(args.backup ? { archive: backupArchiveSettings() } : {}),
  };
}

/**
 * pg_hba.conf of a server: the app and the exporter run on the same host and
 * connect over loopback; replication from the given addresses, rewind from
 * `rewindAddresses` (all of them when absent).
 */
export function serverHba(databaseName: string, replicaAddresses: string[], rewindAddresses?: string[]): string {
  return renderPgHba({
    ...(rewindAddresses ? { rewindAddresses } : {}),
    appDatabase: databaseName,
    appUser: databaseName,
    appAddresses: [LOOPBACK],
    replicationUser: PG_ROLES.replication,
    replicaAddresses,
    rewindUser: PG_ROLES.rewind,
    exporterUser: PG_ROLES.exporter,
    exporterAddresses: [LOOPBACK],
  });
}

/** What distinguishes one server's container: its role's files and its data. */
export interface PostgresContainerArgs {
  name: string;
  containerName: string;
  volumeName: pulumi.Input<string>;
  postgresqlConf: string;
  pgHba: string;
  entrypoint: pulumi.Input<string>;
  /** Extra secret files (the replica's passfile). */
  secretFiles?: { path: string; content: pulumi.Input<string> }[];
  dependsOn?: pulumi.Resource[];
  /** What the server must say, once healthy, before anything goes on (e.g. a replica streaming). */
  ready: { sql: string; expect: string; what: string };
  /** How long the first start may take (a replica's clone), in seconds. */
  startTimeoutSeconds: number;
  /** The primary's bootstrap permit directory on the host (relative to the files root), mounted read-write at PG_PATHS.bootstrapDir. */
  bootstrapDir?: string;
}

/** How long the server is given to stop (SIGINT, a fast shutdown) before Docker kills it, in seconds. */
export const PG_STOP_SECONDS = 120;

/**
 * The Docker provider's limits for a PostgreSQL container's create, update
 * and delete. Unless told otherwise it gives each 20 minutes
 * (terraform-provider-docker v4.5.0, the upstream pulumi-docker v5.1.0 is
 * built from: internal/provider/resource_docker_container.go, Timeouts with
 * dockerContainerCreateDefaultTimeout = 20 * time.Minute, and the same for
 * update and delete), enforced as a deadline on everything the operation
 * does (terraform-plugin-sdk helper/schema/resource.go, create():
 * context.WithTimeout(ctx, d.Timeout(TimeoutCreate))). A `wait` for health
 * runs inside that deadline (resourceDockerContainerCreate:
 * context.WithTimeout(ctx, wait_timeout) on the create's context), so no
 * waitTimeout can outlast it. Pulumi's customTimeouts replace the default
 * (pulumi-terraform-bridge pkg/tfbridge/provider.go, Create/Update/Delete:
 * TimeoutOverrides: newTimeoutOverrides(shim.TimeoutCreate, req.Timeout)).
 *
 * These containers are created without `wait` (the `-ready` step waits,
 * under its own limits), so a clone does not run inside the create; the
 * limits still follow the start they belong to, so that no container
 * operation is cut short before the start it is part of may end: create and
 * update get the start budget plus a margin for the SSH connection, the
 * uploads and the start itself; delete gets the stop grace plus that margin.
 */
export function pgContainerTimeouts(startTimeoutSeconds: number): pulumi.CustomTimeouts {
  if (!Number.isInteger(startTimeoutSeconds) || startTimeoutSeconds <= 0) throw new Error(`pgContainerTimeouts: ${startTimeoutSeconds} is not a positive number of seconds`);
  const margin = 600;
  return { create: `${startTimeoutSeconds + margin}s`, update: `${startTimeoutSeconds + margin}s`, delete: `${PG_STOP_SECONDS + margin}s` };
}

/**
 * A replica's passfile: the replication role for the entrypoint's slot
 * commands, pg_basebackup and the walreceiver (all of which connect with
 * dbname "replication"), and the rewind role for pg_rewind.
 */
export function replicaPassfile(primary: { host: string; port: number | "*" }, passwords: { replication: string; rewind: string }): string {
  return renderPgpass([
    { host: primary.host, port: primary.port, database: "replication", user: PG_ROLES.replication, password: passwords.replication },
    { host: primary.host, port: primary.port, database: "postgres", user: PG_ROLES.rewind, password: passwords.rewind },
  ]);
}

/** A primary is ready when it accepts connections out of recovery. */
export const PRIMARY_READY = { sql: "SELECT pg_catalog.pg_is_in_recovery()", expect: "f", what: "a primary" };
/** A standby is ready when its WAL receiver streams from the primary. */
export const STANDBY_READY = { sql: "SELECT status FROM pg_catalog.pg_stat_wal_receiver", expect: "streaming", what: "streaming from its primary" };

/** psql inside the container as the postgres OS user (peer authentication on the local socket), SQL on stdin. */
export function psqlInContainer(containerName: string, port: number, database = "postgres"): string[] {
  return ["docker", "exec", "-i", "-u", "postgres", containerName, ...psqlScriptArgv({ database, port })];
}

/** Where a host's PostgreSQL listens: its private address (other hosts) and loopback (its own app and exporter). */
export function pgListenAddresses(privateIp: string): string[] {
  return [privateIp, LOOPBACK];
}

export function postgresContainer(
  server: PostgresServerArgs,
  args: PostgresContainerArgs,
  opts: pulumi.CustomResourceOptions,
): { container: docker.Container; hba: pulumi.Resource; ready: pulumi.Resource } {
  const hbaDir = `${server.hostName}/postgres-hba`;
  const hba = hostFile(`${args.name}-hba`, server.shell, { path: `${hbaDir}/pg_hba.conf`, content: args.pgHba, mode: "0644", owner: `0:${PG_UID}`, timeoutSeconds: server.timeoutSeconds }, opts);
  // postgresql.conf is a file on the host too: a change is a readable diff of
  // that file, then a reload, and a restart only for the settings that need
  // one (the `-restart` step below shows it in the preview).
  const confDir = `${server.hostName}/postgres-conf`;
  const conf = hostFile(`${args.name}-conf`, server.shell, { path: `${confDir}/postgresql.conf`, content: args.postgresqlConf, mode: "0644", owner: `0:${PG_UID}`, timeoutSeconds: server.timeoutSeconds }, opts);
  const backup = server.backup
    ? backupFiles(
        `${args.name}`,
        server.shell,
        { hostName: server.hostName, port: server.port, dataDir: PG_PATHS.dataDir, privateIp: server.privateIp, pgUid: PG_UID, backup: server.backup, tls: server.tls, timeoutSeconds: server.timeoutSeconds },
        opts,
      )
    : undefined;
  const image = buildPostgresImage(`${args.name}-image`, server.shell, { baseImage: server.image, pgbackrestVersion: server.pgbackrestVersion, timeoutSeconds: server.timeoutSeconds }, opts);
  const container = new docker.Container(
    `${args.name}-container`,
    {
      name: args.containerName,
      image: image.imageId,
      entrypoints: [PG_PATHS.entrypoint],
      // Listens on the private address and loopback only (postgresql.conf), never the public interface.
      ...baseContainer(server.networkMode),
      volumes: [{ volumeName: args.volumeName, containerPath: PG_PATHS.dataDir }, ...(backup?.volumes ?? [])],
      mounts: [
        ...(backup?.mounts ?? []),
        { type: "bind", source: hostPath(server.shell, hbaDir), target: PG_PATHS.hbaDir, readOnly: true },
        { type: "bind", source: hostPath(server.shell, confDir), target: PG_PATHS.confDir, readOnly: true },
        ...(args.bootstrapDir ? [{ type: "bind", source: hostPath(server.shell, args.bootstrapDir), target: PG_PATHS.bootstrapDir, readOnly: false }] : []),
      ],
      uploads: [
        { file: PG_PATHS.entrypoint, content: args.entrypoint, permissions: "0755", owner: "0", group: "0", executable: true },
        upload(PG_PATHS.certFile, server.tls.certPem, "0644", PG_UID),
        upload(PG_PATHS.keyFile, pulumi.secret(server.tls.keyPem), "0600", PG_UID),
        upload(PG_PATHS.caFile, server.tls.caPem, "0644", PG_UID),
        ...(args.secretFiles ?? []).map((f) => upload(f.path, pulumi.secret(f.content), "0600", PG_UID)),
      ],
      shmSize: 256,
      ...withoutSwap(server.memoryLimitMiB),
      stopSignal: "SIGINT",
      stopTimeout: PG_STOP_SECONDS,
      destroyGraceSeconds: PG_STOP_SECONDS,
      healthcheck: healthcheck({
        // As the postgres OS user over the local socket, so that peer
        // authentication accepts it: as root it is refused, and the server
        // logs a FATAL line on every probe.
        tests: ["CMD-SHELL", `gosu postgres pg_isready -q -d postgres -p ${server.port}`],
        intervalSeconds: 10,
        timeoutSeconds: 5,
        retries: 6,
        startPeriodSeconds: 30,
      }),
      // The health gate below waits, and says why when the server does not come up.
      wait: false,
    },
    { ...opts, ...replaceInPlace, customTimeouts: pgContainerTimeouts(args.startTimeoutSeconds), dependsOn: [hba, conf, ...(backup?.files ?? []), ...(args.dependsOn ?? [])] },
  );
  const gate = (timeoutSeconds: number) =>
    renderHealthGateScript({
      containerName: args.containerName,
      timeoutSeconds,
      check: { user: "postgres", argv: ["psql", "-X", "-q", "-At", `--port=${server.port}`, "--dbname=postgres", "-c", args.ready.sql], expect: args.ready.expect, what: args.ready.what },
    });
  const ready = remoteStep(
    `${args.name}-ready`,
    server.shell,
    {
      argv: ["sh", "-s"],
      stdin: gate(args.startTimeoutSeconds),
      triggers: [container.id],
      timeoutSeconds: args.startTimeoutSeconds + 30,
    },
    { ...opts, dependsOn: [container] },
  );
  // pg_hba and postgresql.conf changes (a replica added or removed, a
  // setting changed) are re-read without a restart.
  const reload = remoteStep(
    `${args.name}-hba-reload`,
    server.shell,
    {
      argv: whenRunning(args.containerName, psqlInContainer(args.containerName, server.port)),
      stdin: "SELECT pg_catalog.pg_reload_conf();\n",
      triggers: [digest(args.pgHba), digest(args.postgresqlConf), container.id],
      timeoutSeconds: server.timeoutSeconds,
    },
    { ...opts, dependsOn: [ready, hba, conf] },
  );
  // A setting that only takes effect at server start changed: the step is
  // re-created (its trigger is those settings), restarts the server if it
  // started before the file was last written, and waits until it is back in
  // its role. A server started after the change (a new container) is left alone.
  remoteStep(
    `${args.name}-restart`,
    server.shell,
    {
      argv: ["sh", "-s"],
      stdin: renderRestartIfStaleScript({
        containerName: args.containerName,
        file: hostPath(server.shell, `${confDir}/postgresql.conf`),
        settings: restartSettingNames(args.postgresqlConf),
        gate: gate(args.startTimeoutSeconds),
      }),
      triggers: [restartSettings(args.postgresqlConf)],
      timeoutSeconds: args.startTimeoutSeconds + 180,
    },
    { ...opts, dependsOn: [reload] },
  );
  if (backup && server.backup) {
    const stanza = stanzaStep(
      `${args.name}-stanza`,
      server.shell,
      { containerName: args.containerName, port: server.port, triggers: [container.id, backup.confDigest], timeoutSeconds: server.timeoutSeconds },
      { ...opts, dependsOn: [ready, ...backup.files] },
    );
    schedulerContainer(
      `${args.name}-backup`,
      server.shell,
      { hostName: server.hostName, image: image.imageId, networkMode: server.networkMode, port: server.port, databaseName: server.databaseName, dataVolume: args.volumeName, dataDir: PG_PATHS.dataDir, files: backup, backup: server.backup },
      // After the stanza exists: a first backup before stanza-create fails ("backup.info cannot be opened").
      { ...opts, dependsOn: [ready, stanza] },
    );
    serverContainer(
      `${args.name}-pgbackrest-server`,
      { hostName: server.hostName, image: image.imageId, networkMode: server.networkMode, dataVolume: args.volumeName, dataDir: PG_PATHS.dataDir, pgUid: PG_UID, files: backup, backup: server.backup },
      { ...opts, dependsOn: [ready] },
    );
  }
  return { container, hba, ready };
}

/**
 * A physical replication slot for one replica on the server in this
 * container: created with the resource (so WAL is kept for the replica from
 * then on) and dropped when the resource is deleted (the replica removed).
 */
export function replicationSlot(
  name: string,
  shell: HostShell,
  p: { containerName: string; port: number; slotName: string; timeoutSeconds: number },
  opts: pulumi.CustomResourceOptions,
) {
  const psql = psqlInContainer(p.containerName, p.port);
  return remoteStep(
    name,
    shell,
    {
      argv: psql,
      stdin: renderSlotCreateSql(p.slotName),
      deleteArgv: [...psql.slice(0, -1), "--command", renderSlotDropSql(p.slotName)],
      timeoutSeconds: p.timeoutSeconds,
    },
    opts,
  );
}

/**
 * Promotes the standby running in this container (pg_promote: a new
 * timeline), before the container is re-created to run as a primary over the
 * same data. A no-op when the container is not running or is a primary.
 */
export function promoteStep(name: string, shell: HostShell, p: { containerName: string; port: number; timeoutSeconds: number }, opts: pulumi.CustomResourceOptions) {
  return remoteStep(
    name,
    shell,
    {
      argv: whenRunning(p.containerName, psqlInContainer(p.containerName, p.port), "no running standby: the promoted data starts as a primary"),
      stdin: renderPromoteSql(),
      timeoutSeconds: p.timeoutSeconds,
    },
    opts,
  );
}

/**
 * The primary's one-shot bootstrap permit (see renderPrimaryEntrypoint):
 * written into `dir` on the host when this step is created, which happens on
 * the stack's first deployment and whenever `generation` (its only trigger)
 * changes. Nothing else writes it.
 *
 * The command provider replaces a Command only when its triggers change
 * (pulumi-command v1.2.1 provider/pkg/provider/common/inputs.go: only
 * `triggers` carries provider:"replaceOnChanges"); any other change, such as
 * its connection when the server is re-created at a new address or with a
 * new host key, is an update, and an update runs `create` when no `update`
 * is given (provider/pkg/provider/remote/commandController.go and
 * local/commandController.go, Update: news.Update if set, else news.Create).
 * So `update` is set, and only makes sure the directory the container mounts
 * exists: a re-created server gets no permit, and its primary refuses to
 * start empty. A replacement creates the new step before it deletes the old
 * one (Pulumi's default), so delete removes the permit only if it is this
 * step's own, never the next generation's.
 */
export function bootstrapPermitStep(
  name: string,
  shell: HostShell,
  p: { dir: string; permit: string; generation: number; timeoutSeconds: number; restore?: number },
  opts: pulumi.CustomResourceOptions,
): pulumi.CustomResource {
  if (p.dir.startsWith("/") || p.dir.split("/").includes("..")) throw new Error(`bootstrapPermitStep: ${p.dir} must be relative to the host's files root`);
  if (!Number.isInteger(p.generation) || p.generation < 0) throw new Error(`bootstrapPermitStep: generation must be a non-negative integer, got ${p.generation}`);
  if (!/^[^\n]+\n$/.test(p.permit)) throw new Error("bootstrapPermitStep: the permit is one line");
  const dir = hostPath(shell, p.dir);
  const file = `${dir}/permit`;
  const write = [
    "sh",
    "-c",
    'set -eu; mkdir -p "$1"; chmod 0700 "$1"; t="$2.tmp.$$"; (umask 077 && cat > "$t"); mv -f "$t" "$2"; echo "bootstrap permit written: $2"',
    "sh",
    dir,
    file,
  ];
  const keep = [
    "sh",
    "-c",
    'set -eu; mkdir -p "$1"; chmod 0700 "$1"; echo "no bootstrap permit written: only a new bootstrapGeneration (or the first deployment) writes one"',
    "sh",
    dir,
  ];
  const remove = ["sh", "-c", 'if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then rm -f "$1"; fi', "sh", file, p.permit.trimEnd()];
  const seconds = p.timeoutSeconds;
  const common = {
    create: withTimeout(seconds, asRoot(shell, write)),
    update: withTimeout(seconds, asRoot(shell, keep)),
    delete: withTimeout(seconds, asRoot(shell, remove)),
    stdin: p.permit,
    // A restore's id joins the triggers only when there is one: existing stacks keep theirs, and get no new permit.
    triggers: p.restore === undefined ? [p.generation] : [p.generation, p.restore],
    logging: "stdoutAndStderr" as const,
    // As in remoteStep: no earlier output is handed to the next run.
    addPreviousOutputInEnv: false,
  };
  // As in remoteStep: after what every step on the host waits for, and under the same limits.
  const resourceOpts = {
    ...opts,
    dependsOn: withAfter(opts.dependsOn, shell.after),
    customTimeouts: { create: `${seconds + 60}s`, update: `${seconds + 60}s`, delete: `${seconds + 60}s` },
  };
  return shell.kind === "ssh"
    ? new command.remote.Command(name, { connection: shell.connection, ...common }, resourceOpts)
    : new command.local.Command(name, common, resourceOpts);
}
