/**
 * pg_hba.conf and .pgpass files.
 *
 * pg_hba.conf lets each role in only from the addresses that need it, only
 * over TLS and only with SCRAM; everything else meets an explicit reject.
 */
import {
  hostCidr,
  templateError,
  validateConnectHost,
  validateHostAddress,
  validateIdentifier,
  validatePort,
} from "./postgres-quote";

export interface PgHbaParams {
  /** The OS user (and role) allowed on the local socket by peer authentication (default postgres). */
  localSuperuser?: string;
  /** The application's database and role, and the addresses the application connects from. */
  appDatabase: string;
  appUser: string;
  appAddresses: string[];
  /** The replication role and the replicas' addresses (physical replication only). */
  replicationUser: string;
  replicaAddresses: string[];
  /** The pg_rewind role; it connects to `rewindDatabase` (default postgres) from `rewindAddresses`. */
  rewindUser: string;
  /**
   * Where a rejoining server rewinds from (default: every replica address).
   * Only hosts that may need it: the role reads files of the data directory.
   */
  rewindAddresses?: string[];
  rewindDatabase?: string;
  /** The metrics exporter's role and the addresses it connects from, to `exporterDatabase` (default postgres). */
  exporterUser: string;
  exporterAddresses: string[];
  exporterDatabase?: string;
}

type Row = [type: string, database: string, user: string, address: string, method: string];

function addresses(kind: string, list: readonly string[]): string[] {
  if (!Array.isArray(list)) templateError(`${kind} must be a list of IP addresses`);
  const seen = new Set<string>();
  for (const a of list) {
    validateHostAddress(kind, a);
    if (seen.has(a)) templateError(`${kind} lists ${a} twice`);
    seen.add(a);
  }
  return [...list];
}

/** Renders pg_hba.conf: peer on the local socket for the superuser, SCRAM over TLS per role and address, reject for the rest. */
export function renderPgHba(params: PgHbaParams): string {
  const superuser = validateIdentifier("local superuser", params.localSuperuser ?? "postgres");
  const appDb = validateIdentifier("app database", params.appDatabase);
  const rewindDb = validateIdentifier("rewind database", params.rewindDatabase ?? "postgres");
  const exporterDb = validateIdentifier("exporter database", params.exporterDatabase ?? "postgres");
  const roles: [string, string][] = [
    ["app user", validateIdentifier("app user", params.appUser)],
    ["replication user", validateIdentifier("replication user", params.replicationUser)],
    ["rewind user", validateIdentifier("rewind user", params.rewindUser)],
    ["exporter user", validateIdentifier("exporter user", params.exporterUser)],
  ];
  const seen = new Map<string, string>([[superuser, "local superuser"]]);
  for (const [kind, name] of roles) {
    const other = seen.get(name);
    if (other) templateError(`${kind} ${JSON.stringify(name)} is also the ${other}: every role needs its own name`);
    seen.set(name, kind);
  }
  if (appDb === rewindDb || appDb === exporterDb) {
    templateError(`app database ${JSON.stringify(appDb)} must differ from the rewind and exporter databases`);
  }
  const app = addresses("app address", params.appAddresses);
  const replicas = addresses("replica address", params.replicaAddresses);
  const rewinders = addresses("rewind address", params.rewindAddresses ?? params.replicaAddresses);
  const exporters = addresses("exporter address", params.exporterAddresses);

  const rows: Row[] = [
    ["local", "all", superuser, "", "peer"],
    ["local", "replication", "all", "", "reject"],
    ["local", "all", "all", "", "reject"],
  ];
  for (const a of replicas) rows.push(["hostssl", "replication", params.replicationUser, hostCidr(a), "scram-sha-256"]);
  for (const a of rewinders) rows.push(["hostssl", rewindDb, params.rewindUser, hostCidr(a), "scram-sha-256"]);
  for (const a of app) rows.push(["hostssl", appDb, params.appUser, hostCidr(a), "scram-sha-256"]);
  for (const a of exporters) rows.push(["hostssl", exporterDb, params.exporterUser, hostCidr(a), "scram-sha-256"]);
  rows.push(
    ["host", "replication", "all", "0.0.0.0/0", "reject"],
    ["host", "replication", "all", "::/0", "reject"],
    ["host", "all", "all", "0.0.0.0/0", "reject"],
    ["host", "all", "all", "::/0", "reject"],
  );
  for (const r of rows) {
    if (r[0] !== "local" && r[4] === "trust") templateError("refusing to render trust on a network line");
  }
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length), ["TYPE", "DATABASE", "USER", "ADDRESS"][i]!.length));
  const fmt = (r: readonly string[]) =>
    r
      .map((c, i) => (i < 4 ? c.padEnd(widths[i]!) : c))
      .join("  ")
      .trimEnd();
  return [
    "# pg_hba.conf rendered by the Synaxic deployment: do not edit by hand.",
    "# First match wins. Network access is TLS + SCRAM only, per role and per host;",
    "# everything not listed is rejected explicitly at the end.",
    fmt(["# TYPE", "DATABASE", "USER", "ADDRESS", "METHOD"]),
    ...rows.map(fmt),
    "",
  ].join("\n");
}

export interface PgpassEntry {
  /** Host name or address, or "*" for any. */
  host: string;
  /** Port, or "*" for any. */
  port: number | "*";
  /** Database, or "*" (the default) for any, including replication connections. */
  database?: string;
  user: string;
  password: string;
}

function pgpassField(kind: string, value: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\r\n\u0000]/.test(value)) templateError(`.pgpass ${kind} must not contain a line break or NUL`);
  if (value === "") templateError(`.pgpass ${kind} is empty`);
  return value.replace(/\\/g, "\\\\").replace(/:/g, "\\:");
}

/** Renders a .pgpass file (escapes ':' and '\'); it must be 0600 and owned by the user libpq runs as. */
export function renderPgpass(entries: readonly PgpassEntry[]): string {
  if (entries.length === 0) templateError(".pgpass needs at least one entry");
  return (
    entries
      .map((e) => {
        const db = e.database ?? "*";
        if (db !== "*" && db !== "replication") validateIdentifier(".pgpass database", db);
        return [
          e.host === "*" ? "*" : pgpassField("host", validateConnectHost(".pgpass host", e.host)),
          e.port === "*" ? "*" : String(validatePort(".pgpass port", e.port)),
          db,
          pgpassField("user", validateIdentifier(".pgpass user", e.user)),
          pgpassField("password", e.password),
        ].join(":");
      })
      .join("\n") + "\n"
  );
}
