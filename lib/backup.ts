/**
 * Backups with pgBackRest, on every host of the fleet (templates/pgbackrest.ts
 * for its configuration and commands, templates/backup-scheduler.ts for the
 * scheduler):
 *
 * - the PostgreSQL container gets pgbackrest.conf and its secrets (a 0600
 *   file owned by postgres; pgBackRest refuses its secure options on the
 *   command line) from a host directory mounted read-only, a volume for the
 *   asynchronous archive queue, and archive_mode/archive_command/
 *   restore_command in postgresql.conf: a primary archives every WAL segment
 *   into the repository, a standby archives nothing until it is promoted and
 *   then archives its new timeline into the same stanza;
 * - on the primary, a step creates the stanza (idempotent) and runs
 *   `pgbackrest check`, which forces a WAL switch and waits until that
 *   segment is in the repository: `pulumi up` fails, saying why, when the
 *   repository cannot be written;
 * - a scheduler container beside PostgreSQL, from the same image, takes the
 *   backups while its host is the primary and reports through node_exporter's
 *   textfile collector;
 * - the same scheduler, on the host that takes the backups, runs the weekly
 *   restore drill (backupDrill): the newest backup restored into a scratch
 *   directory in its state volume, a throwaway server started there with
 *   archiving off, proved to answer, and removed.
 *
 * The scheduler reaches the server over its Unix socket, in a volume both
 * containers mount (pgBackRest connects to the local server by socket only:
 * pg1-socket-path), and reads the data directory from the server's volume,
 * read-only.
 */
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { containerName, nodeTextfileDir } from "./addresses";
import type { BackupSettings } from "./config";
import { baseContainer, digest, hostFile, hostPath, replaceInPlace, upload, withoutSwap, STOP_GRACE, stopGrace } from "./containers";
import { remoteStep, withAfter, type HostShell } from "./remote";
import { sh } from "./shell";
import {
  PGBACKREST_CONTAINER_PATHS,
  PGBACKREST_TLS_PORT,
  archiveSettings,
  backupArgv,
  checkArgv,
  expireArgv,
  infoArgv,
  restoreArgv,
  restoreCommand as archiveGetCommand,
  serverArgv,
  renderPgbackrestConf,
  renderPgbackrestSecrets,
  stanzaCreateArgv,
  verifyArgv,
} from "../templates/pgbackrest";
import { BACKUP_DRILL_DEFAULTS, renderBackupSchedulerScript, renderFleetHostsFile, type BackupSchedulerParams } from "../templates/backup-scheduler";

/** The fleet's one stanza: every host archives and backs up into it. */
export const STANZA = "synaxic";
const INVOCATION = { stanza: STANZA };

/** The server's Unix socket directory, shared with the scheduler through a volume. */
export const PG_SOCKET_DIR = "/var/run/postgresql";

/** What a host's PostgreSQL needs for backups. */
export interface PostgresBackupArgs {
  settings: BackupSettings;
  /** The object storage's access key and the repository's cipher pass (secrets). */
  secrets: { accessKeyId: pulumi.Input<string>; secretAccessKey: pulumi.Input<string>; cipherPass: pulumi.Input<string> };
  /** Memory limits in MiB (shares of the host's budget): the scheduler, and pgBackRest's TLS server. */
  schedulerMemoryMiB: number;
  serverMemoryMiB: number;
  /** Every host of the fleet, this one included: their names are what their certificates carry (lib/fleet.ts pkiHost). */
  fleet: { name: string; privateIp: string }[];
  /** The host this server streams from while a standby (itself when it is the primary): a standby backup reaches it. */
  primaryName: string;
}

/** The CN of a host's PostgreSQL certificate (components/Pki.ts): the client name its pgBackRest presents. */
export function pgbackrestClientName(hostName: string): string {
  return `postgres.${hostName}`;
}

/** pgBackRest's TLS server port on every host (pgBackRest's default, tls-server-port). */
export const PGBACKREST_SERVER_PORT = PGBACKREST_TLS_PORT;

/** postgresql.conf's archiving settings for every server of a fleet with backups. */
export function backupArchiveSettings(): [string, string][] {
  return archiveSettings(INVOCATION);
}

/**
 * pgbackrest.conf of a host (no secrets). Every host runs pgBackRest's TLS
 * server (any of them may be the primary a standby backs up from), and lets
 * every host of the fleet in by its certificate's CN. With `standbyOf`, the
 * configuration a standby takes backups with instead: this standby as pg1
 * (backup-standby copies the files from it) and the primary as pg2, reached
 * through its TLS server by the DNS name its certificate carries.
 */
