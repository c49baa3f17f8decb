/**
 * PostgreSQL templates: snapshots of every template with the parameters the
 * components use (container paths), the properties that matter checked
 * explicitly, and every validation error.
 */
import { afterAll, describe, expect, it } from "vitest";
import { createHash, createHmac } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import {
  PostgresTemplateError,
  conninfoValue,
  pgConfString,
  postgresExporterQueries,
  psqlScriptArgv,
  quoteLiteral,
  renderConninfo,
  renderPgHba,
  renderPgpass,
  renderPostgresExporterQueries,
  renderPostgresqlConf,
  renderPrimaryEntrypoint,
  renderPromoteSql,
  renderReplicaEntrypoint,
  renderRolesSql,
  renderSlotCreateSql,
  renderSlotDropSql,
  replicaSlotName,
  scramSaltFor,
  scramSha256Verifier,
  type PgHbaParams,
  type PrimaryConfParams,
  type ReplicaConfParams,
  type ReplicaEntrypointParams,
  type RolesSqlParams,
} from "../../../templates/postgres";
import { renderBootstrapPermit, type PrimaryEntrypointParams } from "../../../templates/postgres-entrypoint";
import { RESTART_SETTINGS } from "../../../templates/postgres-conf";

const tls = { certFile: "/etc/synaxic/tls/server.crt", keyFile: "/etc/synaxic/tls/server.key", caFile: "/etc/synaxic/tls/ca.crt" };

const primaryConf: PrimaryConfParams = {
  role: "primary",
  name: "main",
  dataDir: "/var/lib/postgresql/data",
  hbaFile: "/etc/synaxic/hba/pg_hba.conf",
  listenAddresses: ["*"],
  tune: { memoryMiB: 4096, cpus: 2, maxConnections: 100 },
  tls,
  maxSlotWalKeepSizeMB: 10240,
  walKeepSizeMB: 512,
};

const replicaConf: ReplicaConfParams = {
  ...primaryConf,
  role: "replica",
  name: "replica-1",
  primary: { host: "10.0.0.2", port: 5432 },
  replicationUser: "replicator",
  passfile: "/run/synaxic/pgpass",
  applicationName: "replica-1",
  slotName: "synaxic_replica_1",
};

const hba: PgHbaParams = {
  appDatabase: "synaxic",
  appUser: "synaxic",
  appAddresses: ["172.20.0.5"],
  replicationUser: "replicator",
  replicaAddresses: ["10.0.0.3", "10.0.0.4"],
  rewindUser: "synaxic_rewind",
  exporterUser: "synaxic_exporter",
  exporterAddresses: ["172.20.0.9", "fd00::9"],
};

const roles: RolesSqlParams = {
  appDatabase: "synaxic",
  app: { name: "synaxic", password: "app-secret:with\\odd'chars" },
  replication: { name: "replicator", password: "replication-secret" },
  exporter: { name: "synaxic_exporter", password: "exporter-secret" },
  rewind: { name: "synaxic_rewind", password: "rewind-secret" },
};

const replicaEntrypoint: ReplicaEntrypointParams = {
  mode: "replica",
  dataDir: "/var/lib/postgresql/data",
  configFile: "/etc/synaxic/postgresql.conf",
  primary: { host: "10.0.0.2" },
  replicationUser: "replicator",
  rewindUser: "synaxic_rewind",
  slotName: "synaxic_replica_1",
  applicationName: "replica-1",
  passfile: "/run/synaxic/pgpass",
  caFile: "/etc/synaxic/tls/ca.crt",
};

const primaryEntrypoint: PrimaryEntrypointParams = {
  dataDir: "/var/lib/postgresql/data",
  configFile: "/etc/synaxic/postgresql.conf",
  bootstrap: { permitFile: "/etc/synaxic/bootstrap/permit", cluster: "main", generation: 0 },
};

function bashSyntaxOk(script: string): void {
  execFileSync("bash", ["-n"], { input: script });
}

