/**
 * PostgreSQL on the test rig: servers started in host namespaces from exactly
 * the files and scripts the templates render, plus the tools scenarios,
 * benchmarks and status commands need to drive and observe them — psql as the
 * local superuser or as a remote client, LSNs, ordered table checksums, a
 * background writer that keeps a ledger of acknowledged writes, and the
 * metrics exporter.
 *
 * Layout of one server (under the net's work directory, <host>-pg/):
 *   etc/postgresql.conf, etc/hba/pg_hba.conf   rendered configuration
 *   tls/server.crt, tls/server.key, tls/ca.crt  certificate naming the host's address
 *   secrets/pgpass                              replication and rewind passwords (0600, postgres)
 *   run/                                        Unix socket
 *   data/                                       PGDATA
 *   bootstrap/permit                            the one-shot permit to initialise an empty data/ (root, 0600)
 *   entrypoint.sh                               rendered entrypoint, run as root
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Host, TestNet, waitFor, type ExecResult } from "./net";
import type { TestCa } from "./pki";
import type { PgTuneInput } from "../../lib/pgtune";
import { replicaPassfile } from "../../lib/postgresContainer";
import {
  renderConninfo,
  renderPgHba,
  renderPgpass,
  renderPostgresExporterQueries,
  renderPostgresqlConf,
  renderPrimaryEntrypoint,
  renderReplicaEntrypoint,
  renderRolesSql,
  replicaSlotName,
  type PgHbaParams,
  type PostgresConfParams,
  type ReplicaMode,
  type RoleCredentials,
} from "../../templates/postgres";
import { renderBootstrapPermit } from "../../templates/postgres-entrypoint";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The PostgreSQL 15 server binaries (pg_config's bindir, else the Debian layout). */
export function pgBinDir(): string {
  const candidates: string[] = [];
  try {
    candidates.push(execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim());
  } catch {
    /* no pg_config on PATH */
  }
  candidates.push("/usr/lib/postgresql/15/bin");
  for (const dir of candidates) {
    const postgres = join(dir, "postgres");
    if (!existsSync(postgres)) continue;
    const version = execFileSync(postgres, ["--version"], { encoding: "utf8" });
    if (/\b15\.\d+/.test(version)) return dir;
  }
  throw new Error(`PostgreSQL 15 server binaries not found (looked in ${candidates.join(", ")}); run scripts/install-test-servers.sh`);
}

function osIds(user: string): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim()),
    gid: Number(execFileSync("id", ["-g", user], { encoding: "utf8" }).trim()),
  };
}

/** An LSN ("16/B374D848") as a number of bytes. */
export function lsnToBigInt(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(lsn.trim());
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(lsn)}`);
  return (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
}

/** a - b in bytes. */
export function lsnDiff(a: string, b: string): number {
  return Number(lsnToBigInt(a) - lsnToBigInt(b));
}

/** A random password that also exercises quoting: it holds ':', '\' and a quote. */
function password(): string {
  return `${randomBytes(12).toString("base64url")}:\\'x`;
}

export interface PgRoles {
  appDatabase: string;
  app: RoleCredentials;
  replication: RoleCredentials;
  exporter: RoleCredentials;
  rewind: RoleCredentials;
}

export function makeRoles(): PgRoles {
  return {
    appDatabase: "synaxic",
    app: { name: "synaxic", password: password() },
    replication: { name: "replicator", password: password() },
    exporter: { name: "synaxic_exporter", password: password() },
    rewind: { name: "synaxic_rewind", password: password() },
  };
}

export interface PgClusterOptions {
  net: TestNet;
  ca: TestCa;
  /** Hosts that run PostgreSQL; each may stream from (or be rewound against) any other. */
  dbHosts: Host[];
  /** Hosts the application connects from. */
  appHosts: Host[];
  /** Hosts the metrics exporter connects from. */
  exporterHosts: Host[];
  tune?: PgTuneInput;
  maxSlotWalKeepSizeMB?: number;
  walKeepSizeMB?: number;
  /** Extra initdb arguments for primaries (e.g. --wal-segsize=1). */
  initdbArgs?: string[];
  /**
   * synchronousReplication any1: every server's configuration names the
   * other database hosts in synchronous_standby_names, as the stacks render
   * it. Read whenever a configuration is written, so it can be turned on
   * later (then write the configuration again and reload).
   */
  synchronous?: boolean;
}

