/**
 * Redis snapshots under mocks: with backupRepository set (and snapshots not
 * turned off), the Redis master's host builds the snapshot image from the
 * fleet's Redis image and runs the job, every host's users.acl carries the
 * backup user, and every secret stays secret; nothing of it otherwise. And
 * the configuration keys, refused where they do not belong.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { findLeaks, SECRET_SIG, type Recorded, type RunResult } from "./harness";
import { runMain, runReplica } from "./fixtures";
import { parseStackConfig, type MainConfig } from "../../lib/config";
import { REDIS_SNAPSHOT_JOB_MIB } from "../../lib/memory";
import { REDIS_SNAPSHOT_PATHS } from "../../templates/redis-backup-scheduler";
import { REDIS_BACKUP_PACKAGES_DEFAULT } from "../../templates/redis-backup-image";
import { REDIS_BACKUP_ACL_RULES } from "../../templates/redis-backup";
import { INITIAL_CONTROL, nextControl } from "../../lib/control";

/** The control stack's state after replica-1 took over from main (fenced by a stop). */
const REPLICA_1_PRIMARY = nextControl(INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" } }).next;

const P = "synaxic:";
const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";
const IMAGE = "docker:index/remoteImage:RemoteImage";
const COMPONENT = "synaxic:components:RedisSnapshots";
const BACKUP = {
  [`${P}backupRepository`]: JSON.stringify({ endpoint: "fsn1.your-objectstorage.com", bucket: "acme-synaxic", region: "fsn1" }),
  [`${P}backupAccessKeyId`]: "AKIAEXAMPLEKEY01",
  [`${P}backupSecretAccessKey`]: "s3-secret-access-key-example-0123",
};

type AnyRun = RunResult<unknown>;
type Upload = { file: string; content: string; permissions: string; owner: string };
let main: AnyRun;
let plain: AnyRun;
let replica: AnyRun;

beforeAll(async () => {
  main = (await runMain(1, BACKUP)) as AnyRun;
  plain = (await runMain(1)) as AnyRun;
  replica = (await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: BACKUP })).replica as AnyRun;
}, 120_000);

function uploads(r: Recorded): Upload[] {
  return r.inputs.uploads as Upload[];
}
const isSecret = (v: unknown) => !!v && typeof v === "object" && (v as Record<string, unknown>)[SECRET_SIG] !== undefined;
/** Whether the program sent a file's upload content as a secret: the list, the upload, or its content marked secret. */
function uploadIsSecret(r: Recorded, file: string): boolean {
  const raw = r.raw.uploads;
  if (isSecret(raw)) return true;
  const i = uploads(r).findIndex((u) => u.file === file);
  expect(i, file).toBeGreaterThanOrEqual(0);
  const u = (raw as unknown[])[i];
  return isSecret(u) || isSecret((u as Record<string, unknown>).content);
}
/** users.acl as the host file step writes it (components/RedisPair.ts: a file on the host, applied to the running server). */
function aclOf(run: AnyRun): string {
  return String(run.one(COMMAND, "redis-acl").inputs.stdin);
}
function pw(run: AnyRun, name: string): string {
  // The mocks' RandomPassword result: MockPw<sha256(stack/name)[0:16]>.
  return `MockPw${createHash("sha256").update(`${run === main || run === plain ? "main" : "replica-1"}/${name}`).digest("hex").slice(0, 16)}`;
}

