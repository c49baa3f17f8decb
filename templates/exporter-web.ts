/**
 * How the exporters protect their metrics endpoint, and how Prometheus
 * proves who it is to them. Pure functions from typed parameters to text.
 *
 * What each pinned exporter supports (the program's images and Debian
 * bookworm's builds of the same versions):
 *
 * - node_exporter 1.5.0 and postgres_exporter 0.11.1 serve through the
 *   Prometheus exporter-toolkit (node_exporter.go and
 *   cmd/postgres_exporter/main.go at those tags: web.ListenAndServe with the
 *   toolkit's kingpinflag; toolkit v0.8.2 and v0.7.1 in their go.mod;
 *   web/tls_config.go, web/handler.go): a web
 *   configuration file given with `--web.config.file` (both list the flag in
 *   `--help`) with a TLS server certificate, client certificates required
 *   and verified against a CA (`client_auth_type:
 *   RequireAndVerifyClientCert`, `client_ca_file`) and HTTP basic auth
 *   against bcrypt hashes (`basic_auth_users`). The toolkit reads the file
 *   again for every TLS handshake (Serve's GetConfigForClient) and every
 *   request (webHandler.ServeHTTP, which caches bcrypt results), so a
 *   renewed certificate needs no restart.
 * - redis_exporter has no web configuration file. Its basic auth (1.67
 *   and later, oliver006/redis_exporter#967) takes the password or its
 *   bcrypt hash only from a flag or an environment variable
 *   (REDIS_EXPORTER_BASIC_AUTH_HASH_PASSWORD, main.go), which `docker
 *   inspect` shows to anyone who may run it, so it is not used. It has
 *   `--tls-server-cert-file`, `--tls-server-key-file` and
 *   `--tls-server-ca-cert-file` (environment REDIS_EXPORTER_TLS_SERVER_*),
 *   and with the CA file set it requires and verifies a client certificate
 *   (exporter/tls.go, CreateServerTLSConfig and GetConfigForClientFunc:
 *   tls.RequireAndVerifyClientCert), loading the key pair on every
 *   handshake; minimum TLS 1.2 by default.
 *
 * So every exporter speaks TLS only, with a certificate from the metrics CA
 * that names the host's private address, and answers only a client that
 * shows a certificate from the same CA; node_exporter and postgres_exporter
 * also want the scrape user's password, which only the monitoring hosts
 * have (the exporters get its bcrypt hash). Prometheus scrapes them with
 * `scheme: https`, the CA, its own client certificate and, where asked for,
 * basic auth with the password read from a file.
 */
import { stringify } from "yaml";

/** The user Prometheus authenticates as to node_exporter and postgres_exporter. */
export const EXPORTER_SCRAPE_USER = "prometheus";

/** Where the exporters' TLS files are inside their containers. */
export const EXPORTER_TLS_DIR = "/etc/synaxic/web";
export const EXPORTER_WEB_FILES = {
  cert: `${EXPORTER_TLS_DIR}/exporter.crt`,
  key: `${EXPORTER_TLS_DIR}/exporter.key`,
  clientCa: `${EXPORTER_TLS_DIR}/client-ca.crt`,
  webConfig: `${EXPORTER_TLS_DIR}/web.yml`,
} as const;

/** A bcrypt hash as Go's golang.org/x/crypto/bcrypt writes and reads it. */
const BCRYPT = /^\$2[aby]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;
const USER = /^[A-Za-z0-9_.-]{1,64}$/;
const ABSOLUTE = /^\/[A-Za-z0-9_./-]+$/;

function fail(fn: string, message: string): never {
  throw new Error(`${fn}: ${message}`);
}

function checkPath(fn: string, what: string, v: string): void {
  if (typeof v !== "string" || !ABSOLUTE.test(v) || v.split("/").includes("..")) fail(fn, `${what} must be a plain absolute path, got ${JSON.stringify(v)}`);
}

export interface ExporterWebConfigParams {
  /** The exporter's server certificate and key, as the exporter sees them. */
  certFile: string;
  keyFile: string;
  /** The CA whose certificates the exporter accepts from clients (the metrics CA, components/Pki.ts). */
  clientCaFile: string;
  /** Basic auth: the user and the bcrypt hash of its password (never the password). Absent: TLS alone. */
  basicAuth?: { username: string; bcryptHash: string };
}

/**
 * The exporter-toolkit web configuration file (`--web.config.file`) for
 * node_exporter and postgres_exporter: TLS 1.2 or newer, a client
 * certificate from the metrics CA required and verified, and basic auth.
 * The text holds a bcrypt hash: keep it secret all the same.
 */
export function renderExporterWebConfig(p: ExporterWebConfigParams): string {
  const fn = "renderExporterWebConfig";
  checkPath(fn, "certFile", p.certFile);
  checkPath(fn, "keyFile", p.keyFile);
  checkPath(fn, "clientCaFile", p.clientCaFile);
  if (p.basicAuth) {
    if (typeof p.basicAuth.username !== "string" || !USER.test(p.basicAuth.username)) {
      fail(fn, `basicAuth.username ${JSON.stringify(p.basicAuth.username)} must be 1-64 letters, digits, '_', '.' or '-'`);
    }
    // Never echo the value: it is a hash of a secret.
    if (typeof p.basicAuth.bcryptHash !== "string" || !BCRYPT.test(p.basicAuth.bcryptHash)) fail(fn, "basicAuth.bcryptHash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 53 characters of salt and hash)");
  }
  const config = {
    tls_server_config: {
      cert_file: p.certFile,
      key_file: p.keyFile,
      client_auth_type: "RequireAndVerifyClientCert",
      client_ca_file: p.clientCaFile,
      min_version: "TLS12",
    },
    ...(p.basicAuth ? { basic_auth_users: { [p.basicAuth.username]: p.basicAuth.bcryptHash } } : {}),
  };
  return `# Exporter web configuration (exporter-toolkit --web.config.file; rendered, edits are overwritten).\n${stringify(config, { lineWidth: 0 })}`;
}

/** redis_exporter's TLS server settings (1.45.0 has no web configuration file), as environment variables. */
export function redisExporterTlsEnv(p: Omit<ExporterWebConfigParams, "basicAuth">): string[] {
  const fn = "redisExporterTlsEnv";
  checkPath(fn, "certFile", p.certFile);
  checkPath(fn, "keyFile", p.keyFile);
  checkPath(fn, "clientCaFile", p.clientCaFile);
  return [
    `REDIS_EXPORTER_TLS_SERVER_CERT_FILE=${p.certFile}`,
    `REDIS_EXPORTER_TLS_SERVER_KEY_FILE=${p.keyFile}`,
    // With a CA file the exporter requires a client certificate signed by it.
    `REDIS_EXPORTER_TLS_SERVER_CA_CERT_FILE=${p.clientCaFile}`,
    "REDIS_EXPORTER_TLS_SERVER_MIN_VERSION=TLS1.2",
  ];
}