/** One deployment on the rig: shared roles, CA and settings for its servers. */
export class PgCluster {
  readonly bin = pgBinDir();
  readonly roles = makeRoles();
  readonly net: TestNet;
  readonly ca: TestCa;
  readonly postgresIds = osIds("postgres");
  private readonly nodes = new Map<string, PgNode>();
  private clientPassfilePath?: string;

  constructor(readonly opts: PgClusterOptions) {
    this.net = opts.net;
    this.ca = opts.ca;
    // The postgres user must be able to reach its files under the net's work directory.
    chmodSync(this.net.dir, 0o711);
  }

  /** The server on this host (created on first use). */
  node(host: Host): PgNode {
    let n = this.nodes.get(host.name);
    if (!n) {
      if (!this.opts.dbHosts.includes(host)) throw new Error(`${host.name} is not one of the cluster's database hosts`);
      n = new PgNode(this, host);
      this.nodes.set(host.name, n);
    }
    return n;
  }

  hbaParams(self: Host): PgHbaParams {
    const r = this.roles;
    return {
      appDatabase: r.appDatabase,
      appUser: r.app.name,
      appAddresses: this.opts.appHosts.map((h) => h.ip),
      replicationUser: r.replication.name,
      replicaAddresses: this.opts.dbHosts.filter((h) => h !== self).map((h) => h.ip),
      rewindUser: r.rewind.name,
      exporterUser: r.exporter.name,
      exporterAddresses: this.opts.exporterHosts.map((h) => h.ip),
    };
  }

  /** A root-owned 0600 .pgpass with every role's password, for client-side tools run as root. */
  clientPassfile(): string {
    if (!this.clientPassfilePath) {
      const r = this.roles;
      this.clientPassfilePath = join(this.net.mkdir("client-secrets"), "pgpass");
      writeFileSync(
        this.clientPassfilePath,
        renderPgpass([r.app, r.replication, r.exporter, r.rewind].map((c) => ({ host: "*", port: "*", user: c.name, password: c.password }))),
        { mode: 0o600 },
      );
    }
    return this.clientPassfilePath;
  }

  /** A client connection string to one server or, for failover-aware clients, several. */
  conninfo(targets: PgNode | PgNode[], opts: ConninfoOptions = {}): string {
    const list = Array.isArray(targets) ? targets : [targets];
    return renderConninfo([
      ["host", list.map((n) => n.host.ip).join(",")],
      ["port", list.map(() => "5432").join(",")],
      ["user", opts.user ?? this.roles.app.name],
      ["dbname", opts.dbname ?? this.roles.appDatabase],
      ["passfile", opts.passfile ?? this.clientPassfile()],
      ["sslmode", opts.sslmode ?? "verify-full"],
      ["sslrootcert", this.ca.certFile],
      ["connect_timeout", opts.connectTimeout ?? 3],
      ["target_session_attrs", opts.targetSessionAttrs],
      ["replication", opts.replication ? "true" : undefined],
      ["application_name", opts.applicationName],
    ]);
  }

