/**
 * The fleet command as an operator runs it (`node scripts/fleet.cjs`, the
 * compiled command behind `npm run fleet`), against two hosts of the rig,
 * each a network namespace with its own sshd and dockerd (test/engine/hosts.ts
 * EngineHost): real `ssh` with the host key pinned from the stack outputs,
 * real `docker exec`, `docker logs` and `docker restart` against each host's
 * daemon, real psql, redis-cli and pgbackrest.
 *
 * Why these choices: the fleet's images and a Pulumi deployment would make
 * this the engine tier (minutes, gigabytes). Instead the servers are the
 * rig's own (PostgreSQL primary and streaming replica, Redis master and TLS
 * replica, started from the rendered templates as in status.test.ts), and
 * each host's containers named synaxic-<host>-<service> are real containers
 * of a tiny image (the machine's passwd and group only) that share the
 * host's network (as the fleet's containers do) and bind the machine's /usr
 * read-only, the server's socket directory at /var/run/postgresql, the CA at
 * the Redis container's path and pgBackRest's config at /etc/pgbackrest.
 * What runs in them is the fleet's argv unchanged. Only the Pulumi CLI is a
 * stand-in: a `pulumi` on PATH printing the stacks' outputs as
 * `pulumi stack output --json --show-secrets` does.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EngineRig, type EngineHost } from "../engine/hosts";
import { waitFor, type Host } from "../rig/net";
import { makeCa } from "../rig/pki";
import { PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";
import { randomRedisUsers, RedisServer, waitInSync } from "../rig/redis";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { sh } from "../../lib/shell";

const REPO = join(__dirname, "..", "..");
const FLEET = join(REPO, "scripts", "fleet.cjs");
const MAIN_STACK = "flc/synaxic/main";
const IMAGE = "flc-root:1";

let rig: EngineRig;
let cluster: PgCluster;
let main: PgNode;
let replica: PgNode;
const redis = new Map<string, RedisServer>();
const users = randomRedisUsers();
let binDir: string;
let backupDir: string;
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The fleet command with the stand-in pulumi on PATH and the operator's key. */
function fleet(args: string[], opts: { input?: string; timeoutMs?: number; identity?: boolean } = {}): Promise<Run> {
  // Options before the command's own arguments: anything after "--" goes to psql or redis-cli.
  const argv = [FLEET, ...args.slice(0, 1), "--main", MAIN_STACK, ...(opts.identity === false ? [] : ["--identity", rig.operator.privateKeyFile]), ...args.slice(1)];
  return new Promise((resolve) => {
    const start = performance.now();
    const child = spawn(process.execPath, argv, { env: { ...process.env, PATH: `${binDir}:${process.env.PATH}`, SSH_AUTH_SOCK: "" }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, ms: performance.now() - start });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
  });
}

/**
 * The fleet command with a terminal: util-linux `script` runs it on a new
 * pseudo-terminal (script(1): "-c: run the command rather than an
 * interactive shell", run by $SHELL -c; -q quiet, -f flush, -e return the child's exit code),
 * so its standard input is a TTY. `steps` are written one by one, each once
 * the output so far matches its `after`.
 */