describe("postgresql.conf", () => {
  it("primary", () => {
    const conf = renderPostgresqlConf(primaryConf);
    expect(conf).toMatchSnapshot();
    for (const l of [
      "wal_level = replica",
      "wal_log_hints = on",
      "hot_standby = on",
      "ssl = on",
      "ssl_min_protocol_version = 'TLSv1.2'",
      "password_encryption = 'scram-sha-256'",
      "max_slot_wal_keep_size = '10240MB'",
      "wal_keep_size = '512MB'",
      "log_connections = on",
      "log_replication_commands = on",
      "hba_file = '/etc/synaxic/hba/pg_hba.conf'",
      "shared_buffers = '1GB'",
      "work_mem = '9709kB'",
    ]) {
      expect(conf.split("\n")).toContain(l);
    }
    expect(conf).not.toContain("primary_conninfo");
  });

  it("replica", () => {
    const conf = renderPostgresqlConf(replicaConf);
    expect(conf).toMatchSnapshot();
    expect(conf.split("\n")).toContain(
      "primary_conninfo = 'host=10.0.0.2 port=5432 user=replicator passfile=/run/synaxic/pgpass sslmode=verify-full sslrootcert=/etc/synaxic/tls/ca.crt application_name=replica-1 connect_timeout=10'",
    );
    for (const l of ["primary_slot_name = 'synaxic_replica_1'", "recovery_target_timeline = 'latest'", "hot_standby_feedback = on"]) {
      expect(conf.split("\n")).toContain(l);
    }
    expect(conf).not.toMatch(/password=/);
  });

  it("gives every server the cluster's highest max_connections and max_worker_processes, as hot standbys require", () => {
    const cluster = [
      { memoryMiB: 16384, cpus: 8, maxConnections: 200 },
      { memoryMiB: 4096, cpus: 4, maxConnections: 100 },
    ];
    const lines = renderPostgresqlConf({ ...replicaConf, tune: { memoryMiB: 4096, cpus: 4, maxConnections: 100 }, clusterTunes: cluster }).split("\n");
    expect(lines).toContain("max_connections = 200");
    expect(lines).toContain("max_worker_processes = 8");
    expect(lines).toContain("max_parallel_workers = 4");
    expect(lines).toContain("work_mem = '10082kB'"); // own sizing: 3145728 / ((100 + 4) * 3)
    // Small servers still state PostgreSQL's default explicitly, so that it cannot drift.
    const small = renderPostgresqlConf({ ...primaryConf, clusterTunes: [primaryConf.tune] }).split("\n");
    expect(small).toContain("max_worker_processes = 8");
    expect(small).toContain("max_connections = 100");
    expect(small.filter((l) => l.startsWith("max_connections"))).toHaveLength(1);
  });

  it("quotes values: conf strings double quotes and escape backslashes, conninfo values are quoted when needed", () => {
    expect(pgConfString("it's a\\b")).toBe("'it''s a\\\\b'");
    expect(conninfoValue("plain")).toBe("plain");
    expect(conninfoValue("a b'c\\d")).toBe("'a b\\'c\\\\d'");
    expect(conninfoValue("")).toBe("''");
    expect(renderConninfo([["host", "h"], ["passfile", "/run/my secrets/pgpass"], ["port", undefined]])).toBe("host=h passfile='/run/my secrets/pgpass'");
    const conf = renderPostgresqlConf({ ...replicaConf, passfile: "/run/it's here/pgpass" });
    expect(conf).toContain("primary_conninfo = 'host=10.0.0.2 port=5432 user=replicator passfile=''/run/it\\\\''s here/pgpass'' sslmode=");
  });

  it("synchronous replication: ANY 1 of the named standbys, each double-quoted, on a primary and (for when it is promoted) a replica; absent, no line", () => {
    const line = (conf: string) => conf.split("\n").filter((l) => l.startsWith("synchronous_standby_names"));
    expect(line(renderPostgresqlConf(primaryConf))).toEqual([]);
    expect(line(renderPostgresqlConf({ ...primaryConf, synchronousStandbyNames: ["replica-1", "replica-2"] }))).toEqual([`synchronous_standby_names = 'ANY 1 ("replica-1", "replica-2")'`]);
    expect(line(renderPostgresqlConf({ ...replicaConf, synchronousStandbyNames: ["main"] }))).toEqual([`synchronous_standby_names = 'ANY 1 ("main")'`]);
    // A reload, not a restart (sighup in pg_settings).
    expect(RESTART_SETTINGS).not.toContain("synchronous_standby_names");
    expect(() => renderPostgresqlConf({ ...primaryConf, synchronousStandbyNames: [] })).toThrow(/synchronousStandbyNames is empty: a quorum of one needs at least one standby/);
    expect(() => renderPostgresqlConf({ ...primaryConf, synchronousStandbyNames: ["a", "a"] })).toThrow(/names "a" twice/);
    expect(() => renderPostgresqlConf({ ...primaryConf, synchronousStandbyNames: ['x", "y'] })).toThrow(/replica name .* is not valid/);
  });

  it("rejects bad parameters with clear errors", () => {
    expect(() => renderPostgresqlConf({ ...primaryConf, listenAddresses: [] })).toThrow(/listenAddresses is empty/);
    expect(() => renderPostgresqlConf({ ...primaryConf, listenAddresses: ["10.0.0.0/24"] })).toThrow(/must be a single IP address/);
    expect(() => renderPostgresqlConf({ ...primaryConf, listenAddresses: ["db.example"] })).toThrow(/is not an IP address/);
    expect(() => renderPostgresqlConf({ ...primaryConf, listenAddresses: ["*", "10.0.0.2"] })).toThrow(/cannot be combined/);
    expect(() => renderPostgresqlConf({ ...primaryConf, dataDir: "data" })).toThrow(/dataDir "data" must be an absolute path/);
    expect(() => renderPostgresqlConf({ ...primaryConf, hbaFile: "/etc/x\n/y" })).toThrow(/control character/);
    expect(() => renderPostgresqlConf({ ...primaryConf, port: 70000 })).toThrow(/not a TCP port/);
    expect(() => renderPostgresqlConf({ ...primaryConf, maxSlotWalKeepSizeMB: -1 })).toThrow(/maxSlotWalKeepSizeMB must be a non-negative integer/);
    expect(() => renderPostgresqlConf({ ...primaryConf, role: "standby" } as unknown as PrimaryConfParams)).toThrow(/role must be "primary" or "replica"/);
    expect(() => renderPostgresqlConf({ ...replicaConf, slotName: "Replica-1" })).toThrow(/may contain only lower-case letters, digits and underscores/);
    expect(() => renderPostgresqlConf({ ...replicaConf, applicationName: "Replica 1" })).toThrow(/replica name "Replica 1" is not valid/);
    expect(() => renderPostgresqlConf({ ...replicaConf, primary: { host: "bad host" } })).toThrow(/neither an IP address nor a host name/);
    expect(() => renderPostgresqlConf({ ...replicaConf, replicationUser: "Replicator" })).toThrow(/replication user "Replicator" is not a valid name/);
    expect(() => renderPostgresqlConf({ ...primaryConf, tune: { memoryMiB: 0, cpus: 1, maxConnections: 10 } })).toThrow(/memoryMiB/);
    expect(() => renderPostgresqlConf({ ...primaryConf, listenAddresses: ["10.0.0.0/24"] })).toThrow(PostgresTemplateError);
  });
});

