/**
 * Redis full-sync benchmark on the integration rig:
 * `sudo npm run bench:redis-sync [-- --mb N --runs N]`.
 *
 * Two Redis 7.0 masters on the "main" namespace, started from the rendered
 * redis.conf (TLS, ACL users, AOF, diskless sync), one with Redis's default
 * repl-diskless-sync-delay of 5 and one with the template's default, both
 * filled with the same amount of incompressible string values (default
 * 250 MB). Then, run after run, a new replica (rendered replica
 * configuration, empty data directory) is started on "replica1" against
 * each master in turn, alternating which goes first, and the time from its
 * start until it logs "MASTER <-> REPLICA sync: Finished with success" is
 * measured, with the part the master spent between the replica's request
 * and the start of the transfer, read from the master's log. Prints
 * min/median/max per setting, the ratio of the medians, and the machine's
 * load average at the start and the end. It asserts nothing; the rig is
 * always torn down.
 */
import { existsSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { log, runBench, runOnRig } from "./rig-run";
import { TestNet, waitFor, type Host } from "../test/rig/net";
import { makeCa, type CertFiles, type TestCa } from "../test/rig/pki";
import { fillWithStrings, randomRedisUsers, redisInfo, redisLogTimes, redisOk, RedisServer, waitNoChild } from "../test/rig/redis";
import { REDIS_CONF_DEFAULTS, renderRedisAcl, renderRedisConf } from "../templates/redis";

export interface Options {
  mb: number;
  runs: number;
}

const USAGE = `usage: npm run bench:redis-sync -- [--mb N] [--runs N]
  --mb N    megabytes (10^6 bytes) of values on each master (default 250)
  --runs N  new replicas attached to each master (default 5)
`;

export function parseArgs(argv: readonly string[]): Options {
  const opts: Options = { mb: 250, runs: 5 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--help" || flag === "-h") {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    const key = flag === "--mb" ? "mb" : flag === "--runs" ? "runs" : undefined;
    if (!key) throw new Error(`unknown argument ${flag}\n${USAGE}`);
    const value = Number(argv[++i]);
    if (!Number.isInteger(value) || value < 1 || value > (key === "mb" ? 4000 : 100)) throw new Error(`${flag} needs a whole number in range`);
    opts[key] = value;
  }
  return opts;
}



function stats(xs: readonly number[]): { min: number; median: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { min: s[0]!, median: mid, max: s[s.length - 1]! };
}

interface Setting {
  label: string;
  delay: number;
  master: RedisServer;
  keys: number;
}

interface Sample {
  /** Replica started -> its "Finished with success" log line. */
  syncMs: number;
  /** The master's "asks for synchronization" -> "Starting BGSAVE for SYNC" for this replica. */
  waitMs: number;
  /** Size of the RDB the replica received (its dump.rdb after the sync). */
  rdbBytes: number | undefined;
}

async function attachReplica(
  net: TestNet,
  host: Host,
  ca: TestCa,
  cert: CertFiles,
  setting: Setting,
  run: number,
  users: ReturnType<typeof randomRedisUsers>,
  acl: string,
): Promise<Sample> {
  const { master } = setting;
  const replica = RedisServer.create(net, host, `replica-${setting.delay}s-${run}`, { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem }, 6390);
  const conf = renderRedisConf({
    role: "replica",
    bind: [host.ip, "127.0.0.1"],
    port: replica.port,
    ...replica.paths,
    announce: { ip: host.ip, port: replica.port },
    masterHost: master.host.ip,
    masterPort: master.port,
    masterUser: users.replication.name,
    masterPassword: users.replication.password,
  });
  const masterLogBefore = master.log().length;
  const started = Date.now();
  try {
    await replica.start(conf, acl);
    const finished = await waitFor(
      `the replica of the ${setting.label} master to finish its sync`,
      async () => redisLogTimes(replica.log(), "MASTER <-> REPLICA sync: Finished with success")[0],
      120_000,
      20,
    );
    const info = await redisInfo(host, replica.localTarget, "replication", users.app);
    if (info.master_link_status !== "up") throw new Error(`replica link is ${info.master_link_status} after its sync`);
    const keys = Number((await redisOk(host, replica.localTarget, ["DBSIZE"], users.app)).trim());
    if (keys !== setting.keys) throw new Error(`replica has ${keys} keys after its sync, the master ${setting.keys}`);
    const masterLog = master.log().slice(masterLogBefore);
    const asked = redisLogTimes(masterLog, `Replica ${host.ip}:${replica.port} asks for synchronization`)[0];
    const bgsave = redisLogTimes(masterLog, "Starting BGSAVE for SYNC with target: replicas sockets")[0];
    if (asked === undefined || bgsave === undefined) throw new Error(`the master's log does not show the sync:\n${masterLog}`);
    const rdb = join(replica.dataDir, "dump.rdb");
    return { syncMs: finished - started, waitMs: bgsave - asked, rdbBytes: existsSync(rdb) ? statSync(rdb).size : undefined };
  } finally {
    // After a full sync the replica writes its initial AOF and refuses to shut down until it is written.
    if (replica.running) await waitNoChild(host, replica.localTarget, users.app).catch(() => undefined);
    await replica.stop();
    rmSync(replica.root, { recursive: true, force: true });
    await waitNoChild(master.host, master.localTarget, users.app);
  }
}

/** The rig hosts bench() needs. */
export const HOSTS = ["main", "replica1"];

/** Runs the measurements on a rig of HOSTS and prints them; `add` receives the summary's rows as well. */
export async function bench(opts: Options, net: TestNet, add?: (label: string, value: string) => void): Promise<void> {
  const main = net.host("main");
  const replicaHost = net.host("replica1");
  const ca = makeCa("redis-bench-ca", net.mkdir("pki"));
  const mCert = ca.issue("redis-main", [main.ip]);
  const rCert = ca.issue("redis-replica1", [replicaHost.ip]);
  const users = randomRedisUsers();
  const acl = renderRedisAcl(users);

  const delays = [5, REDIS_CONF_DEFAULTS.replDisklessSyncDelay];
  const settings: Setting[] = [];
  for (const [i, delay] of delays.entries()) {
    const master = RedisServer.create(net, main, `master-${i}`, { caPem: ca.certPem, certPem: mCert.certPem, keyPem: mCert.keyPem }, 6380 + i);
    await master.start(
      renderRedisConf({
        role: "master",
        bind: [main.ip, "127.0.0.1"],
        port: master.port,
        ...master.paths,
        announce: { ip: main.ip, port: master.port },
        // Leave Redis's own default to compare against to the template's default.
        ...(i === 0 ? { replDisklessSyncDelay: delay } : {}),
      }),
      acl,
    );
    const reported = (await redisOk(main, master.localTarget, ["CONFIG", "GET", "repl-diskless-sync-delay"], users.admin)).split("\n")[1];
    const label = i === 0 ? `repl-diskless-sync-delay ${reported} (Redis's default)` : `repl-diskless-sync-delay ${reported} (the template's default)`;
    const fillStart = Date.now();
    const filled = await fillWithStrings(main, master.localTarget, users.app, { bytes: opts.mb * 1_000_000 });
    await waitNoChild(main, master.localTarget, users.app);
    const mem = await redisInfo(main, master.localTarget, "memory", users.app);
    log(
      `master ${label}: ${filled.keys} keys, ${(filled.valueBytes / 1e6).toFixed(0)} MB of values, used_memory ${(Number(mem.used_memory) / 1e6).toFixed(0)} MB ` +
        `(filled and AOF rewritten in ${((Date.now() - fillStart) / 1000).toFixed(1)} s)`,
    );
    settings.push({ label, delay, master, keys: filled.keys });
  }

  const samples = settings.map(() => [] as Sample[]);
  for (let run = 0; run < opts.runs; run++) {
    const order = run % 2 === 0 ? [0, 1] : [1, 0];
    for (const i of order) {
      const s = await attachReplica(net, replicaHost, ca, rCert, settings[i]!, run, users, acl);
      samples[i]!.push(s);
      log(
        `run ${run + 1}/${opts.runs}, ${settings[i]!.label}: new replica in sync after ${(s.syncMs / 1000).toFixed(2)} s ` +
          `(master waited ${(s.waitMs / 1000).toFixed(2)} s before the transfer; RDB ${s.rdbBytes === undefined ? "n/a" : `${(s.rdbBytes / 1e6).toFixed(0)} MB`})`,
      );
    }
  }

  const rdb = samples.flat().find((s) => s.rdbBytes !== undefined)?.rdbBytes;
  process.stdout.write(
    `\nSummary: a new replica's full sync over TLS, ${opts.runs} runs per setting, ${opts.mb} MB of values${rdb === undefined ? "" : ` (RDB ${(rdb / 1e6).toFixed(0)} MB)`}\n`,
  );
  const s = (xs: number[]) => {
    const v = stats(xs);
    return `min ${(v.min / 1000).toFixed(2)} s  median ${(v.median / 1000).toFixed(2)} s  max ${(v.max / 1000).toFixed(2)} s`;
  };
  settings.forEach((setting, i) => {
    process.stdout.write(`  ${setting.label}\n`);
    process.stdout.write(`    replica started -> sync finished     ${s(samples[i]!.map((x) => x.syncMs))}\n`);
    process.stdout.write(`    master waiting before the transfer   ${s(samples[i]!.map((x) => x.waitMs))}\n`);
  });
  const before = stats(samples[0]!.map((x) => x.syncMs)).median;
  const after = stats(samples[1]!.map((x) => x.syncMs)).median;
  process.stdout.write(`  median sync time, template's default / Redis's default: ${(after / 1000).toFixed(2)} s / ${(before / 1000).toFixed(2)} s = ${(after / before).toFixed(2)}\n`);
  if (add) {
    add("new replica's full sync", `${opts.mb} MB of values${rdb === undefined ? "" : ` (RDB ${(rdb / 1e6).toFixed(0)} MB)`}, TLS, ${opts.runs} run(s) per setting`);
    settings.forEach((setting, i) => {
      add(`  ${setting.label}`, s(samples[i]!.map((x) => x.syncMs)));
      add(`    master waiting before the transfer`, s(samples[i]!.map((x) => x.waitMs)));
    });
    add("  sync ratio, template's default / Redis's default", `${(after / before).toFixed(2)} (medians)`);
  }
}

async function mainEntry(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  return runOnRig(HOSTS, (net) => bench(opts, net));
}

// Run from the command line; bench/all.ts imports bench() instead.
if (require.main === module) runBench(mainEntry);