function fleetOnTerminal(args: string[], steps: { after: RegExp; send: string; check?: () => void }[], timeoutMs = 60_000): Promise<Run> {
  // A window size, as a terminal emulator sets one: ssh -t passes it to the host's pty and docker exec -it to the
  // container's; without it redis-cli's line editor asks the terminal for its cursor position (ESC [6n) and waits.
  const cmd = `stty rows 40 cols 120 && exec ${sh([process.execPath, FLEET, ...args.slice(0, 1), "--main", MAIN_STACK, "--identity", rig.operator.privateKeyFile, ...args.slice(1)])}`;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn("script", ["-qfec", cmd, "/dev/null"], { env: { ...process.env, PATH: `${binDir}:${process.env.PATH}`, SSH_AUTH_SOCK: "", TERM: "dumb" }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let step = 0;
    const advance = () => {
      while (step < steps.length && steps[step]!.after.test(out)) {
        try {
          steps[step]!.check?.();
        } catch (e) {
          child.kill("SIGKILL");
          reject(e);
          return;
        }
        child.stdin.write(steps[step]!.send);
        step++;
      }
    };
    let cursorQueries = 0;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      // Answer "where is the cursor?" (CSI 6 n, Device Status Report) as a terminal does, with a Cursor Position
      // Report (CSI row ; column R; xterm ctlseqs): redis-cli's line editor asks when the terminal's width reads 0,
      // as it can before docker exec has passed the size on.
      const asked = out.split("\x1b[6n").length - 1;
      for (; cursorQueries < asked; cursorQueries++) child.stdin.write(cursorQueries % 2 === 0 ? "\x1b[1;1R" : "\x1b[1;120R");
      advance();
    });
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout: out, stderr: `${step}/${steps.length} steps sent`, ms: performance.now() - start });
    });
  });
}

/** An image holding only the machine's users and groups, and the merged-/usr links: everything else is bound in. */
function buildImage(dir: string): string {
  const root = join(dir, "rootfs");
  for (const d of ["etc", "usr", "tmp", "proc", "sys", "dev", "var/run", "etc/synaxic/tls", "etc/pgbackrest", "run"]) mkdirSync(join(root, d), { recursive: true });
  chmodSync(join(root, "tmp"), 0o1777);
  for (const f of ["passwd", "group"]) copyFileSync(join("/etc", f), join(root, "etc", f));
  for (const l of ["bin", "lib", "lib64", "sbin"]) symlinkSync(`usr/${l}`, join(root, l));
  const tar = join(dir, "rootfs.tar");
  const r = spawnSync("tar", ["-C", root, "-cf", tar, "."]);
  if (r.status !== 0) throw new Error(`tar: ${r.stderr}`);
  return tar;
}

async function docker(h: EngineHost, args: string[]): Promise<string> {
  return (await h.docker(args, { timeoutMs: 60_000 })).stdout.trim();
}

/** The host's containers: postgres and redis (exec targets on the rig's servers), app (a logger). */
async function startContainers(h: EngineHost, pg: PgNode, rs: RedisServer, pgbackrestConf: string, tar: string): Promise<void> {
  await docker(h, ["import", tar, IMAGE]);
  const common = ["run", "-d", "--network", "host", "-v", "/usr:/usr:ro"];
  await docker(h, [
    ...common,
    "--name", `synaxic-${h.name}-postgres`,
    "-v", `${pg.socketDir}:/var/run/postgresql`,
    "-v", `${pgbackrestConf}:/etc/pgbackrest:ro`,
    "-v", `${backupDir}/repo:${backupDir}/repo`,
    "-e", `PATH=${cluster.bin}:/usr/bin:/bin`,
    IMAGE, "sleep", "infinity",
  ]);
  await docker(h, [...common, "--name", `synaxic-${h.name}-redis`, "-v", `${rs.caFile}:/etc/synaxic/tls/ca.crt:ro`, IMAGE, "sleep", "infinity"]);
  // The app in a deploy slot (templates/app.ts): slot a on main, slot b on the replicas.
  await docker(h, [...common, "--name", `synaxic-${h.name}-app-${h.name === "main" ? "a" : "b"}`, IMAGE, "sh", "-c", 'trap "exit 0" TERM; i=0; while :; do i=$((i+1)); echo "flc line $i"; sleep 0.2; done']);
}

