/**
 * Quoting and validation shared by the PostgreSQL templates: one place that
 * knows how values are written into postgresql.conf, libpq connection
 * strings, SQL and .pgpass files, and which names and addresses are accepted.
 */
import { isIP } from "node:net";

/** Thrown for any parameter a PostgreSQL template refuses; the message says which and why. */
export class PostgresTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PostgresTemplateError";
  }
}

function fail(message: string): never {
  throw new PostgresTemplateError(message);
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Quotes a string value for postgresql.conf: single quotes, with quotes doubled and backslashes escaped. */
export function pgConfString(value: string): string {
  if (CONTROL.test(value)) fail(`postgresql.conf value ${JSON.stringify(value)} contains a control character`);
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`;
}

/** Quotes one value of a libpq key=value connection string (bare when that is unambiguous). */
export function conninfoValue(value: string): string {
  if (CONTROL.test(value)) fail(`connection string value ${JSON.stringify(value)} contains a control character`);
  if (value !== "" && /^[^\s'\\=]+$/.test(value)) return value;
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

/** Builds a libpq connection string from ordered key/value pairs (undefined values are left out). */
export function renderConninfo(pairs: readonly (readonly [string, string | number | undefined])[]): string {
  return pairs
    .filter((p): p is readonly [string, string | number] => p[1] !== undefined)
    .map(([k, v]) => {
      if (!/^[a-z_]+$/.test(k)) fail(`connection string key ${JSON.stringify(k)} is not a libpq keyword`);
      return `${k}=${conninfoValue(String(v))}`;
    })
    .join(" ");
}

/** Quotes an SQL identifier. */
export function quoteIdent(name: string): string {
  if (name.includes("\u0000")) fail("SQL identifier contains a NUL byte");
  return `"${name.replace(/"/g, '""')}"`;
}

/** Quotes an SQL string literal (E'' form when it holds a backslash, like quote_literal()). */
export function quoteLiteral(value: string): string {
  if (value.includes("\u0000")) fail("SQL literal contains a NUL byte");
  const body = value.replace(/'/g, "''");
  return value.includes("\\") ? `E'${body.replace(/\\/g, "\\\\")}'` : `'${body}'`;
}

/** Words pg_hba.conf reads as keywords in the database or user column. */
const HBA_KEYWORDS = new Set(["all", "sameuser", "samerole", "samegroup", "replication"]);

/**
 * A role or database name: lower-case letters, digits and underscores,
 * starting with a letter or underscore, at most 63 bytes, not a pg_hba keyword.
 */
export function validateIdentifier(kind: string, name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
    fail(`${kind} ${JSON.stringify(name)} is not a valid name: use 1-63 lower-case letters, digits or underscores, starting with a letter or underscore`);
  }
  if (HBA_KEYWORDS.has(name)) fail(`${kind} ${JSON.stringify(name)} is a pg_hba.conf keyword and cannot be used as a name`);
  if (name.startsWith("pg_")) fail(`${kind} ${JSON.stringify(name)} starts with "pg_", which PostgreSQL reserves`);
  return name;
}

/** A physical replication slot name: lower-case letters, digits and underscores, at most 63 characters. */
export function validateSlotName(name: string): string {
  if (typeof name !== "string" || name.length === 0) fail("replication slot name is empty");
  if (name.length > 63) fail(`replication slot name ${JSON.stringify(name)} is longer than 63 characters`);
  if (!/^[a-z0-9_]+$/.test(name)) {
    fail(`replication slot name ${JSON.stringify(name)} may contain only lower-case letters, digits and underscores`);
  }
  return name;
}

/** A replica name as it appears in application_name and slot names: lower-case letters, digits, '-' and '_'. */
export function validateReplicaName(name: string): string {
  if (!/^[a-z0-9][a-z0-9_-]{0,47}$/.test(name)) {
    fail(`replica name ${JSON.stringify(name)} is not valid: use 1-48 lower-case letters, digits, '-' or '_', starting with a letter or digit`);
  }
  return name;
}

/** A single host address (IPv4 or IPv6), not a network and not the unspecified address. */
export function validateHostAddress(kind: string, address: string): string {
  if (typeof address !== "string" || address.includes("/")) {
    fail(`${kind} ${JSON.stringify(address)} must be a single IP address, not a network (the /32 or /128 is added)`);
  }
  const family = isIP(address);
  if (family === 0) fail(`${kind} ${JSON.stringify(address)} is not an IP address`);
  if (address === "0.0.0.0" || /^[0:]+$/.test(address)) fail(`${kind} ${JSON.stringify(address)} is the unspecified address, not a host`);
  return address;
}

/** The address as a one-host CIDR for pg_hba.conf. */
export function hostCidr(address: string): string {
  return isIP(address) === 6 ? `${address}/128` : `${address}/32`;
}

/** A host for a libpq connection: an IP address or a DNS name. */
export function validateConnectHost(kind: string, host: string): string {
  if (isIP(host) !== 0) return host;
  if (!/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(host)) {
    fail(`${kind} ${JSON.stringify(host)} is neither an IP address nor a host name`);
  }
  return host;
}

export function validatePort(kind: string, port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`${kind} ${port} is not a TCP port`);
  return port;
}

/** An absolute path without control characters. */
export function validatePath(kind: string, path: string): string {
  if (typeof path !== "string" || !path.startsWith("/")) fail(`${kind} ${JSON.stringify(path)} must be an absolute path`);
  if (CONTROL.test(path)) fail(`${kind} ${JSON.stringify(path)} contains a control character`);
  return path;
}

export function validateNonNegativeInt(kind: string, v: number): number {
  if (!Number.isInteger(v) || v < 0) fail(`${kind} must be a non-negative integer, got ${v}`);
  return v;
}

export function validatePositiveInt(kind: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) fail(`${kind} must be a positive integer, got ${v}`);
  return v;
}

/** Passwords must be non-empty ASCII without NUL or line breaks (see scramSha256Verifier). */
export function validatePassword(kind: string, password: string): string {
  if (typeof password !== "string" || password.length === 0) fail(`${kind} is empty`);
  // eslint-disable-next-line no-control-regex
  if (!/^[\u0001-\u007f]+$/.test(password)) fail(`${kind} must be ASCII (SASLprep of other characters is not implemented)`);
  if (/[\r\n]/.test(password)) fail(`${kind} must not contain a line break`);
  return password;
}

export { fail as templateError };