describe("Redis snapshots on (backupRepository set)", () => {
  it("the main host builds the snapshot image FROM the fleet's Redis image with the pinned packages, and runs the job from the built image's ID", () => {
    const build = main.one(COMMAND, "redis-snapshots-image-build");
    const dockerfile = String(build.inputs.stdin);
    expect(dockerfile).toMatch(/^FROM redis:8\.10\.2-trixie$/m);
    const d = REDIS_BACKUP_PACKAGES_DEFAULT;
    expect(dockerfile).toContain(`pins="curl=${d.curl} openssl=${d.openssl} ca-certificates=${d.caCertificates}"`);
    expect(String(build.inputs.create)).toMatch(/docker build --network host --tag "\$1" -.* synaxic-local\/redis-backup:[a-f0-9]{16}$/);
    expect(build.opts.dependsOn).toContain("redis-snapshots-image");
    expect(main.one(IMAGE, "redis-snapshots-image").inputs.name).toBe("redis:8.10.2-trixie");
    const job = main.one(CONTAINER, "redis-snapshots-container");
    expect(job.inputs.image).toMatch(/^sha256:[a-f0-9]{16}$/);
    expect(job.inputs.name).toBe("synaxic-main-redis-backup");
    expect(job.inputs.entrypoints).toEqual(["/bin/bash", REDIS_SNAPSHOT_PATHS.entrypoint]);
    expect(main.one(COMPONENT, "redis-snapshots").type).toBe(COMPONENT);
  });

  it("the job runs in the host's network (the master on loopback), within its memory limit, stops gracefully, writes its textfile into the node exporter's directory, starts after Redis and its users step", () => {
    const job = main.one(CONTAINER, "redis-snapshots-container");
    expect(job.inputs.networkMode).toBe("host");
    expect(job.inputs.memory).toBe(REDIS_SNAPSHOT_JOB_MIB);
    expect(job.inputs.memorySwap).toBe(REDIS_SNAPSHOT_JOB_MIB);
    expect(job.inputs.destroyGraceSeconds).toBeGreaterThanOrEqual(10);
    const volumes = job.inputs.volumes as { hostPath?: string; volumeName?: string; containerPath: string }[];
    expect(volumes).toContainEqual({ hostPath: "/etc/synaxic/main/node-exporter", containerPath: REDIS_SNAPSHOT_PATHS.textfile });
    expect(volumes).toContainEqual({ volumeName: "synaxic-main-redis-backup-state", containerPath: REDIS_SNAPSHOT_PATHS.state });
    // The Redis pair as a whole: its users step has put the backup user on the running server.
    expect(job.opts.dependsOn).toEqual(["redis"]);
    expect(job.opts.parent).toBe("redis-snapshots");
  });

  it("its scripts reach the master as the backup user on loopback over TLS, and upload below the repository's path", () => {
    const job = main.one(CONTAINER, "redis-snapshots-container");
    const snapshot = uploads(job).find((u) => u.file === REDIS_SNAPSHOT_PATHS.snapshot)!.content;
    expect(snapshot).toContain("-h 127.0.0.1 -p 6380 --user backup");
    expect(snapshot).toContain("BASE_URL=https://fsn1.your-objectstorage.com/acme-synaxic/");
    expect(snapshot).toContain("PREFIX=synaxic/redis/master");
    expect(uploads(job).find((u) => u.file === REDIS_SNAPSHOT_PATHS.expire)!.content).toContain("KEEP=7");
    expect(uploads(job).find((u) => u.file === REDIS_SNAPSHOT_PATHS.entrypoint)!.content).toContain("HOUR=2");
    expect(uploads(job).some((u) => u.file === REDIS_SNAPSHOT_PATHS.s3CaFile)).toBe(false);
  });

  it("every secret is a 0600 file, secret in the program: the backup user's password, the cipher pass (backupCipher's, as pgBackRest's), the S3 key as a curl config", () => {
    const job = main.one(CONTAINER, "redis-snapshots-container");
    for (const f of [REDIS_SNAPSHOT_PATHS.passwordFile, REDIS_SNAPSHOT_PATHS.cipherPassFile, REDIS_SNAPSHOT_PATHS.s3CredentialsFile]) {
      const u = uploads(job).find((x) => x.file === f)!;
      expect(u.permissions, f).toBe("0600");
      expect(uploadIsSecret(job, f), f).toBe(true);
    }
    const byFile = (f: string) => uploads(job).find((x) => x.file === f)!.content;
    expect(byFile(REDIS_SNAPSHOT_PATHS.passwordFile)).toBe(pw(main, "fleet-redisBackup"));
    expect(byFile(REDIS_SNAPSHOT_PATHS.cipherPassFile)).toBe(`${pw(main, "fleet-backupCipher")}\n`);
    expect(byFile(REDIS_SNAPSHOT_PATHS.s3CredentialsFile)).toBe('user = "AKIAEXAMPLEKEY01:s3-secret-access-key-example-0123"\n');
    // The same cipher pass encrypts pgBackRest's repository.
    expect(String(main.one(COMMAND, "postgres-pgbackrest-secrets").inputs.stdin)).toContain(`repo1-cipher-pass=${pw(main, "fleet-backupCipher")}`);
    // No secret anywhere outside a secret marker: not in a script, a command, an image build.
    const secrets = [...main.secretValues, "s3-secret-access-key-example-0123"];
    for (const r of [job, main.one(COMMAND, "redis-snapshots-image-build")]) expect(findLeaks(r.raw, secrets), r.name).toEqual([]);
  });

  it("every host's users.acl carries the backup user (SYNC, REPLCONF and PING only, the password hashed), the replica's too", () => {
    const hash = (p: string) => createHash("sha256").update(p).digest("hex");
    const line = `user backup reset on #${hash(pw(main, "fleet-redisBackup"))} ${REDIS_BACKUP_ACL_RULES.join(" ")}`;
    expect(aclOf(main).split("\n")).toContain(line);
    expect(aclOf(replica).split("\n")).toContain(line);
    expect(isSecret(main.one(COMMAND, "redis-acl").raw.stdin)).toBe(true);
  });

  it("replica stacks read the backup user's password from the main stack's secret replicaCredentials; a replica runs no job", () => {
    expect(main.secretOutputs.has("replicaCredentials")).toBe(true);
    expect((main.values.replicaCredentials as Record<string, string>).redisBackup).toBe(pw(main, "fleet-redisBackup"));
    expect(replica.of(CONTAINER).filter((c) => c.name.includes("redis-snapshots"))).toEqual([]);
    expect(replica.of(COMMAND).filter((c) => c.name.includes("redis-snapshots"))).toEqual([]);
    expect((main.values.fleet as { backup: { redis: unknown } }).backup.redis).toEqual({ hourUtc: 2, retention: 7, packages: REDIS_BACKUP_PACKAGES_DEFAULT });
  });
});