function stackOutputs(): Record<string, Record<string, unknown>> {
  const ports = { http: 80, https: 443, postgres: 5432, redis: 6380, app: 8080, prometheus: 9090, grafana: 3000, nodeExporter: 9100, postgresExporter: 9187, redisExporter: 9121 };
  return {
    [MAIN_STACK]: {
      publicAddress: main.host.ip,
      hostKey: rig.host("main").hostKeyPublic,
      sshUser: "root",
      postgresMode: "primary",
      fleet: {
        version: 1,
        mainPrivateIp: main.host.ip,
        databaseName: cluster.roles.appDatabase,
        ports,
        replicas: [{ name: "replica-1", privateIp: replica.host.ip, slotName: replica.slotName }],
        redisUsers: { app: users.app.name, replication: users.replication.name, exporter: users.exporter.name, admin: users.admin.name },
        backup: { repository: { endpoint: "posix", bucket: "-", region: "-", path: "/repo", retentionFull: 2, retentionDiff: 7 }, schedule: { fullWeekday: 0, hourUtc: 1, verifyWeekday: 3 }, standby: null },
      },
      replicaCredentials: { redisAdmin: users.admin.password },
    },
    "flc/synaxic/replica-1": {
      replicaName: "replica-1",
      slotName: replica.slotName,
      publicAddress: replica.host.ip,
      privateIp: replica.host.ip,
      postgresMode: "replica",
      redisRole: "replica",
      hostKey: rig.host("replica-1").hostKeyPublic,
      sshUser: "root",
    },
  };
}

/** Every process's argv on this machine (the hosts' and their containers' included: one kernel). */
function allCmdlines(): string[] {
  const out: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      out.push(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" "));
    } catch {
      /* gone */
    }
  }
  return out;
}

const sessionDirs = () => readdirSync("/dev/shm").filter((d) => d.startsWith("synaxic-fleet."));