describe("pg_hba.conf", () => {
  it("rewindAddresses narrows the rewind role's lines (none at all when empty); replication is unchanged", () => {
    const rewind = (text: string) => text.split("\n").filter((l) => /synaxic_rewind/.test(l) && !l.startsWith("#"));
    expect(rewind(renderPgHba({ ...hba, rewindAddresses: [] }))).toEqual([]);
    expect(rewind(renderPgHba({ ...hba, rewindAddresses: ["10.0.0.4"] }))).toEqual([expect.stringMatching(/^hostssl\s+postgres\s+synaxic_rewind\s+10\.0\.0\.4\/32\s+scram-sha-256$/)]);
    expect(renderPgHba({ ...hba, rewindAddresses: [] }).split("\n").filter((l) => /^hostssl\s+replication/.test(l))).toHaveLength(2);
    expect(() => renderPgHba({ ...hba, rewindAddresses: ["10.0.0.4", "10.0.0.4"] })).toThrow(/rewind address lists 10\.0\.0\.4 twice/);
  });
  it("lets each role in only from its hosts, over TLS with SCRAM, and rejects the rest explicitly", () => {
    const text = renderPgHba(hba);
    expect(text).toMatchSnapshot();
    const rows = text
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => l.split(/\s+/));
    expect(rows[0]).toEqual(["local", "all", "postgres", "peer"]);
    const network = rows.filter((r) => r[0] !== "local");
    for (const r of network) {
      expect(r.at(-1)).not.toBe("trust");
      if (r[0] === "host") expect(r.at(-1)).toBe("reject");
      else {
        expect(r[0]).toBe("hostssl");
        expect(r.at(-1)).toBe("scram-sha-256");
        expect(r[3]).toMatch(/\/(32|128)$/);
      }
    }
    expect(network.filter((r) => r[1] === "replication" && r[4] === "scram-sha-256").map((r) => [r[2], r[3]])).toEqual([
      ["replicator", "10.0.0.3/32"],
      ["replicator", "10.0.0.4/32"],
    ]);
    expect(network.filter((r) => r[2] === "synaxic").map((r) => [r[1], r[3]])).toEqual([["synaxic", "172.20.0.5/32"]]);
    expect(network.filter((r) => r[2] === "synaxic_exporter").map((r) => r[3])).toEqual(["172.20.0.9/32", "fd00::9/128"]);
    expect(network.filter((r) => r[2] === "synaxic_rewind").map((r) => [r[1], r[3]])).toEqual([
      ["postgres", "10.0.0.3/32"],
      ["postgres", "10.0.0.4/32"],
    ]);
    // The catch-all rejects come last, for IPv4 and IPv6, replication included.
    expect(rows.slice(-4)).toEqual([
      ["host", "replication", "all", "0.0.0.0/0", "reject"],
      ["host", "replication", "all", "::/0", "reject"],
      ["host", "all", "all", "0.0.0.0/0", "reject"],
      ["host", "all", "all", "::/0", "reject"],
    ]);
  });

  it("rejects bad addresses and names with clear errors", () => {
    expect(() => renderPgHba({ ...hba, replicaAddresses: ["0.0.0.0/0"] })).toThrow(/replica address "0.0.0.0\/0" must be a single IP address, not a network/);
    expect(() => renderPgHba({ ...hba, replicaAddresses: ["replica1.example"] })).toThrow(/replica address "replica1.example" is not an IP address/);
    expect(() => renderPgHba({ ...hba, appAddresses: ["0.0.0.0"] })).toThrow(/unspecified address/);
    expect(() => renderPgHba({ ...hba, exporterAddresses: ["::"] })).toThrow(/unspecified address/);
    expect(() => renderPgHba({ ...hba, appAddresses: ["10.0.0.5", "10.0.0.5"] })).toThrow(/lists 10.0.0.5 twice/);
    expect(() => renderPgHba({ ...hba, appUser: "replicator" })).toThrow(/replication user "replicator" is also the app user/);
    expect(() => renderPgHba({ ...hba, exporterUser: "postgres" })).toThrow(/is also the local superuser/);
    expect(() => renderPgHba({ ...hba, appUser: "all" })).toThrow(/pg_hba.conf keyword/);
    expect(() => renderPgHba({ ...hba, appDatabase: "postgres" })).toThrow(/must differ from the rewind and exporter databases/);
    expect(() => renderPgHba({ ...hba, appDatabase: "Synaxic" })).toThrow(/app database "Synaxic" is not a valid name/);
    expect(() => renderPgHba({ ...hba, rewindUser: "pg_rewinder" })).toThrow(/reserves/);
  });
});