describe("Redis snapshots off", () => {
  it("without backups: no job, no image build, no backup user, nothing in replicaCredentials", () => {
    expect(plain.of(COMPONENT)).toEqual([]);
    expect(plain.of(COMMAND).filter((c) => c.name.includes("redis-snapshots"))).toEqual([]);
    expect(aclOf(plain)).not.toMatch(/^user backup /m);
    expect((plain.values.replicaCredentials as Record<string, string>).redisBackup).toBeUndefined();
  });

  it("with redisBackupSchedule.enabled false: backups on, but no job and no backup user anywhere", async () => {
    const off = (await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: { ...BACKUP, [`${P}redisBackupSchedule`]: JSON.stringify({ enabled: false }) } })) as { main: AnyRun; replica: AnyRun };
    expect(off.main.of(CONTAINER).some((c) => c.name === "postgres-backup")).toBe(true);
    expect(off.main.of(COMPONENT)).toEqual([]);
    for (const run of [off.main, off.replica]) expect(aclOf(run)).not.toMatch(/^user backup /m);
    expect((off.main.values.fleet as { backup: { redis: unknown } }).backup.redis).toBeNull();
  });
});

describe("where the job runs: beside the Redis master", () => {
  it("a promoted replica runs it (from the main stack's settings and secrets); a main host that follows it does not", async () => {
    // The control stack names replica-1 as the primary (main fenced by a stop): replica-1 promotes, main follows it.
    const promoted = (await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: BACKUP, control: REPLICA_1_PRIMARY })).replica as AnyRun;
    const job = promoted.one(CONTAINER, "redis-snapshots-container");
    expect(job.inputs.name).toBe("synaxic-replica-1-redis-backup");
    expect(uploads(job).find((u) => u.file === REDIS_SNAPSHOT_PATHS.passwordFile)!.content).toBe(pw(main, "fleet-redisBackup"));
    expect(uploadIsSecret(job, REDIS_SNAPSHOT_PATHS.cipherPassFile)).toBe(true);
    const following = (await runMain(1, BACKUP, { control: REPLICA_1_PRIMARY })) as AnyRun;
    expect(following.of(COMPONENT)).toEqual([]);
    expect(aclOf(following)).toMatch(/^user backup /m);
  });

  it("the given backupCipherPass (a stack re-created over an existing repository) encrypts the snapshots too", async () => {
    const given = "an-old-cipher-pass-kept-outside-0123456789";
    const run = (await runMain(0, { ...BACKUP, [`${P}backupCipherPass`]: given })) as AnyRun;
    const job = run.one(CONTAINER, "redis-snapshots-container");
    expect(uploads(job).find((u) => u.file === REDIS_SNAPSHOT_PATHS.cipherPassFile)!.content).toBe(`${given}\n`);
    expect(uploadIsSecret(job, REDIS_SNAPSHOT_PATHS.cipherPassFile)).toBe(true);
  });

  it("a main stack from before Redis snapshots (no fleet.backup.redis, no redisBackup): the replica adds no backup user", async () => {
    const old = (
      await runReplica("replica-1", "10.10.0.3", {
        replicas: 1,
        mainExtra: BACKUP,
        mutateMainOutputs: (o) => {
          delete (o.fleet as { backup: Record<string, unknown> }).backup.redis;
          delete (o.replicaCredentials as Record<string, unknown>).redisBackup;
        },
      })
    ).replica as AnyRun;
    expect(aclOf(old)).not.toMatch(/^user backup /m);
  });

  it("a main stack with snapshots but without the backup user's password in its outputs stops the replica, naming the output", async () => {
    await expect(
      runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: BACKUP, mutateMainOutputs: (o) => void delete (o.replicaCredentials as Record<string, unknown>).redisBackup }),
    ).rejects.toThrow(/replicaCredentials\.redisBackup.*is missing while fleet\.backup\.redis is set/);
  });
});