export function backupConf(
  settings: BackupSettings,
  p: { dataDir: string; port: number; privateIp: string; fleet: { name: string }[]; standbyOf?: string },
): string {
  const r = settings.repository;
  const tls = { caFile: PGBACKREST_CONTAINER_PATHS.tlsCaFile, certFile: PGBACKREST_CONTAINER_PATHS.tlsCertFile, keyFile: PGBACKREST_CONTAINER_PATHS.tlsKeyFile };
  return renderPgbackrestConf({
    stanza: STANZA,
    repo: {
      endpoint: r.endpoint,
      bucket: r.bucket,
      region: r.region,
      path: r.path,
      retentionFull: r.retentionFull,
      retentionDiff: r.retentionDiff,
      ...(r.caCertificate ? { caFile: PGBACKREST_CONTAINER_PATHS.s3CaFile } : {}),
    },
    pg: { dataDir: p.dataDir, socketDir: PG_SOCKET_DIR, port: p.port },
    spoolPath: PGBACKREST_CONTAINER_PATHS.spoolPath,
    ...(p.standbyOf
      ? {
          standbyBackup: {
            primaryHost: p.standbyOf,
            primaryPort: PGBACKREST_SERVER_PORT,
            primaryDataDir: p.dataDir,
            primaryPgPort: p.port,
            primarySocketDir: PG_SOCKET_DIR,
            ...tls,
          },
        }
      : { tlsServer: { address: p.privateIp, port: PGBACKREST_SERVER_PORT, ...tls, authorizedClients: p.fleet.map((h) => pgbackrestClientName(h.name)) } }),
  });
}

/** Where a standby's backup configuration lives (its own config path, conf.d beside it). */
const STANDBY_CONFIG_PATH = `${PGBACKREST_CONTAINER_PATHS.configPath}/standby`;
const STANDBY_INVOCATION = { stanza: STANZA, configPath: STANDBY_CONFIG_PATH };

/** Whether this host is the standby named for backups. */
function isBackupStandby(settings: BackupSettings, hostName: string): boolean {
  return settings.standby === hostName;
}

/** The primary's restore from the repository (backupRestore), into an empty data directory: a new timeline that takes writes. */
export function restoreCommand(target: string, dataDir: string): string[] {
  return restoreArgv(INVOCATION, { dataDir, target: target === "latest" ? { type: "latest" } : { type: "time", time: target }, ...(target === "latest" ? {} : { targetAction: "promote" as const }) });
}

/** The host directory mounted at /etc/pgbackrest (relative to the files root). */
function confDir(hostName: string): string {
  return `${hostName}/pgbackrest`;
}

/** The files, volumes and mounts a PostgreSQL container needs for backups. */
export function backupFiles(
  name: string,
  shell: HostShell,
  p: {
    hostName: string;
    port: number;
    dataDir: string;
    privateIp: string;
    pgUid: number;
    backup: PostgresBackupArgs;
    tls: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string>; caPem: pulumi.Input<string> };
    timeoutSeconds: number;
  },
  opts: pulumi.CustomResourceOptions,
) {
  const dir = confDir(p.hostName);
  const conf = backupConf(p.backup.settings, { dataDir: p.dataDir, port: p.port, privateIp: p.privateIp, fleet: p.backup.fleet });
  const standby = isBackupStandby(p.backup.settings, p.hostName);
  const standbyConf = standby
    ? backupConf(p.backup.settings, { dataDir: p.dataDir, port: p.port, privateIp: p.privateIp, fleet: p.backup.fleet, standbyOf: p.backup.primaryName })
    : undefined;
  const file = (label: string, path: string, content: pulumi.Input<string>, mode: string, owner: string) =>
    hostFile(`${name}-pgbackrest-${label}`, shell, { path: `${dir}/${path}`, content, mode, owner, timeoutSeconds: p.timeoutSeconds }, opts);
  const s = p.backup.secrets;
  const secretsText = pulumi.secret(
    pulumi.all([s.cipherPass, s.accessKeyId, s.secretAccessKey]).apply(([cipherPass, s3Key, s3KeySecret]) => renderPgbackrestSecrets({ cipherPass, s3Key, s3KeySecret })),
  );
  const files = [
    file("conf", "pgbackrest.conf", conf, "0640", `0:${p.pgUid}`),
    file("secrets", "conf.d/secrets.conf", secretsText, "0600", `${p.pgUid}:${p.pgUid}`),
    ...(p.backup.settings.repository.caCertificate ? [file("s3-ca", "tls/s3-ca.crt", p.backup.settings.repository.caCertificate, "0644", "0:0")] : []),
    // The host's PostgreSQL certificate serves pgBackRest's TLS server and client too: its DNS names include the host's name.
    file("fleet-hosts", "fleet-hosts", renderFleetHostsFile(p.backup.fleet.map((h) => ({ name: h.name, address: h.privateIp }))), "0644", "0:0"),
    file("tls-ca", "tls/ca.crt", p.tls.caPem, "0644", "0:0"),
    file("tls-cert", "tls/pgbackrest.crt", p.tls.certPem, "0644", "0:0"),
    file("tls-key", "tls/pgbackrest.key", pulumi.secret(p.tls.keyPem), "0600", `${p.pgUid}:${p.pgUid}`),
    ...(standbyConf
      ? [file("standby-conf", "standby/pgbackrest.conf", standbyConf, "0640", `0:${p.pgUid}`), file("standby-secrets", "standby/conf.d/secrets.conf", secretsText, "0600", `${p.pgUid}:${p.pgUid}`)]
      : []),
  ];
  const spool = new docker.Volume(`${name}-pgbackrest-spool`, { name: `synaxic-${p.hostName}-pgbackrest-spool` }, opts);
  const socket = new docker.Volume(`${name}-socket`, { name: `synaxic-${p.hostName}-postgres-socket` }, opts);
  const mounts = [{ type: "bind", source: hostPath(shell, dir), target: PGBACKREST_CONTAINER_PATHS.configPath, readOnly: true }];
  const volumes = [
    { volumeName: spool.name, containerPath: PGBACKREST_CONTAINER_PATHS.spoolPath },
    { volumeName: socket.name, containerPath: PG_SOCKET_DIR },
  ];
  return { conf, standbyConf, files, spool, socket, mounts, volumes, confDigest: digest(conf) };
}

