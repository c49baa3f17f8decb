/**
 * SQL run against the primary: roles and the application database, physical
 * replication slots, promotion. Every script is idempotent and is meant to be
 * fed to psql on stdin (see psqlScriptArgv), never put on a command line:
 * role passwords appear only as SCRAM-SHA-256 verifiers.
 */
import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import {
  quoteIdent,
  quoteLiteral,
  templateError,
  validateIdentifier,
  validatePassword,
  validatePositiveInt,
  validateReplicaName,
  validateSlotName,
} from "./postgres-quote";

/**
 * The argv that runs an SQL script given on stdin: stop at the first error,
 * ignore ~/.psqlrc, and report an error tersely. A failing step's output
 * ends up in the update log (the command provider puts it in its error
 * even with logging off), and psql's default verbosity quotes the failing
 * statement ("LINE 1: ALTER ROLE ... PASSWORD '...'"); terse prints the
 * message and the position only.
 */
export function psqlScriptArgv(opts: { database?: string; user?: string; host?: string; port?: number } = {}): string[] {
  const argv = ["psql", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=terse", "--no-psqlrc", "--quiet", "--no-align", "--tuples-only"];
  if (opts.host !== undefined) argv.push(`--host=${opts.host}`);
  if (opts.port !== undefined) argv.push(`--port=${validatePositiveInt("port", opts.port)}`);
  argv.push(`--username=${validateIdentifier("psql user", opts.user ?? "postgres")}`);
  argv.push(`--dbname=${validateIdentifier("psql database", opts.database ?? "postgres")}`);
  argv.push("--file=-");
  return argv;
}

/**
 * A salt derived from the role name and the password, so that rendering the
 * same role and password twice gives the same verifier (stable diffs, no
 * needless ALTER ROLE churn) while different roles never share a salt.
 */
export function scramSaltFor(roleName: string, password: string): Buffer {
  return createHmac("sha256", password).update(`synaxic-scram-salt\u0000${roleName}`).digest().subarray(0, 16);
}

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores for a password:
 * SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (RFC 5802/7677).
 * Passwords must be ASCII: for them SASLprep is the identity, as in PostgreSQL.
 */
export function scramSha256Verifier(password: string, salt: Buffer, iterations = 4096): string {
  validatePassword("password", password);
  if (!Buffer.isBuffer(salt) || salt.length < 8) templateError("SCRAM salt must be a Buffer of at least 8 bytes");
  validatePositiveInt("SCRAM iterations", iterations);
  if (iterations < 4096) templateError(`SCRAM iterations must be at least 4096, got ${iterations}`);
  const salted = pbkdf2Sync(Buffer.from(password, "utf8"), salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

export interface RoleCredentials {
  name: string;
  password: string;
}

export interface RolesSqlParams {
  /** The application's database; created if missing and owned by the app role. */
  appDatabase: string;
  /** The application role (owner of appDatabase, no other privileges). */
  app: RoleCredentials;
  /** LOGIN REPLICATION role the replicas stream with. */
  replication: RoleCredentials;
  /** Metrics exporter role (member of pg_monitor). */
  exporter: RoleCredentials;
  /** Non-superuser role pg_rewind connects with. */
  rewind: RoleCredentials;
  /** Database the script runs in, where pg_rewind's function grants are made (default postgres). */
  adminDatabase?: string;
  iterations?: number;
}

const DOLLAR_TAG = "$synaxic$";

function doBlock(body: string): string {
  if (body.includes(DOLLAR_TAG)) templateError("DO block body contains its own dollar-quote tag");
  return `DO ${DOLLAR_TAG}\n${body}\n${DOLLAR_TAG};`;
}

function upsertRole(role: RoleCredentials, attributes: string, iterations: number): string {
  const name = role.name;
  const verifier = scramSha256Verifier(validatePassword(`password of role ${name}`, role.password), scramSaltFor(name, role.password), iterations);
  const spec = `${attributes} PASSWORD ${quoteLiteral(verifier)}`;
  return doBlock(
    [
      "BEGIN",
      `  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = ${quoteLiteral(name)}) THEN`,
      `    CREATE ROLE ${quoteIdent(name)} ${spec};`,
      "  ELSE",
      `    ALTER ROLE ${quoteIdent(name)} ${spec};`,
      "  END IF;",
      "END",
    ].join("\n"),
  );
}

/** The functions pg_rewind calls on its source server (PostgreSQL docs, pg_rewind, "non-superuser"). */
export const PG_REWIND_FUNCTIONS = [
  "pg_catalog.pg_ls_dir(text, boolean, boolean)",
  "pg_catalog.pg_stat_file(text, boolean)",
  "pg_catalog.pg_read_binary_file(text)",
  "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
] as const;

/**
 * Idempotent SQL creating or updating the app, replication, exporter and
 * rewind roles and the app database. Run it on the primary, connected to
 * adminDatabase as a superuser, with psqlScriptArgv() and the SQL on stdin.
 */
export function renderRolesSql(params: RolesSqlParams): string {
  const iterations = params.iterations ?? 4096;
  const db = validateIdentifier("app database", params.appDatabase);
  const adminDb = validateIdentifier("admin database", params.adminDatabase ?? "postgres");
  if (db === adminDb) templateError(`app database ${JSON.stringify(db)} must differ from the admin database`);
  const roles = [params.app, params.replication, params.exporter, params.rewind];
  const kinds = ["app role", "replication role", "exporter role", "rewind role"];
  const names = new Set<string>();
  roles.forEach((r, i) => {
    validateIdentifier(kinds[i]!, r.name);
    if (r.name === "postgres") templateError(`${kinds[i]} cannot be the superuser "postgres"`);
    if (names.has(r.name)) templateError(`${kinds[i]} ${JSON.stringify(r.name)} is used for two roles: every role needs its own name`);
    names.add(r.name);
  });
  const app = quoteIdent(params.app.name);
  const common = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT";
  const createDb = `CREATE DATABASE ${quoteIdent(db)} OWNER ${app} ENCODING 'UTF8' TEMPLATE template0`;
  return [
    "-- Roles and database for Synaxic, rendered by the deployment: idempotent, run on the primary.",
    "SET client_min_messages = warning;",
    // The statements below carry SCRAM verifiers: if one fails, the server
    // log must not quote it (log_min_error_statement, default error).
    "SET log_min_error_statement = panic;",
    "SET log_statement = 'none';",
    // With synchronousReplication any1 a commit waits for a standby: the
    // deployment's own changes do not, or a new fleet's first run (no standby
    // yet) and a run while every standby is down would hang here.
    "SET synchronous_commit = local;",
    doBlock(
      [
        "BEGIN",
        "  IF pg_catalog.pg_is_in_recovery() THEN",
        "    RAISE EXCEPTION 'this server is a standby: roles are managed on the primary only';",
        "  END IF;",
        `  IF pg_catalog.current_database() <> ${quoteLiteral(adminDb)} THEN`,
        `    RAISE EXCEPTION 'run this script connected to database %, not %', ${quoteLiteral(adminDb)}, pg_catalog.current_database();`,
        "  END IF;",
        "END",
      ].join("\n"),
    ),
    "",
    "-- The application: owns its database, nothing else.",
    upsertRole(params.app, `${common} NOREPLICATION`, iterations),
    "",
    "-- Streaming replication.",
    upsertRole(params.replication, `${common} REPLICATION`, iterations),
    "",
    "-- Metrics exporter: read-only monitoring views.",
    upsertRole(params.exporter, `${common} NOREPLICATION`, iterations),
    `GRANT pg_monitor TO ${quoteIdent(params.exporter.name)};`,
    "",
    "-- pg_rewind source access without superuser: exactly the file functions it calls, plus",
    "-- CHECKPOINT (pg_checkpoint), which a rejoining server runs on a freshly promoted source",
    "-- so that pg_rewind (PostgreSQL 15) sees its new timeline in the control file.",
    upsertRole(params.rewind, `${common} NOREPLICATION`, iterations),
    ...PG_REWIND_FUNCTIONS.map((f) => `GRANT EXECUTE ON FUNCTION ${f} TO ${quoteIdent(params.rewind.name)};`),
    `GRANT pg_checkpoint TO ${quoteIdent(params.rewind.name)};`,
    "",
    "-- The application database (CREATE DATABASE cannot run inside a DO block).",
    `SELECT ${quoteLiteral(createDb)} WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = ${quoteLiteral(db)})`,
    "\\gexec",
    `ALTER DATABASE ${quoteIdent(db)} OWNER TO ${app};`,
    `REVOKE ALL ON DATABASE ${quoteIdent(db)} FROM PUBLIC;`,
    `GRANT CONNECT, TEMPORARY ON DATABASE ${quoteIdent(db)} TO ${app};`,
    "",
  ].join("\n");
}

/** The slot name for a replica: synaxic_<name> with '-' turned into '_' (one slot per replica). */
export function replicaSlotName(replicaName: string): string {
  return validateSlotName(`synaxic_${validateReplicaName(replicaName).replace(/-/g, "_")}`);
}

/** Idempotent: creates the physical slot (reserving WAL now) unless it exists. Run on the primary. */
export function renderSlotCreateSql(name: string): string {
  const slot = quoteLiteral(validateSlotName(name));
  return [
    `-- Create physical replication slot ${name} unless it exists.`,
    `SELECT pg_catalog.pg_create_physical_replication_slot(${slot}, true)`,
    `WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots WHERE slot_name = ${slot});`,
    "",
  ].join("\n");
}

/**
 * Idempotent: drops the slot if it exists, first terminating the walsender
 * that holds it (a replica reconnecting in between is terminated again),
 * giving up after about 10 seconds. Run on the primary as a superuser.
 */
export function renderSlotDropSql(name: string): string {
  const slot = quoteLiteral(validateSlotName(name));
  return [
    `-- Drop physical replication slot ${name} if it exists, after terminating its walsender.`,
    doBlock(
      [
        "DECLARE",
        "  holder integer;",
        "  attempts integer := 0;",
        "BEGIN",
        "  LOOP",
        `    SELECT active_pid INTO holder FROM pg_catalog.pg_replication_slots WHERE slot_name = ${slot};`,
        "    IF NOT FOUND THEN",
        "      RETURN;",
        "    END IF;",
        "    IF holder IS NOT NULL THEN",
        "      PERFORM pg_catalog.pg_terminate_backend(holder, 5000);",
        "    END IF;",
        "    BEGIN",
        `      PERFORM pg_catalog.pg_drop_replication_slot(${slot});`,
        "      RETURN;",
        "    EXCEPTION",
        "      WHEN undefined_object THEN",
        "        RETURN;",
        "      WHEN object_in_use THEN",
        "        attempts := attempts + 1;",
        "        IF attempts >= 100 THEN",
        "          RAISE;",
        "        END IF;",
        "        PERFORM pg_catalog.pg_sleep(0.1);",
        "    END;",
        "  END LOOP;",
        "END",
      ].join("\n"),
    ),
    "",
  ].join("\n");
}

/**
 * Promotes a standby (waiting up to 60 s) and checkpoints, so that the
 * control file names the new timeline at once; a no-op promotion on a
 * server that is already a primary. Run as a superuser.
 */
export function renderPromoteSql(): string {
  return [
    "-- Promote this standby to primary; nothing to do if it already is one.",
    doBlock(
      [
        "BEGIN",
        "  IF pg_catalog.pg_is_in_recovery() THEN",
        "    IF NOT pg_catalog.pg_promote(true, 60) THEN",
        "      RAISE EXCEPTION 'promotion did not complete within 60 seconds';",
        "    END IF;",
        "  END IF;",
        "END",
      ].join("\n"),
    ),
    "-- A promotion updates the control file's timeline only at the next checkpoint, which is",
    "-- spread over minutes; pg_rewind (PostgreSQL 15) reads it there, so write it now.",
    "CHECKPOINT;",
    "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'standby' ELSE 'primary' END;",
    "",
  ].join("\n");
}
