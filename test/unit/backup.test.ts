/**
 * Backups under mocks: what the main and replica stacks declare when
 * backupRepository is set (and nothing of it when it is not), with the
 * repository's secrets kept secret.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { findLeaks, SECRET_SIG, type RunResult } from "./harness";
import { runMain, runReplica } from "./fixtures";

const P = "synaxic:";
const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";
const VOLUME = "docker:index/volume:Volume";
const BACKUP = {
  [`${P}backupRepository`]: JSON.stringify({ endpoint: "fsn1.your-objectstorage.com", bucket: "acme-synaxic", region: "fsn1", retentionFull: 3 }),
  [`${P}backupAccessKeyId`]: "AKIAEXAMPLEKEY01",
  [`${P}backupSecretAccessKey`]: "s3-secret-access-key-example-0123",
};

type AnyRun = RunResult<unknown>;
let main: AnyRun;
let plain: AnyRun;
let replica: AnyRun;

beforeAll(async () => {
  main = (await runMain(1, BACKUP)) as AnyRun;
  plain = (await runMain(1)) as AnyRun;
  replica = (await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: BACKUP })).replica as AnyRun;
}, 120_000);

function pgConf(run: AnyRun): string {
  return String(run.one(COMMAND, "postgres-conf").inputs.stdin);
}

describe("backups on (backupRepository set)", () => {
  it("every server archives through pgBackRest; a standby's archive_mode on archives only once it is promoted", () => {
    for (const run of [main, replica]) {
      const conf = pgConf(run);
      expect(conf).toMatch(/^archive_mode = on$/m);
      expect(conf).toMatch(/^archive_command = '.*pgbackrest .*--stanza=synaxic .*archive-push %p'$/m);
      expect(conf).toMatch(/^restore_command = '.*archive-get %f %p'$/m);
      expect(conf).toMatch(/^archive_timeout = '60s'$/m);
    }
  });

  it("pgbackrest.conf names the repository and retention, holds no secret; the secrets file is 0600 postgres, its content secret", () => {
    const conf = String(main.one(COMMAND, "postgres-pgbackrest-conf").inputs.stdin);
    expect(conf).toContain("repo1-s3-endpoint=fsn1.your-objectstorage.com");
    expect(conf).toContain("repo1-s3-bucket=acme-synaxic");
    expect(conf).toContain("repo1-retention-full=3");
    expect(conf).toContain("repo1-cipher-type=aes-256-cbc");
    expect(findLeaks(conf, main.secretValues)).toEqual([]);
    const secrets = main.one(COMMAND, "postgres-pgbackrest-secrets");
    expect(secrets.inputs.create).toMatch(/ 0600 999:999$/);
    expect((secrets.raw.stdin as Record<string, unknown>)[SECRET_SIG]).toBeDefined();
    expect(String(secrets.inputs.stdin)).toContain("repo1-s3-key=AKIAEXAMPLEKEY01");
    expect(String(secrets.inputs.stdin)).toMatch(/repo1-cipher-pass=\S{20,}/);
    for (const k of ["create", "update", "delete"]) expect(findLeaks(secrets.raw[k], main.secretValues), k).toEqual([]);
  });

  it("the server mounts the configuration read-only, and the archive queue and socket volumes", () => {
    const pg = main.one(CONTAINER, "postgres-container").inputs;
    expect(pg.mounts).toEqual(expect.arrayContaining([expect.objectContaining({ target: "/etc/pgbackrest", readOnly: true })]));
    const paths = (pg.volumes as { containerPath: string }[]).map((v) => v.containerPath);
    expect(paths).toEqual(expect.arrayContaining(["/var/lib/postgresql/data", "/var/spool/pgbackrest", "/var/run/postgresql"]));
    expect(main.of(VOLUME).map((v) => v.inputs.name)).toEqual(expect.arrayContaining(["synaxic-main-pgbackrest-spool", "synaxic-main-postgres-socket", "synaxic-main-backup-state"]));
  });

  it("a scheduler beside PostgreSQL on every host: the same built image, the data read-only, the socket shared, its textfile into the node exporter's directory, a memory limit", () => {
    for (const [run, host] of [[main, "main"], [replica, "replica-1"]] as const) {
      const s = run.one(CONTAINER, "postgres-backup").inputs;
      const pg = run.one(CONTAINER, "postgres-container").inputs;
      expect(s.name).toBe(`synaxic-${host}-backup`);
      expect(s.image).toBe(pg.image);
      expect(s.volumes).toEqual(expect.arrayContaining([expect.objectContaining({ containerPath: "/var/lib/postgresql/data", readOnly: true })]));
      expect(s.volumes).toEqual(expect.arrayContaining([expect.objectContaining({ volumeName: `synaxic-${host}-postgres-socket`, containerPath: "/var/run/postgresql" })]));
      expect(s.volumes).toEqual(expect.arrayContaining([{ hostPath: expect.stringMatching(new RegExp(`/${host}/node-exporter$`)), containerPath: "/textfile" }]));
      expect(s.memory).toBe(128);
      const script = String((s.uploads as { content: string }[])[0]!.content);
      expect(script).toContain("gosu postgres pgbackrest --config-path=/etc/pgbackrest --stanza=synaxic --type=full backup");
      expect(findLeaks(script, run.secretValues)).toEqual([]);
    }
  });

  it("the primary creates and checks the stanza after it is ready, as postgres in its container", () => {
    const step = main.one(COMMAND, "postgres-stanza");
    expect(step.inputs.create).toContain("docker exec -i -u postgres synaxic-main-postgres sh -s");
    expect(String(step.inputs.stdin)).toContain("stanza-create");
    expect(String(step.inputs.stdin)).toContain(" check");
    expect(step.opts.dependsOn).toContain("postgres-ready");
  });

  it("the replica gets the repository and its secrets from the main stack, secret", () => {
    const secrets = replica.one(COMMAND, "postgres-pgbackrest-secrets");
    expect((secrets.raw.stdin as Record<string, unknown>)[SECRET_SIG]).toBeDefined();
    expect(String(secrets.inputs.stdin)).toContain("repo1-s3-key-secret=s3-secret-access-key-example-0123");
    expect(String(replica.one(COMMAND, "postgres-pgbackrest-conf").inputs.stdin)).toContain("repo1-s3-bucket=acme-synaxic");
  });

  it("Prometheus loads the backup rules", () => {
    const rules = String(main.one(COMMAND, "monitoring-rules-backup").inputs.stdin);
    for (const a of ["SynaxicBackupTooOld", "SynaxicNoBackup", "SynaxicWalArchivingFailing", "SynaxicArchiveQueueLarge"]) expect(rules).toContain(a);
  });
});

describe("backups off (the default)", () => {
  it("no archiving, no pgBackRest files, no scheduler, no stanza step", () => {
    expect(pgConf(plain)).not.toMatch(/archive_mode/);
    expect(plain.of(COMMAND).filter((c) => /pgbackrest|stanza/.test(c.name))).toEqual([]);
    expect(plain.of(CONTAINER).filter((c) => c.name.endsWith("-backup"))).toEqual([]);
  });
});

describe("a restore from the repository (backupRestore)", () => {
  const RESTORE = { ...BACKUP, [`${P}backupRestore`]: JSON.stringify({ target: "2026-11-30 12:00:00+00", id: 1 }) };
  let restored: AnyRun;
  let replicaAfter: AnyRun;

  beforeAll(async () => {
    restored = (await runMain(1, RESTORE)) as AnyRun;
    replicaAfter = (await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: RESTORE })).replica as AnyRun;
  }, 120_000);

  it("goes into a fresh volume named after it; the volume from before is kept (retained on delete)", () => {
    const v = restored.one(VOLUME, "postgres-data");
    expect(v.inputs.name).toBe("synaxic-main-pgdata-restore-1");
    expect(v.opts.retainOnDelete).toBe(true);
    expect(plain.one(VOLUME, "postgres-data").inputs.name).toBe("synaxic-main-pgdata");
  });

  it("writes a permit for this restore (a new trigger), and the entrypoint restores to the target instead of initdb", () => {
    const permit = restored.one(COMMAND, "bootstrap-permit");
    expect(permit.inputs.triggers).toEqual([0, 1]);
    expect(String(permit.inputs.stdin)).toMatch(/ restore=1\n$/);
    // Without a restore the trigger is the generation alone, as before: no stack gets a new permit from this change.
    expect(plain.one(COMMAND, "bootstrap-permit").inputs.triggers).toEqual([0]);
    const pg = restored.one(CONTAINER, "postgres-container").inputs;
    const entrypoint = String((pg.uploads as { file: string; content: string }[]).find((u) => u.file.endsWith("synaxic-entrypoint"))!.content);
    expect(entrypoint).toContain("pgbackrest --config-path=/etc/pgbackrest --stanza=synaxic --pg1-path=/var/lib/postgresql/data --type=time '--target=2026-11-30 12:00:00+00' --target-action=promote --archive-mode=preserve restore");
    expect(entrypoint).not.toMatch(/^\s*as_postgres initdb/m);
    expect(entrypoint).toContain("restore=1");
  });

  it("replicas re-clone into a new volume from the restored primary", () => {
    expect(replicaAfter.one(VOLUME, "postgres-data").inputs.name).toBe("synaxic-replica-1-pgdata-g0-r1");
    expect(replica.one(VOLUME, "postgres-data").inputs.name).toBe("synaxic-replica-1-pgdata-g0");
  });
});

describe("ordering", () => {
  it("the scheduler starts once the stanza exists (a backup before stanza-create fails)", () => {
    expect(main.one(CONTAINER, "postgres-backup").opts.dependsOn).toEqual(expect.arrayContaining(["postgres-ready", "postgres-stanza"]));
  });
});

describe("backups from a standby (backupFrom)", () => {
  it("auto with a replica: the first replica's scheduler takes them (as a standby, and as the primary once promoted); main's takes none", () => {
    const script = (run: AnyRun) => String((run.one(CONTAINER, "postgres-backup").inputs.uploads as { content: string }[])[0]!.content);
    expect(script(main)).toContain("ACTS=never");
    expect(script(replica)).toContain("ACTS=always");
    expect(script(replica)).toContain("gosu postgres pgbackrest --config-path=/etc/pgbackrest/standby --stanza=synaxic --type=full backup");
    // The fleet's names for the scheduler's hosts file: the primary's TLS server is reached by its certificate's DNS name.
    expect(script(replica)).toContain("FLEET_HOSTS=/etc/pgbackrest/fleet-hosts");
    expect(String(replica.one(COMMAND, "postgres-pgbackrest-fleet-hosts").inputs.stdin)).toBe("10.10.0.2 main\n10.10.0.3 replica-1\n");
    const standbyConf = String(replica.one(COMMAND, "postgres-pgbackrest-standby-conf").inputs.stdin);
    expect(standbyConf).toContain("backup-standby=y");
    expect(standbyConf).toContain("pg2-host=main");
    expect(standbyConf).toContain("pg2-host-type=tls");
    expect(main.of(COMMAND).filter((c) => c.name.includes("standby-conf"))).toEqual([]);
  });

  it("every host runs pgBackRest's TLS server on its private address, letting in the fleet's hosts by CN; its key 0600 postgres, secret", () => {
    for (const [run, host, ip] of [[main, "main", "10.10.0.2"], [replica, "replica-1", "10.10.0.3"]] as const) {
      const conf = String(run.one(COMMAND, "postgres-pgbackrest-conf").inputs.stdin);
      expect(conf).toContain(`tls-server-address=${ip}`);
      expect(conf).toContain("tls-server-auth=postgres.main=synaxic");
      expect(conf).toContain("tls-server-auth=postgres.replica-1=synaxic");
      const server = run.one(CONTAINER, "postgres-pgbackrest-server").inputs;
      expect(server.name).toBe(`synaxic-${host}-pgbackrest`);
      expect(server.user).toBe("999:999");
      expect(server.entrypoints).toEqual(["pgbackrest", "--config-path=/etc/pgbackrest", "server"]);
      expect(server.memory).toBe(64);
      const key = run.one(COMMAND, "postgres-pgbackrest-tls-key");
      expect(key.inputs.create).toMatch(/ 0600 999:999$/);
      expect((key.raw.stdin as Record<string, unknown>)[SECRET_SIG]).toBeDefined();
    }
  });

  it("the host firewalls admit the TLS server's port from the fleet only, and only with backups on", () => {
    const rules = (run: AnyRun) => JSON.stringify(run.of("hcloud:index/firewall:Firewall").map((f) => f.inputs.rules));
    expect(rules(main)).toMatch(/pgBackRest from replica-1.*"port":"8432".*10\.10\.0\.3\/32/);
    expect(rules(plain)).not.toContain("8432");
  });
});

describe("a replica added with backups on", () => {
  it("changes main's pgBackRest files, not its containers (no PostgreSQL, scheduler or TLS server re-created)", async () => {
    const two = (await runMain(2, BACKUP)) as AnyRun;
    for (const c of ["postgres-container", "postgres-backup", "postgres-pgbackrest-server"]) {
      expect(JSON.stringify(two.one(CONTAINER, c).inputs), c).toBe(JSON.stringify(main.one(CONTAINER, c).inputs));
    }
    expect(String(two.one(COMMAND, "postgres-pgbackrest-fleet-hosts").inputs.stdin)).toContain("10.10.0.4 replica-2");
    expect(String(two.one(COMMAND, "postgres-pgbackrest-conf").inputs.stdin)).toContain("tls-server-auth=postgres.replica-2=synaxic");
  }, 120_000);
});

describe("backupCipherPass given (a stack re-created over an existing repository)", () => {
  it("is the cipher pass of every host's secrets file and of the replicas' credentials, instead of the generated one", async () => {
    const given = "the-repository-s-old-cipher-pass-42";
    const r = await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: { ...BACKUP, [`${P}backupCipherPass`]: given } });
    for (const run of [r.main, r.replica] as AnyRun[]) expect(String(run.one(COMMAND, "postgres-pgbackrest-secrets").inputs.stdin)).toContain(`repo1-cipher-pass=${given}`);
    expect((r.main as AnyRun).secretOutputs.has("replicaCredentials")).toBe(true);
  }, 120_000);
});

describe("backupFrom: primary", () => {
  it("the primary's scheduler takes them; no standby configuration anywhere", async () => {
    const r = await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: { ...BACKUP, [`${P}backupFrom`]: "primary" } });
    const script = (run: AnyRun) => String((run.one(CONTAINER, "postgres-backup").inputs.uploads as { content: string }[])[0]!.content);
    expect(script(r.main as AnyRun)).toContain("ACTS=whenPrimary");
    expect(script(r.replica as AnyRun)).toContain("ACTS=whenPrimary");
    expect((r.replica as AnyRun).of(COMMAND).filter((c) => c.name.includes("standby-conf"))).toEqual([]);
  }, 120_000);
});

describe("the restore drill (backupDrill)", () => {
  const script = (run: AnyRun) => String((run.one(CONTAINER, "postgres-backup").inputs.uploads as { content: string }[])[0]!.content);
  const scheduled = /\[ "\$\(date -u \+%w\)" = (\d) \] && \[ "\$\(date -u \+%H\)" -ge (\d+) \][^\n]*\n\s+record drill day[^\n]*\n\s+run drill drill_run/;

  it("on by default: every scheduler can run it, the one that takes the backups runs it on Saturday from 05:00 UTC, bounded by two hours, into its state volume", () => {
    for (const run of [main, replica]) {
      const s = script(run);
      expect(s).toMatch(scheduled);
      expect(scheduled.exec(s)!.slice(1, 3)).toEqual(["6", "5"]);
      expect(s).toContain("DRILL_TIMEOUT=7200");
      expect(s).toContain("DRILL_DIR=/var/lib/synaxic-backup/drill");
      expect(s).toContain("--pg1-path=/var/lib/synaxic-backup/drill/data --type=immediate --target-action=promote --archive-mode=off");
      // The proof query runs in the fleet's database.
      expect(s).toMatch(/psql -X -At -h \/var\/lib\/synaxic-backup\/drill\/socket -p 5432 -d synaxic -c 'SELECT pg_catalog\.pg_is_in_recovery\(\), /);
    }
    // The drill runs inside the acting branch: with backups from the first replica (auto), main's scheduler never acts.
    expect(script(main)).toContain("ACTS=never");
    expect(script(replica)).toContain("ACTS=always");
    // The scratch directory is in the scheduler's state volume.
    expect((main.one(CONTAINER, "postgres-backup").inputs.volumes as { containerPath: string }[]).map((v) => v.containerPath)).toContain("/var/lib/synaxic-backup");
  });

  it("its schedule and bound from the main stack's config reach every host's scheduler, replicas through the main stack's outputs", async () => {
    const r = await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: { ...BACKUP, [`${P}backupDrill`]: JSON.stringify({ weekday: 2, hourUtc: 14, timeoutMinutes: 30 }) } });
    for (const run of [r.main, r.replica] as AnyRun[]) {
      expect(scheduled.exec(script(run))!.slice(1, 3)).toEqual(["2", "14"]);
      expect(script(run)).toContain("DRILL_TIMEOUT=1800");
    }
  }, 120_000);

  it("enabled false: no scheduled drill and no drill metrics on any host (so no drill alert), a drill on demand still possible", async () => {
    const r = await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: { ...BACKUP, [`${P}backupDrill`]: JSON.stringify({ enabled: false }) } });
    for (const run of [r.main, r.replica] as AnyRun[]) {
      expect(script(run)).not.toMatch(scheduled);
      expect(script(run)).not.toContain("synaxic_backup_drill_");
      expect(script(run)).toContain('if [ "${1:-}" = drill ]; then');
    }
  }, 120_000);

  it("a main stack from before drills (no drill in its outputs): replicas take the default", async () => {
    const r = await runReplica("replica-1", "10.10.0.3", {
      replicas: 1,
      mainExtra: BACKUP,
      mutateMainOutputs: (o) => {
        delete ((o.fleet as { backup: Record<string, unknown> }).backup as Record<string, unknown>).drill;
      },
    });
    expect(scheduled.exec(script(r.replica as AnyRun))!.slice(1, 3)).toEqual(["6", "5"]);
  }, 120_000);
});