/**
 * On the primary: creates the stanza (a no-op when it exists and matches
 * this cluster) and checks that a WAL segment reaches the repository. On a
 * standby it says so and does nothing.
 */
export function stanzaStep(
  name: string,
  shell: HostShell,
  p: { containerName: string; port: number; triggers: pulumi.Input<unknown>[]; timeoutSeconds: number },
  opts: pulumi.CustomResourceOptions,
) {
  const script = [
    "set -eu",
    `if [ "$(psql -X -At --port=${p.port} --dbname=postgres -c 'SELECT pg_catalog.pg_is_in_recovery()')" = t ]; then echo "a standby: the primary creates and checks the stanza"; exit 0; fi`,
    // stanza-create needs the archive lock, which a running asynchronous archive-push may hold
    // ("[050] unable to acquire lock"): retried for up to 30 s.
    `n=0; until ${sh(stanzaCreateArgv(INVOCATION))}; do n=$((n + 1)); if [ "$n" -ge 10 ]; then echo "stanza-create failed. If pgBackRest says it cannot load an info file (FormatError, CryptoError), the repository was written with another cipher pass: set backupCipherPass to the one it was created with (the old stack's replicaCredentials.backupCipherPass), or point backupRepository.path somewhere new." >&2; exit 1; fi; echo "stanza-create: retrying in 3 s"; sleep 3; done`,
    sh(checkArgv(INVOCATION)),
    `echo "stanza ${STANZA}: created and checked (a WAL segment reached the repository)"`,
  ].join("\n");
  return remoteStep(
    name,
    shell,
    { argv: ["docker", "exec", "-i", "-u", "postgres", p.containerName, "sh", "-s"], stdin: script, triggers: p.triggers, timeoutSeconds: p.timeoutSeconds },
    opts,
  );
}

/** Which backups a host's scheduler takes (see BackupSchedulerParams.acts). */
function schedulerRole(settings: BackupSettings, hostName: string): Pick<BackupSchedulerParams, "acts" | "standbyArgv"> {
  if (settings.standby === null) return { acts: "whenPrimary" };
  if (!isBackupStandby(settings, hostName)) return { acts: "never" };
  return { acts: "always", standbyArgv: { full: backupArgv(STANDBY_INVOCATION, "full"), diff: backupArgv(STANDBY_INVOCATION, "diff") } };
}

/**
 * pgBackRest's TLS server beside a host's PostgreSQL (`pgbackrest server`, as
 * postgres): a standby taking a backup reaches the primary through it to
 * start and stop the backup and read what it copies from the primary. It
 * listens on the private address; the host firewall admits the fleet's hosts
 * only, and it admits only clients whose certificate the PostgreSQL CA signed
 * with a fleet host's CN (tls-server-auth).
 */
export function serverContainer(
  name: string,
  p: { hostName: string; image: pulumi.Input<string>; networkMode: pulumi.Input<string>; dataVolume: pulumi.Input<string>; dataDir: string; pgUid: number; files: ReturnType<typeof backupFiles>; backup: PostgresBackupArgs },
  opts: pulumi.CustomResourceOptions,
): docker.Container {
  return new docker.Container(
    name,
    {
      name: containerName(p.hostName, "pgbackrest"),
      image: p.image,
      user: `${p.pgUid}:${p.pgUid}`,
      entrypoints: serverArgv({}),
      ...baseContainer(p.networkMode),
      ...withoutSwap(p.backup.serverMemoryMiB),
      ...stopGrace(STOP_GRACE.exporter),
      volumes: [{ volumeName: p.dataVolume, containerPath: p.dataDir, readOnly: true }, ...p.files.volumes],
      mounts: p.files.mounts,
    },
    { ...opts, ...replaceInPlace, dependsOn: withAfter(opts.dependsOn, p.files.files) },
  );
}