describe("configuration", () => {
  const SECRET_KEYS = new Set([`${P}sshPrivateKey`, `${P}googleClientSecret`, `${P}backupAccessKeyId`, `${P}backupSecretAccessKey`]);
  const base = {
    [`${P}role`]: "main",
    [`${P}sshPrivateKey`]: "key",
    [`${P}googleClientSecret`]: "secret",
    [`${P}googleClientId`]: "id",
    [`${P}sshHostKey`]: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    [`${P}hostProvider`]: "existing",
    [`${P}sshHost`]: "203.0.113.10",
    [`${P}memoryMiB`]: "4096",
    [`${P}cpus`]: "2",
  };
  const parse = (extra: Record<string, string>) => parseStackConfig({ ...base, ...BACKUP, ...extra }, SECRET_KEYS) as MainConfig;

  it("defaults: daily from 02:00 UTC, 7 kept, the default package pins; each field can be set", () => {
    expect(parse({}).backup!.redis).toEqual({ hourUtc: 2, retention: 7, packages: REDIS_BACKUP_PACKAGES_DEFAULT });
    const c = parse({ [`${P}redisBackupSchedule`]: JSON.stringify({ hourUtc: 5, retention: 30 }), [`${P}redisBackupPackages`]: JSON.stringify({ curl: "7.88.1-10+deb12u99" }) });
    expect(c.backup!.redis).toEqual({ hourUtc: 5, retention: 30, packages: { ...REDIS_BACKUP_PACKAGES_DEFAULT, curl: "7.88.1-10+deb12u99" } });
    expect(parse({ [`${P}redisBackupSchedule`]: JSON.stringify({ enabled: false }) }).backup!.redis).toBeNull();
  });

  it.each([
    ["an hour past 23", { [`${P}redisBackupSchedule`]: JSON.stringify({ hourUtc: 24 }) }, /synaxic:redisBackupSchedule\[hourUtc\]: got 24/],
    ["no snapshot kept", { [`${P}redisBackupSchedule`]: JSON.stringify({ retention: 0 }) }, /synaxic:redisBackupSchedule\[retention\]: got 0/],
    ["an unknown field", { [`${P}redisBackupSchedule`]: JSON.stringify({ hour: 3 }) }, /synaxic:redisBackupSchedule/],
    ["a version that is not Debian's form", { [`${P}redisBackupPackages`]: JSON.stringify({ openssl: "3.0; rm -rf /" }) }, /synaxic:redisBackupPackages\[openssl\]: got "3.0; rm -rf \/"; expected a Debian package version/],
    ["an unknown package", { [`${P}redisBackupPackages`]: JSON.stringify({ wget: "1.21" }) }, /synaxic:redisBackupPackages/],
  ])("refuses %s, naming the key", (_what, extra, message) => {
    expect(() => parse(extra)).toThrow(message);
  });

  it("refuses them without backupRepository, and on replica stacks", () => {
    const noRepo = { ...base, [`${P}redisBackupSchedule`]: JSON.stringify({ hourUtc: 4 }) };
    expect(() => parseStackConfig(noRepo, SECRET_KEYS)).toThrow(/synaxic:redisBackupSchedule: is set but backupRepository is not/);
    expect(() => parseStackConfig({ ...base, [`${P}redisBackupPackages`]: JSON.stringify({ curl: "1.0" }) }, SECRET_KEYS)).toThrow(/synaxic:redisBackupPackages: is set but backupRepository is not/);
    const replicaRaw = { ...base, [`${P}role`]: "replica", [`${P}hostName`]: "replica-1", [`${P}privateIp`]: "10.10.0.3", [`${P}mainStack`]: "acme/synaxic/main" };
    const values = { redisBackupSchedule: { enabled: false }, redisBackupPackages: { curl: "1.0" } };
    for (const [k, v] of Object.entries(values)) {
      expect(() => parseStackConfig({ ...replicaRaw, [`${P}${k}`]: JSON.stringify(v) }, SECRET_KEYS)).toThrow(new RegExp(`synaxic:${k}: is for the main stack`));
    }
  });
});