beforeAll(async () => {
  rig = await EngineRig.create(["main", "replica-1"]);
  const net = rig.net;
  const hosts = ["main", "replica-1"].map((n) => net.host(n)) as [Host, Host];
  const ca = makeCa("flc-ca", net.mkdir("flc-ca"));
  cluster = new PgCluster({ net, ca, dbHosts: hosts, appHosts: [hosts[0]], exporterHosts: [hosts[0]] });
  main = cluster.node(hosts[0]);
  replica = cluster.node(hosts[1]);

  // pgBackRest: a repository on this machine's disk, the fleet's stanza, archiving from the primary.
  backupDir = net.mkdir("flc-backup");
  chmodSync(backupDir, 0o755);
  mkdirSync(join(backupDir, "repo"));
  mkdirSync(join(backupDir, "conf"));
  spawnSync("chown", ["postgres:postgres", join(backupDir, "repo")]);
  writeFileSync(
    join(backupDir, "conf", "pgbackrest.conf"),
    [
      "[global]",
      `repo1-path=${backupDir}/repo`,
      "repo1-retention-full=2",
      "log-level-file=off",
      "log-level-console=warn",
      "start-fast=y",
      "",
      "[synaxic]",
      `pg1-path=${main.dataDir}`,
      `pg1-port=${main.port}`,
      `pg1-socket-path=${main.socketDir}`,
      "",
    ].join("\n"),
    { mode: 0o644 },
  );
  const pgbackrest = (args: string[]) => main.host.exec(["pgbackrest", `--config-path=${backupDir}/conf`, "--stanza=synaxic", ...args], { user: "postgres", timeoutMs: 120_000 });

  redis.clear();
  const acl = renderRedisAcl(users);
  const startRedis = async (h: Host, masterHost?: string) => {
    const cert = ca.issue(`redis-${h.name}`, [h.ip, "127.0.0.1"]);
    const s = RedisServer.create(net, h, h.name, { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    redis.set(h.name, s);
    const common = { bind: [h.ip, "127.0.0.1"], port: s.port, ...s.paths, replDisklessSyncDelay: 0, announce: { ip: h.ip, port: s.port } };
    await s.start(
      masterHost
        ? renderRedisConf({ ...common, role: "replica", masterHost, masterPort: 6380, masterUser: users.replication.name, masterPassword: users.replication.password })
        : renderRedisConf({ ...common, role: "master" }),
      acl,
    );
  };

  await Promise.all([startPrimaryWithRoles(main), startRedis(hosts[0])]);
  await main.psql(`ALTER SYSTEM SET archive_mode = on; ALTER SYSTEM SET archive_command = ${pgString(sh(["pgbackrest", `--config-path=${backupDir}/conf`, "--stanza=synaxic", "archive-push", "%p"]))};`);
  await main.stop("fast");
  await main.startPrimary();
  await pgbackrest(["stanza-create"]);
  await pgbackrest(["--type=full", "backup"]);
  await Promise.all([replica.startReplica("replica", main), startRedis(hosts[1], main.host.ip)]);
  await main.waitStreaming(replica);
  await waitInSync(hosts[1], redis.get("main")!.target, redis.get("replica-1")!.localTarget, users.admin);

  const tar = buildImage(net.mkdir("flc-image"));
  await startContainers(rig.host("main"), main, redis.get("main")!, join(backupDir, "conf"), tar);
  await startContainers(rig.host("replica-1"), replica, redis.get("replica-1")!, join(backupDir, "conf"), tar);

  // The stand-in Pulumi CLI: `pulumi stack output --json --show-secrets --stack <name>`.
  binDir = net.mkdir("flc-bin");
  const outs = stackOutputs();
  for (const [name, o] of Object.entries(outs)) writeFileSync(join(binDir, `${name.replace(/\//g, "_")}.json`), JSON.stringify(o));
  writeFileSync(join(binDir, "pulumi"), `#!/bin/sh\nf="${binDir}/$(printf '%s' "$6" | tr / _).json"\n[ -f "$f" ] || { echo "error: no stack named '$6' found" >&2; exit 255; }\ncat "$f"\n`, { mode: 0o755 });
  // A build first, if the command's sources changed since the last one: the tests below time and read a plain start.
  const build = await fleet(["--help"], { identity: false, timeoutMs: 180_000 });
  if (build.code !== 0) throw new Error(`the fleet command does not start: ${build.stderr}`);
  console.log(`[fleet] rig up: ${elapsed()}`);
}, 600_000);

afterAll(async () => {
  for (const s of redis.values()) await s.stop().catch(() => undefined);
  await rig?.destroy();
});

function pgString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

describe("fleet command against hosts with sshd and dockerd", () => {
  it("starts in well under a second (compiled): --help", async () => {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await fleet(["--help"], { identity: false });
      expect(r.code).toBe(0);
      times.push(r.ms);
    }
    console.log(`[fleet] --help: ${times.map((t) => `${t.toFixed(0)} ms`).join(", ")}`);
    expect(Math.min(...times)).toBeLessThan(1000);
  });

  it("status finds replica-1's stack from the main stack, and reports timeline, uptime, the archiver and the newest backup from each host", async () => {
    const r = await fleet(["status"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Verdict: HEALTHY \(1 replica expected\)$/m);
    expect(r.stdout).toMatch(new RegExp(`^replica-1: standby, WAL receiver streaming from ${main.host.ip.replace(/\./g, "\\.")}:5432 \\(slot ${replica.slotName}\\)`, "m"));
    expect(r.stdout).toMatch(/^main: timeline 1, up \d+ (s|min) \(since \d{4}-\d\d-\d\d.*\), archiver: [1-9]\d* archived, last [0-9A-F]{24}(\.[0-9A-F]{8}\.backup)? \d+ (s|min) ago, none failed$/m);
    expect(r.stdout).toMatch(/^replica-1: timeline 1, up \d+ (s|min) /m);
    expect(r.stdout.match(/^ {2}backups: newest full \d{8}-\d{6}F, \d+ (s|min) old; 1 in the repository, stanza synaxic ok, WAL archived up to [0-9A-F]{24}$/gm)).toHaveLength(2);

    const json = await fleet(["status", "--json"]);
    const report = JSON.parse(json.stdout);
    // What pgBackRest says itself, read here without the fleet command.
    const direct = JSON.parse((await main.host.exec(["pgbackrest", `--config-path=${backupDir}/conf`, "--stanza=synaxic", "--output=json", "info"], { user: "postgres" })).stdout);
    const label = direct[0].backup[0].label;
    for (const h of [report.facts.main, ...report.facts.replicas]) {
      expect(h.backup.ok, JSON.stringify(h.backup)).toBe(true);
      expect(h.backup.value.newest).toMatchObject({ label, type: "full", stoppedAt: direct[0].backup[0].timestamp.stop });
    }
    const pg = report.facts.main.postgres.value;
    expect(pg.timeline).toBe(1);
    expect(pg.archiveMode).toBe("on");
    const archived = Number((await main.value("SELECT archived_count FROM pg_stat_archiver")).trim());
    expect(pg.archiver.archivedCount).toBeGreaterThan(0);
    expect(pg.archiver.archivedCount).toBeLessThanOrEqual(archived);
    expect(json.stdout).not.toContain(users.admin.password);
    console.log(`[fleet] status: ${json.ms.toFixed(0)} ms; ${elapsed()}`);
  });

  it("logs <host> <service>: docker logs --tail N of synaxic-<host>-<service> (the app's in whichever deploy slot runs); -f follows until stopped", async () => {
    const r = await fleet(["logs", "main", "app", "--tail", "3"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(3);
    const n = lines.map((l) => Number(/^flc line (\d+)$/.exec(l)![1]));
    expect([n[1]! - n[0]!, n[2]! - n[1]!]).toEqual([1, 1]);

    // -f: new lines keep coming; the command is stopped from outside, as with Ctrl-C.
    const child = spawn(process.execPath, [FLEET, "logs", "replica-1", "app", "-f", "--tail", "1", "--main", MAIN_STACK, "--identity", rig.operator.privateKeyFile], {
      env: { ...process.env, PATH: `${binDir}:${process.env.PATH}`, SSH_AUTH_SOCK: "" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    await waitFor("five followed lines", async () => out.trim().split("\n").length >= 5, 20_000, 100);
    process.kill(-child.pid!, "SIGINT");
    const followed = out.trim().split("\n").map((l) => Number(/^flc line (\d+)$/.exec(l)![1]));
    expect(followed.slice(1).map((v, i) => v - followed[i]!)).toEqual(followed.slice(1).map(() => 1));

    const bad = await fleet(["logs", "main", "sshd"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('"sshd" is not a service of the fleet');
  });

  it("restart <host> <service>: docker restart of the fleet's container, nothing else", async () => {
    const h = rig.host("main");
    const startedAt = () => docker(h, ["inspect", "-f", "{{.State.StartedAt}}", "synaxic-main-app-a"]);
    const before = await startedAt();
    const r = await fleet(["restart", "main", "app"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("restarted synaxic-main-app-a on main\n");
    expect(await startedAt()).not.toBe(before);
    // The logger started over.
    const logs = await docker(h, ["logs", "--since", before, "synaxic-main-app-a"]);
    expect(logs).toMatch(/^flc line 1$/m);

    const refused = await fleet(["restart", "main", "dockerd"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('"dockerd" is not a service of the fleet');
    // A service of the fleet this host does not run: docker's own answer.
    const missing = await fleet(["restart", "replica-1", "grafana"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/docker restart on replica-1 failed \(exit 1\): .*No such container: synaxic-replica-1-grafana/);
  });

  it("psql without a terminal: SQL from stdin on the primary (the default), on a replica with psql's own arguments", async () => {
    const r = await fleet(["psql"], { input: "SELECT current_user, current_database(), 40 + 2 AS answer;\n" });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("fleet psql: the primary is main\n");
    expect(r.stdout).toMatch(new RegExp(`postgres +\\| ${cluster.roles.appDatabase} +\\| +42`));
    const standby = await fleet(["psql", "replica-1", "--db", "postgres", "--", "-At", "-c", "SELECT pg_is_in_recovery()"]);
    expect(standby.code).toBe(0);
    expect(standby.stdout).toBe("t\n");
  });

  it("psql with a terminal: ssh -t and docker exec -it give psql a terminal (its prompt), the session's answers come back", async () => {
    const r = await fleetOnTerminal(
      ["psql"],
      [
        { after: new RegExp(`${cluster.roles.appDatabase}=# $`, "m"), send: "SELECT 6 * 7 AS answer;\n" },
        { after: /\(1 row\)/, send: "\\q\n" },
      ],
    );
    expect(r.stderr, r.stdout).toBe("2/2 steps sent");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/answer\s*\r?\n-+\s*\r?\n\s+42\r?\n\(1 row\)/);
  });

  it("redis-cli without a terminal: TLS, the ACL admin user, the password on no command line; on a replica too", async () => {
    const r = await fleet(["redis-cli"], { input: "PING\nACL WHOAMI\n" });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("fleet redis-cli: the Redis master is main\n");
    expect(r.stdout).toBe(`PONG\n${users.admin.name}\n`);
    const rep = await fleet(["redis-cli", "replica-1", "--", "INFO", "replication"]);
    expect(rep.code).toBe(0);
    expect(rep.stdout).toMatch(/^role:slave\r?$/m);
    expect(rep.stdout).toMatch(/^master_link_status:up\r?$/m);
  });

  it("redis-cli with a terminal: its prompt, the admin user; while it runs no process on the machine has the password in its argv; its file is gone after", async () => {
    const before = sessionDirs();
    const r = await fleetOnTerminal(
      ["redis-cli"],
      [
        {
          after: /127\.0\.0\.1:6380> $/m,
          // Enter is a carriage return on a terminal in raw mode (ssh puts ours in it; the line editor takes CR).
          send: "ACL WHOAMI\r",
          check: () => {
            const leaks = allCmdlines().filter((c) => c.includes(users.admin.password));
            expect(leaks).toEqual([]);
            // The session read its file and removed it before redis-cli started.
            expect(sessionDirs()).toEqual(before);
          },
        },
        // After the answer, the next prompt: redis-cli's line editor asks the terminal for its width before it writes a
        // prompt (redis deps/linenoise/linenoise.c, linenoiseEdit: getColumns, then the prompt), and keys typed while it
        // waits for that answer are read as part of it: "quit" sent before the prompt can be lost, and the session hangs.
        { after: new RegExp(`"${users.admin.name}"[\\s\\S]*127\\.0\\.0\\.1:6380> $`), send: "quit\r" },
      ],
    );
    expect(r.stderr, r.stdout).toBe("2/2 steps sent");
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain(`"${users.admin.name}"`);
    expect(r.stdout).not.toContain(users.admin.password);
    expect(sessionDirs()).toEqual(before);
  });

  it("an unknown host and an SSH key the host does not pin: exit 1, saying which", async () => {
    const r = await fleet(["psql", "replica-7"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no host replica-7 in the fleet of ${MAIN_STACK} (hosts: main, replica-1)`);
    // replica-1's stack pinning main's key: ssh refuses the host.
    const outs = stackOutputs();
    outs["flc/synaxic/replica-1"]!.hostKey = rig.host("main").hostKeyPublic;
    writeFileSync(join(binDir, "flc_synaxic_replica-1.json"), JSON.stringify(outs["flc/synaxic/replica-1"]));
    try {
      const wrong = await fleet(["restart", "replica-1", "app"]);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/cannot reach replica-1: ssh root@[\d.]+:22: .*Host key verification failed/);
    } finally {
      writeFileSync(join(binDir, "flc_synaxic_replica-1.json"), JSON.stringify(stackOutputs()["flc/synaxic/replica-1"]));
    }
  });
});