/**
 * The drill's scratch directory, in the scheduler's state volume (the host's Docker volume disk): each drill creates
 * and removes it, and the scheduler removes what a drill stopped midway left.
 */
export const DRILL_SCRATCH_DIR = "/var/lib/synaxic-backup/drill";

/**
 * The drill's restore: the newest backup (no --set) into the scratch directory, to the end of the backup
 * (--type=immediate, then promote), archive_mode=off written into its postgresql.auto.conf (--archive-mode=off),
 * no --delta (the directory is new and empty), tablespaces inside the scratch directory.
 */
export function drillRestoreArgv(): string[] {
  return restoreArgv(INVOCATION, {
    dataDir: `${DRILL_SCRATCH_DIR}/data`,
    target: { type: "immediate" },
    targetAction: "promote",
    archiveMode: "off",
    tablespaceMapAll: `${DRILL_SCRATCH_DIR}/tablespaces`,
  });
}

/** The scheduler container beside a host's PostgreSQL (see templates/backup-scheduler.ts). */
export function schedulerContainer(
  name: string,
  shell: HostShell,
  p: {
    hostName: string;
    image: pulumi.Input<string>;
    networkMode: pulumi.Input<string>;
    port: number;
    /** The fleet's database: the drill's proof query runs in it. */
    databaseName: string;
    dataVolume: pulumi.Input<string>;
    dataDir: string;
    files: ReturnType<typeof backupFiles>;
    backup: PostgresBackupArgs;
  },
  opts: pulumi.CustomResourceOptions,
): docker.Container {
  const textfileDir = "/textfile";
  const drill = p.backup.settings.drill;
  const script = renderBackupSchedulerScript({
    argv: {
      full: backupArgv(INVOCATION, "full"),
      diff: backupArgv(INVOCATION, "diff"),
      expire: expireArgv(INVOCATION),
      verify: verifyArgv(INVOCATION),
      info: infoArgv(INVOCATION),
    },
    ...schedulerRole(p.backup.settings, p.hostName),
    fleetHostsFile: `${PGBACKREST_CONTAINER_PATHS.configPath}/fleet-hosts`,
    schedule: p.backup.settings.schedule,
    inRecoveryArgv: ["psql", "-X", "-At", `--port=${p.port}`, "--dbname=postgres", "-c", "SELECT pg_catalog.pg_is_in_recovery()"],
    textfileDir,
    stateDir: "/var/lib/synaxic-backup",
    spoolDir: PGBACKREST_CONTAINER_PATHS.spoolPath,
    hostName: p.hostName,
    drill: {
      schedule: drill ? { weekday: drill.weekday, hourUtc: drill.hourUtc } : null,
      timeoutSeconds: (drill?.timeoutMinutes ?? BACKUP_DRILL_DEFAULTS.timeoutMinutes) * 60,
      scratchDir: DRILL_SCRATCH_DIR,
      restoreArgv: drillRestoreArgv(),
      restoreCommand: archiveGetCommand(INVOCATION, { dataDir: `${DRILL_SCRATCH_DIR}/data` }),
      database: p.databaseName,
    },
  });
  const entrypoint = "/usr/local/bin/synaxic-backup-scheduler";
  const state = new docker.Volume(`${name}-state`, { name: `synaxic-${p.hostName}-backup-state` }, opts);
  return new docker.Container(
    name,
    {
      name: containerName(p.hostName, "backup"),
      image: p.image,
      entrypoints: ["/bin/bash", entrypoint],
      ...baseContainer(p.networkMode),
      ...withoutSwap(p.backup.schedulerMemoryMiB),
      ...stopGrace(STOP_GRACE.backup),
      volumes: [
        { volumeName: p.dataVolume, containerPath: p.dataDir, readOnly: true },
        ...p.files.volumes,
        { volumeName: state.name, containerPath: "/var/lib/synaxic-backup" },
        // The node exporter's textfile directory. A bind given this way (-v, HostConfig.Binds) is created when it
        // is missing, whereas a `mounts` bind (--mount) refuses a missing source (Docker docs, "Bind mounts":
        // differences between -v and --mount): the exporter that also writes there may start after this container.
        { hostPath: hostPath(shell, nodeTextfileDir(p.hostName)), containerPath: textfileDir },
      ],
      mounts: p.files.mounts,
      uploads: [upload(entrypoint, script, "0755", 0)],
    },
    { ...opts, ...replaceInPlace, dependsOn: withAfter(opts.dependsOn, p.files.files) },
  );
}