  /** Runs psql from a host as a network client (as root, so only its own passfile matters). */
  async remotePsql(from: Host, conninfo: string, sql: string, opts: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<ExecResult> {
    return from.exec([join(this.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", "-"], {
      input: sql,
      allowFail: opts.allowFail,
      timeoutMs: opts.timeoutMs ?? 20_000,
    });
  }
}

export interface ConninfoOptions {
  user?: string;
  dbname?: string;
  passfile?: string;
  sslmode?: string;
  connectTimeout?: number;
  targetSessionAttrs?: "read-write" | "any" | "primary" | "standby";
  replication?: boolean;
  applicationName?: string;
}

/** A running (or stopped) PostgreSQL server in one host namespace. */
export class PgNode {
  readonly dir: string;
  readonly dataDir: string;
  readonly confFile: string;
  readonly hbaFile: string;
  readonly tls: { certFile: string; keyFile: string; caFile: string };
  readonly socketDir: string;
  readonly passfile: string;
  readonly entrypointFile: string;
  /** Where the primary entrypoint looks for its bootstrap permit. */
  readonly bootstrapDir: string;
  readonly permitFile: string;
  /** The stack's bootstrapGeneration for this server (what `pulumi config set bootstrapGeneration` holds). */
  bootstrapGeneration = 0;
  /** Whether the stack's first deployment (which writes the first permit) has happened for this server. */
  private deployed = false;
  readonly slotName: string;
  readonly port = 5432;
  /** The entrypoint/server output of every start, appended. */
  readonly logFile: string;
  proc?: ChildProcess;
  /** Which server this one follows when it runs as a replica. */
  upstream?: PgNode;

  constructor(
    readonly cluster: PgCluster,
    readonly host: Host,
  ) {
    const { uid, gid } = cluster.postgresIds;
    this.dir = join(cluster.net.dir, `${host.name}-pg`);
    mkdirSync(this.dir, { mode: 0o755 });
    chmodSync(this.dir, 0o755);
    for (const d of ["etc", "etc/hba", "tls", "secrets"]) mkdirSync(join(this.dir, d), { mode: 0o755 });
    this.socketDir = join(this.dir, "run");
    mkdirSync(this.socketDir, { mode: 0o755 });
    chownSync(this.socketDir, uid, gid);
    this.dataDir = join(this.dir, "data");
    this.confFile = join(this.dir, "etc", "postgresql.conf");
    this.hbaFile = join(this.dir, "etc", "hba", "pg_hba.conf");
    this.entrypointFile = join(this.dir, "entrypoint.sh");
    this.bootstrapDir = join(this.dir, "bootstrap");
    mkdirSync(this.bootstrapDir, { mode: 0o700 });
    this.permitFile = join(this.bootstrapDir, "permit");
    this.passfile = join(this.dir, "secrets", "pgpass");
    this.logFile = join(cluster.net.dir, `${host.name}-postgres.log`);
    this.slotName = replicaSlotName(host.name);

    const cert = cluster.ca.issue(`${host.name}-pg`, [host.ip]);
    this.tls = { certFile: join(this.dir, "tls", "server.crt"), keyFile: join(this.dir, "tls", "server.key"), caFile: join(this.dir, "tls", "ca.crt") };
    copyFileSync(cert.certFile, this.tls.certFile);
    copyFileSync(cluster.ca.certFile, this.tls.caFile);
    copyFileSync(cert.keyFile, this.tls.keyFile);
    chmodSync(this.tls.certFile, 0o644);
    chmodSync(this.tls.caFile, 0o644);
    chmodSync(this.tls.keyFile, 0o600);
    chownSync(this.tls.keyFile, uid, gid);

    const r = cluster.roles;
    writeFileSync(
      this.passfile,
      // The program's own passfile (any primary: the rig's replicas follow whichever is promoted).
      replicaPassfile({ host: "*", port: "*" }, { replication: r.replication.password, rewind: r.rewind.password }),
      { mode: 0o600 },
    );
    chownSync(this.passfile, uid, gid);
  }

  get name(): string {
    return this.host.name;
  }

  /** The prefix that runs a command as postgres and replaces itself (gosu's job in the image). */
  static readonly asPostgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"];

  /** Renders and writes postgresql.conf and pg_hba.conf for this server's role. */
  writeConfig(role: "primary" | "replica", upstream?: PgNode): void {
    const c = this.cluster;
    const common = {
      name: this.name,
      dataDir: this.dataDir,
      hbaFile: this.hbaFile,
      listenAddresses: [this.host.ip],
      port: this.port,
      unixSocketDir: this.socketDir,
      tune: c.opts.tune ?? { memoryMiB: 256, cpus: 2, maxConnections: 40 },
      tls: this.tls,
      maxSlotWalKeepSizeMB: c.opts.maxSlotWalKeepSizeMB ?? 1024,
      walKeepSizeMB: c.opts.walKeepSizeMB ?? 64,
      ...(c.opts.synchronous ? { synchronousStandbyNames: c.opts.dbHosts.filter((h) => h !== this.host).map((h) => h.name) } : {}),
    };
    let params: PostgresConfParams;
    if (role === "primary") params = { ...common, role };
    else {
      if (!upstream) throw new Error("a replica needs an upstream server");
      params = {
        ...common,
        role,
        primary: { host: upstream.host.ip, port: upstream.port },
        replicationUser: c.roles.replication.name,
        passfile: this.passfile,
        applicationName: this.name,
        slotName: this.slotName,
      };
    }
    writeFileSync(this.confFile, renderPostgresqlConf(params), { mode: 0o644 });
    writeFileSync(this.hbaFile, renderPgHba(c.hbaParams(this.host)), { mode: 0o644 });
  }

  /** The rendered primary entrypoint for this server, accepting the permit of the given generation. */
  primaryEntrypoint(generation = this.bootstrapGeneration): string {
    return renderPrimaryEntrypoint({
      dataDir: this.dataDir,
      configFile: this.confFile,
      asPostgres: PgNode.asPostgres,
      binDir: this.cluster.bin,
      initdbArgs: this.cluster.opts.initdbArgs,
      bootstrap: { permitFile: this.permitFile, cluster: this.name, generation },
    });
  }

  /** What the stack's permit step does when it is created: writes the one-shot bootstrap permit (root, 0600). */
  writeBootstrapPermit(generation = this.bootstrapGeneration, cluster = this.name): void {
    writeFileSync(this.permitFile, renderBootstrapPermit({ cluster, generation, dataDir: this.dataDir }), { mode: 0o600 });
  }

  /** The rendered replica entrypoint for this server following upstream. */
  replicaEntrypoint(mode: ReplicaMode, upstream: PgNode, overrides: { dataDir?: string } = {}): string {
    const r = this.cluster.roles;
    return renderReplicaEntrypoint({
      mode,
      dataDir: overrides.dataDir ?? this.dataDir,
      configFile: this.confFile,
      asPostgres: PgNode.asPostgres,
      binDir: this.cluster.bin,
      primary: { host: upstream.host.ip, port: upstream.port },
      replicationUser: r.replication.name,
      rewindUser: r.rewind.name,
      slotName: this.slotName,
      applicationName: this.name,
      passfile: this.passfile,
      caFile: this.tls.caFile,
    });
  }

  /**
   * Writes the configuration and runs the primary entrypoint. The first time
   * (the stack's first deployment) the permit is written first, so that an
   * empty data directory is initialised; later starts get no permit.
   */
  async startPrimary(): Promise<void> {
    if (!this.deployed) {
      this.writeBootstrapPermit();
      this.deployed = true;
    }
    this.writeConfig("primary");
    this.upstream = undefined;
    await this.launch(this.primaryEntrypoint());
  }

  /** Writes the replica configuration and runs the replica entrypoint in the given mode. */
  async startReplica(mode: ReplicaMode, upstream: PgNode, timeoutMs = 60_000): Promise<void> {
    this.writeConfig("replica", upstream);
    this.upstream = upstream;
    await this.launch(this.replicaEntrypoint(mode, upstream), timeoutMs);
  }

  /** Runs an entrypoint in the foreground, for cases where it must refuse to start. */
  async runEntrypoint(script: string, timeoutMs = 15_000): Promise<ExecResult> {
    const file = join(this.dir, `entrypoint-check-${Date.now()}.sh`);
    writeFileSync(file, script, { mode: 0o700 });
    return this.host.exec(["bash", file], { allowFail: true, timeoutMs });
  }

  /** Starts a rendered entrypoint as the server's daemon and waits until it accepts connections. */
  async launch(script: string, timeoutMs = 60_000): Promise<void> {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) throw new Error(`${this.name}: already running`);
    writeFileSync(this.entrypointFile, script, { mode: 0o700 });
    const before = this.logLength();
    const { proc } = this.host.spawnDaemon("postgres", ["bash", this.entrypointFile]);
    this.proc = proc;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`${this.name}: entrypoint exited (${proc.exitCode ?? proc.signalCode}):\n${this.log(before).slice(-3000)}`);
      }
      if ((await this.psql("SELECT 1", { allowFail: true, timeoutMs: 5000 })).code === 0) return;
      if (Date.now() > deadline) throw new Error(`${this.name}: not accepting connections after ${timeoutMs} ms:\n${this.log(before).slice(-3000)}`);
      await sleep(150);
    }
  }

  /** The output of this server's starts since the given offset (see logLength). */
  log(since = 0): string {
    return readLog(this.logFile).slice(since);
  }

  logLength(): number {
    return readLog(this.logFile).length;
  }

  running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  private async waitExit(timeoutMs = 30_000): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    await waitFor(`${this.name} to exit`, async () => proc.exitCode !== null || proc.signalCode !== null, timeoutMs, 50);
  }

  /** Clean (fast) or crash-like (immediate) shutdown with pg_ctl. */
  async stop(mode: "fast" | "immediate" = "fast"): Promise<void> {
    if (!this.running()) return;
    await this.host.exec([join(this.cluster.bin, "pg_ctl"), "stop", "-D", this.dataDir, "-m", mode, "-w", "-t", "60"], { user: "postgres", timeoutMs: 70_000 });
    await this.waitExit();
  }

  /** SIGKILL the postmaster and all its children at once, as `docker kill` would. */
  async kill(): Promise<void> {
    const pid = this.postmasterPid();
    if (pid === undefined) throw new Error(`${this.name}: not running`);
    process.kill(pid, "SIGSTOP");
    for (const child of childPids(pid)) {
      try {
        process.kill(child, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    process.kill(pid, "SIGKILL");
    await this.waitExit();
    await waitFor(`${this.name}'s backends to go`, async () => childPids(pid).length === 0 && !existsSync(`/proc/${pid}`), 10_000, 50);
  }

  postmasterPid(): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
      return pid > 0 && existsSync(`/proc/${pid}`) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Empties the data directory (re-initialisation). */
  wipe(): void {
    if (this.running()) throw new Error(`${this.name}: stop it before wiping its data`);
    rmSync(this.dataDir, { recursive: true, force: true });
    mkdirSync(this.dataDir, { mode: 0o700 });
  }

  /** Runs SQL as the local superuser over the Unix socket; stdout with -At formatting. */
  async psql(sql: string, opts: { db?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<ExecResult> {
    return this.host.exec(
      [join(this.cluster.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", this.socketDir, "-p", String(this.port), "-U", "postgres", "-d", opts.db ?? "postgres", "-f", "-"],
      { user: "postgres", input: sql, allowFail: opts.allowFail, timeoutMs: opts.timeoutMs ?? 30_000 },
    );
  }

  /** Rows of a query (fields split on '|'). */
  async query(sql: string, db?: string): Promise<string[][]> {
    const r = await this.psql(sql, { db });
    return r.stdout
      .split("\n")
      .filter((l) => l.length > 0)
      .map((l) => l.split("|"));
  }

  /** The single value a query returns. */
  async value(sql: string, db?: string): Promise<string> {
    const r = await this.psql(sql, { db });
    return r.stdout.trim();
  }

  async isInRecovery(): Promise<boolean> {
    return (await this.value("SELECT pg_is_in_recovery()")) === "t";
  }

  /** The WAL position: written on a primary, replayed on a standby. */
  async lsn(): Promise<string> {
    return this.value("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END");
  }

  async replayLsn(): Promise<string> {
    return this.value("SELECT pg_last_wal_replay_lsn()");
  }

  async systemIdentifier(): Promise<string> {
    return this.value("SELECT system_identifier FROM pg_control_system()");
  }

  /** The timeline this server writes (primary) or replays (standby). */
  async timeline(): Promise<number> {
    const v = await this.value(
      "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver)::text ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
    );
    return (await this.isInRecovery()) ? Number(v) : parseInt(v, 16);
  }

  /** Row count and an md5 over all rows in key order: equal on two servers means equal contents. */
  async tableChecksum(table: string, db = this.cluster.roles.appDatabase, orderBy = "id"): Promise<{ rows: number; md5: string }> {
    const [row] = await this.query(
      `SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t.${orderBy})), '') FROM ${table} t`,
      db,
    );
    return { rows: Number(row![0]), md5: row![1]! };
  }

  /** What a status command shows: role, timeline, WAL position, the replicas streaming from it and its slots. */
  async replicationStatus(): Promise<ReplicationStatus> {
    const inRecovery = await this.isInRecovery();
    const replicas = (
      await this.query(
        "SELECT r.application_name, coalesce(host(r.client_addr), 'local'), r.state, coalesce(s.ssl, false), " +
          "coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, r.replay_lsn), 0), " +
          "coalesce(extract(epoch FROM r.replay_lag), 0) FROM pg_stat_replication r LEFT JOIN pg_stat_ssl s USING (pid) ORDER BY 1",
      )
    ).map(([name, address, state, ssl, lagBytes, replayLagSeconds]) => ({
      name: name!,
      address: address!,
      state: state!,
      ssl: ssl === "t",
      lagBytes: Number(lagBytes),
      replayLagSeconds: Number(replayLagSeconds),
    }));
    const slots = (
      await this.query(
        "SELECT slot_name, active, coalesce(wal_status, ''), coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn), 0) " +
          "FROM pg_replication_slots ORDER BY 1",
      )
    ).map(([name, active, walStatus, retainedBytes]) => ({ name: name!, active: active === "t", walStatus: walStatus!, retainedBytes: Number(retainedBytes) }));
    return { name: this.name, role: inRecovery ? "replica" : "primary", timeline: await this.timeline(), lsn: await this.lsn(), replicas, slots };
  }

  /** Waits until a standby has replayed at least this LSN. */
  async waitReplayed(lsn: string, timeoutMs = 60_000): Promise<void> {
    await waitFor(`${this.name} to replay up to ${lsn}`, async () => lsnDiff(await this.replayLsn(), lsn) >= 0, timeoutMs, 100);
  }

  /** On this primary: waits until the replica streams from it. */
  async waitStreaming(replica: PgNode, timeoutMs = 60_000): Promise<void> {
    await waitFor(
      `${replica.name} to stream from ${this.name}`,
      async () => (await this.value(`SELECT count(*) FROM pg_stat_replication WHERE application_name = '${replica.name}' AND state = 'streaming'`)) === "1",
      timeoutMs,
      100,
    );
  }
}

export interface ReplicationStatus {
  name: string;
  role: "primary" | "replica";
  timeline: number;
  /** Written (primary) or replayed (replica) WAL position. */
  lsn: string;
  replicas: { name: string; address: string; state: string; ssl: boolean; lagBytes: number; replayLagSeconds: number }[];
  slots: { name: string; active: boolean; walStatus: string; retainedBytes: number }[];
}

function readLog(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** PIDs whose parent is pid. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** Bootstraps a primary: entrypoint (initdb), then the rendered roles SQL on stdin. */
export async function startPrimaryWithRoles(node: PgNode): Promise<void> {
  await node.startPrimary();
  const r = node.cluster.roles;
  await node.psql(renderRolesSql({ appDatabase: r.appDatabase, app: r.app, replication: r.replication, exporter: r.exporter, rewind: r.rewind }));
}

/** SQL that creates the writer's ledger table, owned by the app role. */
export function ledgerTableSql(table: string, owner: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table} (id bigint PRIMARY KEY, payload text NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp());\nALTER TABLE ${table} OWNER TO ${owner};\n`;
}

export interface Ack {
  id: number;
  /** Address of the server that acknowledged the write (inet_server_addr()). */
  server: string;
  /** Date.now() when the acknowledgement arrived. */
  at: number;
}

export interface LedgerWriterOptions {
  cluster: PgCluster;
  /** Host the writes come from (an app host). */
  from: Host;
  /** Connection string, or a function giving the current one (read at each reconnect). */
  conninfo: string | (() => string);
  table?: string;
  /** Bytes of payload per row; each write's WAL is at least this big. */
  payloadBytes?: number;
  /** Pause between writes in ms (default 2). */
  intervalMs?: number;
  /** Give up on a write after this long and reconnect (default 10 s). */
  writeTimeoutMs?: number;
}

type Outcome = "acked" | "failed" | "unknown";

/**
 * Writes rows one at a time through a long-lived psql session and keeps a
 * ledger of every write the server acknowledged (its INSERT ... RETURNING
 * came back). Reconnects whenever the session breaks, so it keeps writing
 * through restarts and failovers (give a multi-host conninfo with
 * target_session_attrs=read-write to follow the primary).
 */
export class LedgerWriter {
  readonly acks: Ack[] = [];
  failed = 0;
  unknown = 0;
  reconnects = 0;
  readonly table: string;
  readonly payloadBytes: number;
  private running = false;
  private loop?: Promise<void>;
  private child?: ChildProcess;
  private buffer = "";
  private stderrTail = "";
  private pending?: { id: number; server?: string; resolve: (o: Outcome) => void };
  private nextId: number;

  constructor(readonly opts: LedgerWriterOptions) {
    this.table = opts.table ?? "ledger";
    this.payloadBytes = opts.payloadBytes ?? 200;
    // Ids unique across writers and runs on the same table.
    this.nextId = Date.now() * 1000;
  }

  get ackCount(): number {
    return this.acks.length;
  }

  ackedIds(): number[] {
    return this.acks.map((a) => a.id);
  }

  lastError(): string {
    return this.stderrTail;
  }

  start(): this {
    if (this.running) throw new Error("writer already running");
    this.running = true;
    this.loop = this.run();
    return this;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null) {
      child.stdin?.end();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          child.kill("SIGKILL");
          resolve();
        }, 5000);
        child.once("exit", () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits until `more` further writes have been acknowledged. */
  async waitForAcks(more: number, timeoutMs = 30_000): Promise<void> {
    const target = this.acks.length + more;
    await waitFor(`${more} more acknowledged writes (last error: ${this.stderrTail.trim().split("\n").pop() ?? ""})`, async () => this.acks.length >= target, timeoutMs, 50);
  }

  /** Acknowledged writes of one server. */
  acksFrom(server: string): Ack[] {
    return this.acks.filter((a) => a.server === server);
  }

  private connect(): ChildProcess {
    const conninfo = typeof this.opts.conninfo === "function" ? this.opts.conninfo() : this.opts.conninfo;
    const psql = join(this.opts.cluster.bin, "psql");
    const child = spawn("ip", ["netns", "exec", this.opts.from.ns, psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-d", conninfo], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.opts.cluster.net.procs.push(child);
    this.buffer = "";
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => this.onStdout(d));
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-2000);
    });
    child.stdin!.on("error", () => undefined);
    child.on("exit", () => {
      if (this.child === child) this.child = undefined;
      this.settle("unknown");
    });
    return child;
  }

  private onStdout(data: string): void {
    this.buffer += data;
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      const p = this.pending;
      if (!p) continue;
      if (line === `@@${p.id}`) this.settle(p.server ? "acked" : "failed");
      else {
        const m = /^(\d+)\|(.*)$/.exec(line);
        if (m && Number(m[1]) === p.id) p.server = m[2]!;
      }
    }
  }

  private settle(outcome: Outcome): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    if (outcome === "acked") this.acks.push({ id: p.id, server: p.server!, at: Date.now() });
    p.resolve(outcome);
  }

  private write(id: number): Promise<Outcome> {
    const child = this.child!;
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
      }, this.opts.writeTimeoutMs ?? 10_000);
      this.pending = {
        id,
        resolve: (o) => {
          clearTimeout(timer);
          resolve(o);
        },
      };
      const sql = `INSERT INTO ${this.table} (id, payload) VALUES (${id}, repeat('x', ${this.payloadBytes})) RETURNING id, inet_server_addr();\n\\echo @@${id}\n`;
      child.stdin!.write(sql);
    });
  }

  private async run(): Promise<void> {
    while (this.running) {
      if (!this.child) {
        this.child = this.connect();
        this.reconnects++;
      }
      const outcome = await this.write(this.nextId++);
      if (outcome === "acked") {
        if (this.opts.intervalMs !== 0) await sleep(this.opts.intervalMs ?? 2);
        continue;
      }
      if (outcome === "failed") {
        this.failed++;
        // e.g. a read-only server: reconnect so target_session_attrs can pick the primary.
        this.child?.kill("SIGKILL");
        this.child = undefined;
      } else this.unknown++;
      await sleep(100);
    }
  }
}

/** Compares the writer's ledger with a server: acknowledged ids the server does not have. */
export async function missingAcks(node: PgNode, ackList: readonly Ack[], table = "ledger"): Promise<Ack[]> {
  // Only what was acknowledged before the query: a running writer keeps appending.
  const acks = [...ackList];
  if (acks.length === 0) return [];
  const present = new Set(
    (await node.query(`SELECT id FROM ${table} WHERE id >= ${acks.reduce((m, a) => Math.min(m, a.id), Infinity)}`, node.cluster.roles.appDatabase)).map((r) => Number(r[0])),
  );
  return acks.filter((a) => !present.has(a.id));
}

/** prometheus-postgres-exporter with the rendered custom queries, run from a monitoring host. */
export class PgExporter {
  private constructor(
    readonly url: string,
    readonly proc: ChildProcess,
    readonly log: string,
  ) {}

  static async start(cluster: PgCluster, from: Host, target: PgNode, port: number): Promise<PgExporter> {
    const dir = cluster.net.mkdir(`exporter-${target.name}`);
    const queries = join(dir, "queries.yaml");
    const passFile = join(dir, "password");
    writeFileSync(queries, renderPostgresExporterQueries(), { mode: 0o644 });
    writeFileSync(passFile, cluster.roles.exporter.password, { mode: 0o600 });
    const listen = `${from.ip}:${port}`;
    const { proc, log } = from.spawnDaemon(`exporter-${target.name}`, ["prometheus-postgres-exporter", `--web.listen-address=${listen}`, `--extend.query-path=${queries}`], {
      env: {
        DATA_SOURCE_URI: `${target.host.ip}:${target.port}/postgres?sslmode=verify-full&sslrootcert=${encodeURIComponent(cluster.ca.certFile)}`,
        DATA_SOURCE_USER: cluster.roles.exporter.name,
        DATA_SOURCE_PASS_FILE: passFile,
      },
    });
    const e = new PgExporter(`http://${listen}/metrics`, proc, log);
    await waitFor(`exporter for ${target.name} to serve metrics`, async () => (await e.scrape()).includes("pg_up 1"), 30_000, 200);
    return e;
  }

  async scrape(): Promise<string> {
    const res = await fetch(this.url, { signal: AbortSignal.timeout(10_000) });
    return res.text();
  }

  /** Samples of one metric: labels and value. */
  async samples(name: string): Promise<{ labels: Record<string, string>; value: number }[]> {
    return parseMetrics(await this.scrape()).filter((s) => s.name === name);
  }
}

/** Parses Prometheus text exposition format (enough for the exporter's output). */
export function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, "$1");
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}