describe(".pgpass", () => {
  it("escapes ':' and '\\' and allows wildcards", () => {
    const text = renderPgpass([
      { host: "10.0.0.2", port: 5432, user: "replicator", password: "a:b\\c" },
      { host: "*", port: "*", database: "postgres", user: "synaxic_rewind", password: "p" },
      { host: "fd00::2", port: 5432, user: "replicator", password: "q" },
    ]);
    expect(text).toMatchSnapshot();
    expect(text.split("\n")[0]).toBe("10.0.0.2:5432:*:replicator:a\\:b\\\\c");
    expect(text.split("\n")[2]).toBe("fd00\\:\\:2:5432:*:replicator:q");
  });

  it("rejects what it cannot represent", () => {
    expect(() => renderPgpass([])).toThrow(/at least one entry/);
    expect(() => renderPgpass([{ host: "h", port: 5432, user: "u", password: "a\nb" }])).toThrow(/line break/);
    expect(() => renderPgpass([{ host: "h", port: 5432, user: "u", password: "" }])).toThrow(/password is empty/);
    expect(() => renderPgpass([{ host: "h h", port: 5432, user: "u", password: "x" }])).toThrow(/neither an IP address nor a host name/);
  });
});

describe("SCRAM-SHA-256 verifiers", () => {
  it("match RFC 7677's example exchange (user, pencil)", () => {
    const salt = Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64");
    const verifier = scramSha256Verifier("pencil", salt);
    const m = /^SCRAM-SHA-256\$4096:([^$]+)\$([^:]+):(.+)$/.exec(verifier);
    expect(m).not.toBeNull();
    expect(m![1]).toBe("W22ZaJ0SNY7soEsUEjb6gQ==");
    const storedKey = Buffer.from(m![2]!, "base64");
    const serverKey = Buffer.from(m![3]!, "base64");
    const nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const authMessage = `n=user,r=rOprNGfwEbeRWgbNEkqO,r=${nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=${nonce}`;
    // The server signature the RFC's server sends (v=...).
    expect(createHmac("sha256", serverKey).update(authMessage).digest("base64")).toBe("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    // The RFC client's proof checks out against StoredKey, as the server verifies it.
    const proof = Buffer.from("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "base64");
    const signature = createHmac("sha256", storedKey).update(authMessage).digest();
    const clientKey = Buffer.from(proof.map((b, i) => b ^ signature[i]!));
    expect(createHash("sha256").update(clientKey).digest().equals(storedKey)).toBe(true);
  });

  it("derives a stable salt per role and password, different across roles", () => {
    expect(scramSaltFor("synaxic", "pw").equals(scramSaltFor("synaxic", "pw"))).toBe(true);
    expect(scramSaltFor("synaxic", "pw").equals(scramSaltFor("replicator", "pw"))).toBe(false);
    expect(scramSaltFor("synaxic", "pw").equals(scramSaltFor("synaxic", "pw2"))).toBe(false);
    expect(scramSaltFor("synaxic", "pw")).toHaveLength(16);
    expect(scramSha256Verifier("pw", scramSaltFor("synaxic", "pw"), 8192)).toMatch(/^SCRAM-SHA-256\$8192:/);
  });

  it("rejects what PostgreSQL would hash differently or weakly", () => {
    expect(() => scramSha256Verifier("pässword", scramSaltFor("a", "b"))).toThrow(/must be ASCII/);
    expect(() => scramSha256Verifier("", scramSaltFor("a", "b"))).toThrow(/empty/);
    expect(() => scramSha256Verifier("pw", Buffer.alloc(4))).toThrow(/at least 8 bytes/);
    expect(() => scramSha256Verifier("pw", scramSaltFor("a", "b"), 1000)).toThrow(/at least 4096/);
  });
});

describe("roles SQL", () => {
  it("creates or updates every role with a verifier, never a plaintext password", () => {
    const sql = renderRolesSql(roles);
    expect(sql).toMatchSnapshot();
    for (const r of [roles.app, roles.replication, roles.exporter, roles.rewind]) {
      expect(sql).not.toContain(r.password);
      const verifier = scramSha256Verifier(r.password, scramSaltFor(r.name, r.password));
      expect(sql).toContain(`CREATE ROLE "${r.name}" `);
      expect(sql).toContain(`ALTER ROLE "${r.name}" `);
      expect(sql).toContain(`PASSWORD '${verifier}'`);
    }
    expect(sql).toMatch(/CREATE ROLE "replicator" LOGIN [A-Z ]* REPLICATION PASSWORD/);
    expect(sql).toMatch(/CREATE ROLE "synaxic" LOGIN [A-Z ]*NOREPLICATION PASSWORD/);
    expect(sql).toContain('GRANT pg_monitor TO "synaxic_exporter";');
    for (const f of ["pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)", "pg_read_binary_file(text)", "pg_read_binary_file(text, bigint, bigint, boolean)"]) {
      expect(sql).toContain(`GRANT EXECUTE ON FUNCTION pg_catalog.${f} TO "synaxic_rewind";`);
    }
    expect(sql).toContain('GRANT pg_checkpoint TO "synaxic_rewind";');
    expect(sql).not.toMatch(/SUPERUSER(?<!NOSUPERUSER)/);
    // CREATE DATABASE outside any DO block, through \gexec.
    expect(sql).toMatch(/SELECT 'CREATE DATABASE "synaxic" OWNER "synaxic" [^\n]*WHERE NOT EXISTS[^\n]*\n\\gexec\n/);
    // Stable across renders.
    expect(renderRolesSql(roles)).toBe(sql);
  });

  it("runs through psql reading stdin, stopping at the first error", () => {
    expect(psqlScriptArgv()).toEqual(["psql", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=terse", "--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--username=postgres", "--dbname=postgres", "--file=-"]);
  });

  it("rejects bad role sets", () => {
    expect(() => renderRolesSql({ ...roles, rewind: { name: "replicator", password: "x" } })).toThrow(/is used for two roles/);
    expect(() => renderRolesSql({ ...roles, app: { name: "postgres", password: "x" } })).toThrow(/cannot be the superuser/);
    expect(() => renderRolesSql({ ...roles, appDatabase: "postgres" })).toThrow(/must differ from the admin database/);
    expect(() => renderRolesSql({ ...roles, exporter: { name: "Exporter", password: "x" } })).toThrow(/exporter role "Exporter" is not a valid name/);
    expect(() => renderRolesSql({ ...roles, app: { name: "synaxic", password: "two\nlines" } })).toThrow(/line break/);
  });

  it("quotes literals like quote_literal()", () => {
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(quoteLiteral("a\\b")).toBe("E'a\\\\b'");
  });
});

describe("slots and promotion SQL", () => {
  it("renders idempotent slot creation and a drop that terminates the walsender first", () => {
    expect(renderSlotCreateSql("synaxic_replica_1")).toMatchSnapshot();
    const drop = renderSlotDropSql("synaxic_replica_1");
    expect(drop).toMatchSnapshot();
    expect(drop.indexOf("pg_terminate_backend")).toBeLessThan(drop.indexOf("pg_drop_replication_slot"));
    expect(renderPromoteSql()).toMatchSnapshot();
    expect(renderPromoteSql()).toContain("pg_promote(true, 60)");
  });

  it("gives every replica its own slot name", () => {
    expect(replicaSlotName("replica-1")).toBe("synaxic_replica_1");
    expect(replicaSlotName("replica2")).toBe("synaxic_replica2");
    expect(() => replicaSlotName("Replica 1")).toThrow(/replica name/);
  });

  it("rejects slot names PostgreSQL would not accept", () => {
    expect(() => renderSlotCreateSql("")).toThrow(/replication slot name is empty/);
    expect(() => renderSlotCreateSql("Replica1")).toThrow(/may contain only lower-case letters, digits and underscores/);
    expect(() => renderSlotDropSql("replica-1")).toThrow(/may contain only lower-case letters, digits and underscores/);
    expect(() => renderSlotDropSql("x'; DROP TABLE t; --")).toThrow(PostgresTemplateError);
    expect(() => renderSlotCreateSql("s".repeat(64))).toThrow(/longer than 63 characters/);
    expect(renderSlotCreateSql("s".repeat(63))).toContain("s".repeat(63));
  });
});

describe("entrypoints", () => {
  it.each(["replica", "promoted", "rejoin"] as const)("replica entrypoint, mode %s", (mode) => {
    const script = renderReplicaEntrypoint({ ...replicaEntrypoint, mode });
    expect(script).toMatchSnapshot();
    bashSyntaxOk(script);
    expect(script).toContain(`readonly MODE=${mode}`);
    expect(script.trimEnd().split("\n").at(-1)).toBe("exec gosu postgres postgres -c config_file=/etc/synaxic/postgresql.conf");
  });

  it("clones with its own slot over verified TLS, with the password only in the passfile", () => {
    const script = renderReplicaEntrypoint(replicaEntrypoint);
    expect(script).toContain("pg_basebackup --pgdata=\"$DATA_DIR\" --dbname=\"$REPLICATION_CONNINFO\" --no-password \\\n    --wal-method=stream --checkpoint=fast --slot=\"$SLOT\"");
    // The slot exists, reserving WAL, before the backup's checkpoint.
    expect(script.indexOf("CREATE_REPLICATION_SLOT $SLOT PHYSICAL (RESERVE_WAL)")).toBeLessThan(script.indexOf("pg_basebackup --pgdata"));
    expect(script.indexOf("pg_receivewal --drop-slot")).toBeLessThan(script.indexOf("CREATE_REPLICATION_SLOT"));
    expect(script).not.toMatch(/pg_basebackup[^\n]* -R\b|--write-recovery-conf/);
    expect(script).toContain("pg_receivewal --drop-slot");
    expect(script).toMatch(/REPLICATION_CONNINFO='[^']*sslmode=verify-full sslrootcert=\/etc\/synaxic\/tls\/ca.crt/);
    expect(script).toMatch(/REPLICATION_CONNINFO='[^']*passfile=\/run\/synaxic\/pgpass/);
    expect(script).not.toMatch(/PGPASSWORD|password=/);
    expect(script).toContain("pg_rewind --target-pgdata=");
  });

  it("runs without gosu when told how to switch user, and quotes odd paths", () => {
    const script = renderReplicaEntrypoint({
      ...replicaEntrypoint,
      dataDir: "/srv/pg data/it's",
      asPostgres: ["runuser", "-u", "postgres", "--"],
      binDir: "/usr/lib/postgresql/15/bin",
    });
    bashSyntaxOk(script);
    expect(script).toContain("readonly DATA_DIR='/srv/pg data/it'\\''s'");
    expect(script).toContain("as_postgres() { runuser -u postgres -- \"$@\"; }");
    expect(script).toContain("exec runuser -u postgres -- postgres -c config_file=/etc/synaxic/postgresql.conf");
    const out = execFileSync("bash", ["-c", `${script.split("\nlog()")[0]}\nprintf '%s' "$DATA_DIR"`], { encoding: "utf8" });
    expect(out).toBe("/srv/pg data/it's");
  });

  it("primary entrypoint with a restore: pgBackRest restores behind the restore's own permit, marked while it runs, and no initdb", () => {
    const script = renderPrimaryEntrypoint({ ...primaryEntrypoint, restore: { id: 3, target: "latest", argv: ["pgbackrest", "--stanza=synaxic", "--type=default", "restore"] } });
    expect(script).toMatchSnapshot();
    bashSyntaxOk(script);
    expect(script).not.toMatch(/as_postgres initdb/);
    expect(script).toMatch(/ restore=3'$/m);
    const marker = script.indexOf('touch "$PERMIT_FILE.restoring"');
    const restore = script.indexOf("as_postgres pgbackrest --stanza=synaxic --type=default restore");
    expect(marker).toBeGreaterThan(script.indexOf("if permit_valid; then"));
    expect(restore).toBeGreaterThan(marker);
    expect(script.indexOf('rm -f "$PERMIT_FILE.restoring"', restore)).toBeGreaterThan(restore);
    expect(() => renderPrimaryEntrypoint({ ...primaryEntrypoint, restore: { id: 3, target: "latest", argv: [] } })).toThrow(/restore argv is empty/);
  });

  it("primary entrypoint", () => {
    const script = renderPrimaryEntrypoint(primaryEntrypoint);
    expect(script).toMatchSnapshot();
    bashSyntaxOk(script);
    expect(script.indexOf("standby.signal")).toBeLessThan(script.indexOf("initdb"));
    expect(script).toContain("--auth-host=reject");
    // initdb only behind the permit check, and the permit is removed right after it.
    const lines = script.split("\n");
    const initdb = lines.findIndex((l) => /^\s*as_postgres initdb /.test(l));
    expect(lines.filter((l) => /\binitdb /.test(l))).toHaveLength(1);
    expect(lines[initdb - 2]).toBe("  if permit_valid; then");
    expect(lines[initdb + 1]).toBe("    remove_permit");
    expect(script).toContain(`readonly PERMIT='synaxic-bootstrap-permit v1 cluster=main generation=0 data_dir=/var/lib/postgresql/data'`);
  });

  it("a bootstrap permit names the cluster, the generation and the data directory, on one line", () => {
    expect(renderBootstrapPermit({ cluster: "main", generation: 0, dataDir: "/var/lib/postgresql/data" })).toBe(
      "synaxic-bootstrap-permit v1 cluster=main generation=0 data_dir=/var/lib/postgresql/data\n",
    );
    expect(renderBootstrapPermit({ cluster: "main", generation: 7, dataDir: "/d" })).not.toBe(renderBootstrapPermit({ cluster: "main", generation: 6, dataDir: "/d" }));
    expect(renderBootstrapPermit({ cluster: "main", generation: 0, dataDir: "/d" })).not.toBe(renderBootstrapPermit({ cluster: "replica-1", generation: 0, dataDir: "/d" }));
    expect(() => renderBootstrapPermit({ cluster: "Main Host", generation: 0, dataDir: "/d" })).toThrow(/bootstrap cluster "Main Host" is not valid/);
    expect(() => renderBootstrapPermit({ cluster: "main", generation: -1, dataDir: "/d" })).toThrow(/bootstrap generation must be a non-negative integer/);
    expect(() => renderBootstrapPermit({ cluster: "main", generation: 1.5, dataDir: "/d" })).toThrow(/bootstrap generation must be a non-negative integer/);
    expect(() => renderBootstrapPermit({ cluster: "main", generation: 0, dataDir: "/d\nx" })).toThrow(/control character/);
  });

  it("rejects bad parameters", () => {
    expect(() => renderReplicaEntrypoint({ ...replicaEntrypoint, mode: "primary" as never })).toThrow(/mode must be "replica", "promoted" or "rejoin"/);
    expect(() => renderReplicaEntrypoint({ ...replicaEntrypoint, slotName: "bad-slot" })).toThrow(/replication slot name "bad-slot"/);
    expect(() => renderReplicaEntrypoint({ ...replicaEntrypoint, passfile: "pgpass" })).toThrow(/passfile "pgpass" must be an absolute path/);
    expect(() => renderReplicaEntrypoint({ ...replicaEntrypoint, asPostgres: [] })).toThrow(/asPostgres is empty/);
    expect(() => renderReplicaEntrypoint({ ...replicaEntrypoint, osUser: "Post Gres" })).toThrow(/osUser/);
    expect(() => renderReplicaEntrypoint({ ...replicaEntrypoint, primary: { host: "10.0.0.2", port: 0 } })).toThrow(/not a TCP port/);
    expect(() => renderPrimaryEntrypoint({ ...primaryEntrypoint, locale: "en_US.UTF-8; rm -rf /" })).toThrow(/not a locale name/);
    expect(() => renderPrimaryEntrypoint({ ...primaryEntrypoint, bootstrap: undefined as never })).toThrow(/bootstrap is missing/);
    expect(() => renderPrimaryEntrypoint({ ...primaryEntrypoint, bootstrap: { ...primaryEntrypoint.bootstrap, permitFile: "permit" } })).toThrow(/permitFile "permit" must be an absolute path/);
    expect(() => renderPrimaryEntrypoint({ ...primaryEntrypoint, bootstrap: { ...primaryEntrypoint.bootstrap, generation: -2 } })).toThrow(/bootstrap generation must be a non-negative integer/);
    expect(() => renderPrimaryEntrypoint({ ...primaryEntrypoint, bootstrap: { ...primaryEntrypoint.bootstrap, cluster: "../x" } })).toThrow(/bootstrap cluster/);
  });
});

/**
 * The primary entrypoint run in bash against stand-in `initdb` and
 * `postgres` (initdb writes PG_VERSION and records its call; postgres
 * records that it started), as the current user: what it does with an
 * empty or full data directory, with and without a permit. The real
 * PostgreSQL runs the same script in test/integration/postgres-bootstrap.test.ts.
 */
describe("primary entrypoint: the bootstrap permit", () => {
  const root = mkdtempSync(join(tmpdir(), "synaxic-primary-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const bin = join(root, "bin");
  mkdirSync(bin);
  writeFileSync(
    join(bin, "initdb"),
    `#!/bin/sh
echo "initdb $*" >> "$CALLS"
[ -z "\${INITDB_FAIL:-}" ] || { echo "initdb: simulated failure" >&2; exit 1; }
for a in "$@"; do case "$a" in --pgdata=*) echo 15 > "\${a#--pgdata=}/PG_VERSION" ;; esac; done
`,
  );
  writeFileSync(join(bin, "postgres"), `#!/bin/sh\necho "postgres $*" >> "$CALLS"\n`);
  chmodSync(join(bin, "initdb"), 0o755);
  chmodSync(join(bin, "postgres"), 0o755);
  let n = 0;

  function server(generation = 0) {
    const dir = join(root, `s${n++}`);
    const dataDir = join(dir, "data");
    const permitFile = join(dir, "bootstrap", "permit");
    mkdirSync(join(dir, "bootstrap"), { recursive: true });
    const script = renderPrimaryEntrypoint({
      dataDir,
      configFile: join(dir, "postgresql.conf"),
      osUser: userInfo().username,
      asPostgres: ["env"],
      binDir: bin,
      bootstrap: { permitFile, cluster: "main", generation },
    });
    const calls = join(dir, "calls");
    return {
      dataDir,
      permitFile,
      permit: (g = generation, cluster = "main") => writeFileSync(permitFile, renderBootstrapPermit({ cluster, generation: g, dataDir })),
      run(env: Record<string, string> = {}) {
        writeFileSync(join(dir, "entrypoint.sh"), script);
        const r = spawnSync("bash", [join(dir, "entrypoint.sh")], { env: { ...process.env, CALLS: calls, ...env }, encoding: "utf8", timeout: 20_000 });
        return { code: r.status, stderr: r.stderr, calls: existsSync(calls) ? readFileSync(calls, "utf8") : "" };
      },
    };
  }

  it("an empty data directory with the permit: initdb, the permit removed, then the server", () => {
    const s = server();
    s.permit();
    const r = s.run();
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls.split("\n")[0]).toMatch(new RegExp(`^initdb --pgdata=${s.dataDir} --username=\\S+ --auth-local=peer --auth-host=reject `));
    expect(r.calls.split("\n")[1]).toMatch(/^postgres -c config_file=/);
    expect(readFileSync(join(s.dataDir, "PG_VERSION"), "utf8")).toBe("15\n");
    expect(existsSync(s.permitFile)).toBe(false);
    expect(r.stderr).toContain("initialising a new cluster");
    expect(r.stderr).toContain("used and removed");
  });

  it("an empty data directory without a permit: refuses, says why and how to proceed, creates nothing", () => {
    const s = server(4);
    const r = s.run();
    expect(r.code).toBe(1);
    expect(r.calls).toBe("");
    expect(readdirSync(s.dataDir)).toEqual([]);
    const msg = r.stderr;
    expect(msg).toContain(`FATAL: ${s.dataDir} is empty, but this stack has already initialised its cluster (bootstrap generation 4; there is no bootstrap permit at ${s.permitFile})`);
    expect(msg).toContain("Refusing to start an empty, writable primary: replicas re-initialised from it would clone nothing");
    expect(msg).toContain("Restore the data");
    expect(msg).toContain("to knowingly start a new, empty cluster: pulumi config set bootstrapGeneration 5, then pulumi up.");
  });

  it("a permit for another generation or another cluster lets nothing happen", () => {
    for (const [g, cluster] of [[3, "main"], [4, "replica-1"]] as const) {
      const s = server(4);
      s.permit(g, cluster);
      const r = s.run();
      expect(r.code).toBe(1);
      expect(r.calls).toBe("");
      expect(readdirSync(s.dataDir)).toEqual([]);
      expect(r.stderr).toContain("is not for this cluster");
      expect(r.stderr).toContain(`it reads "synaxic-bootstrap-permit v1 cluster=${cluster} generation=${g} data_dir=${s.dataDir}"`);
      expect(r.stderr).toContain("pulumi config set bootstrapGeneration 5");
    }
  });

  it("a data directory with a cluster starts as it is, and a leftover permit is removed", () => {
    const s = server();
    mkdirSync(s.dataDir, { recursive: true });
    writeFileSync(join(s.dataDir, "PG_VERSION"), "15\n");
    s.permit();
    const r = s.run();
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls).not.toContain("initdb");
    expect(r.calls).toMatch(/^postgres -c config_file=/);
    expect(existsSync(s.permitFile)).toBe(false);
    expect(r.stderr).toContain("removed the bootstrap permit");
    // A permit for anything else is removed too: it can never fire later.
    s.permit(9, "other");
    expect(s.run().code).toBe(0);
    expect(existsSync(s.permitFile)).toBe(false);
  });

  it("a replica's data directory is refused, and the permit next to it removed", () => {
    const s = server();
    mkdirSync(s.dataDir, { recursive: true });
    writeFileSync(join(s.dataDir, "PG_VERSION"), "15\n");
    writeFileSync(join(s.dataDir, "standby.signal"), "");
    s.permit();
    const r = s.run();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("standby.signal present");
    expect(r.calls).toBe("");
    expect(existsSync(s.permitFile)).toBe(false);
  });

  it("files that are not a cluster are left alone, and so is the permit", () => {
    const s = server();
    mkdirSync(join(s.dataDir, "lost+found"), { recursive: true });
    s.permit();
    const r = s.run();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("holds files but no PostgreSQL cluster");
    expect(r.calls).toBe("");
    expect(existsSync(s.permitFile)).toBe(true);
  });

  it("a failed initdb keeps the permit, so that the next start tries again", () => {
    const s = server();
    s.permit();
    const failed = s.run({ INITDB_FAIL: "1" });
    expect(failed.code).not.toBe(0);
    expect(failed.calls).not.toContain("postgres -c");
    expect(existsSync(s.permitFile)).toBe(true);
    const retried = s.run();
    expect(retried.code, retried.stderr).toBe(0);
    expect(existsSync(s.permitFile)).toBe(false);
  });
});

describe("exporter queries", () => {
  it("produce exactly the synaxic_* metrics with their own labels", () => {
    const text = renderPostgresExporterQueries();
    expect(text).toMatchSnapshot();
    expect(parse(text)).toEqual(postgresExporterQueries());
    const metrics: Record<string, string[]> = {};
    for (const [prefix, q] of Object.entries(postgresExporterQueries())) {
      const cols = q.metrics.map((m) => Object.entries(m)[0]!);
      const labels = cols.filter(([, c]) => c.usage === "LABEL").map(([n]) => n);
      for (const [n, c] of cols) if (c.usage !== "LABEL") metrics[`${prefix}_${n}`] = labels;
      // Every column the query selects is declared, and vice versa.
      for (const [n] of cols) expect(q.query).toMatch(new RegExp(`(AS ${n}\\b|^SELECT ${n},|^\\s+${n},)`, "m"));
    }
    expect(metrics).toEqual({
      synaxic_replication_lag_bytes: ["application_name", "client_addr", "state"],
      synaxic_replication_replay_lag_seconds: ["application_name", "client_addr"],
      synaxic_slot_retained_bytes: ["slot_name"],
      synaxic_slot_active: ["slot_name"],
      synaxic_slot_lost: ["slot_name"],
      synaxic_recovery_in_recovery: [],
      synaxic_recovery_replay_lag_bytes: [],
      synaxic_synchronous_required: [],
      synaxic_synchronous_standbys: [],
      synaxic_synchronous_waiting: [],
      synaxic_archiver_archived_count: [],
      synaxic_archiver_failed_count: [],
      synaxic_archiver_last_archived_time: [],
      synaxic_archiver_last_failed_time: [],
      synaxic_archiver_enabled: [],
    });
    expect(text).not.toContain("pg_last_xact_replay_timestamp");
  });
});
