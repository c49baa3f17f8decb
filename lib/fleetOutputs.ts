/**
 * The contract between the main stack and replica stacks: what main
 * exports, and how a replica checks it. A missing or malformed output stops
 * the replica with an error that names it.
 */
import { z } from "zod";
import { X509Certificate, createPublicKey } from "node:crypto";
import { readCertRequest, spkiOf } from "./csr";
import { BACKUP_DRILL_DEFAULTS } from "../templates/backup-scheduler";

const ip = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, { message: "expected an IPv4 address" });
const pem = z.string().includes("-----BEGIN", { message: "expected a PEM block" });
const port = z.number().int().min(1).max(65535);
const severity = z.enum(["critical", "warning"]);

export const fleetInfoSchema = z.object({
  version: z.literal(1),
  mainPrivateIp: ip,
  privateNetworkCidr: z.string(),
  networkId: z.number().nullable(),
  /** On a Hetzner main stack: its private network's zone and the project's SSH key (Hetzner allows one key per fingerprint). */
  hetzner: z.object({ networkZone: z.string().min(1), sshKeyId: z.string().min(1) }).nullable(),
  databaseName: z.string().min(1),
  appImage: z.string().min(1),
  /** The pgbackrest package in the fleet's PostgreSQL image (templates/postgres-image.ts). */
  pgbackrestVersion: z.string().min(1),
  /** The primary's last restore from the backup repository (backupRestore.id; 0: never): replicas re-clone when it changes. */
  restoreId: z.number().int().nonnegative(),
  /** The backup repository and schedule (lib/backup.ts); null: no backups. */
  backup: z
    .object({
      repository: z.object({
        endpoint: z.string().min(1),
        bucket: z.string().min(1),
        region: z.string().min(1),
        path: z.string().min(1),
        caCertificate: z.string().optional(),
        retentionFull: z.number().int().positive(),
        retentionDiff: z.number().int().positive(),
      }),
      schedule: z.object({ fullWeekday: z.number().int(), hourUtc: z.number().int(), verifyWeekday: z.number().int() }),
      standby: z.string().nullable(),
      /** The weekly restore drill (backupDrill); null: off. A main stack from before drills has none: its default applies. */
      drill: z.object({ weekday: z.number().int(), hourUtc: z.number().int(), timeoutMinutes: z.number().int() }).nullable().default(BACKUP_DRILL_DEFAULTS),
      /** Redis snapshots (redisBackupSchedule); null: off. A main stack from before them has none: off. */
      redis: z
        .object({
          hourUtc: z.number().int(),
          retention: z.number().int().positive(),
          packages: z.object({ curl: z.string().min(1), openssl: z.string().min(1), caCertificates: z.string().min(1) }),
        })
        .nullable()
        .default(null),
    })
    .nullable(),
  images: z.object({
    postgres: z.string(),
    redis: z.string(),
    nginx: z.string(),
    prometheus: z.string(),
    grafana: z.string(),
    nodeExporter: z.string(),
    postgresExporter: z.string(),
    redisExporter: z.string(),
  }),
  ports: z.object({
    http: port,
    https: port,
    postgres: port,
    redis: port,
    app: port,
    prometheus: port,
    grafana: port,
    nodeExporter: port,
    postgresExporter: port,
    redisExporter: port,
  }),
  maxSlotWalKeepSizeMB: z.number().int().nonnegative(),
  walKeepSizeMB: z.number().int().nonnegative(),
  postgres: z.object({
    primaryTune: z.object({ memoryMiB: z.number().int().positive(), cpus: z.number().int().positive(), maxConnections: z.number().int().positive() }),
    maxWalSenders: z.number().int().positive(),
    maxReplicationSlots: z.number().int().positive(),
    /** any1: every server names the others in synchronous_standby_names (absent: off, a main stack from before the key). */
    synchronousReplication: z.enum(["off", "any1"]).optional(),
  }),
  replicas: z.array(z.object({ name: z.string(), privateIp: ip, slotName: z.string() })),
  /** What the balancer is sized for: a promoted replica's balancer takes the main stack's. */
  balancerConcurrency: z.number().int().positive().optional(),
  balancerRateLimit: z.object({ perSecond: z.number().int().positive(), burst: z.number().int().nonnegative() }).nullable().optional(),
  balancerRouting: z.object({ writePaths: z.array(z.string()), apiKeyRequests: z.enum(["writer", "replicas"]) }).optional(),
  balancerAccess: z.object({ publicPaths: z.array(z.string()), serverNames: z.array(z.string()) }).optional(),
  /**
   * The replica that runs the second Prometheus and Alertmanager (the main
   * stack's monitoringReplica), with Alertmanager's image, ports and the
   * receivers' settings; the receivers' secrets are in replicaCredentials.
   * Absent or null: monitoring on the main host only.
   */
  monitoring: z
    .object({
      replica: z.string().min(1),
      alertmanagerImage: z.string().min(1),
      alertmanagerPort: port,
      clusterPort: port,
      email: z
        .object({ smarthost: z.string().min(1), from: z.string().min(1), to: z.array(z.string().min(1)).min(1), username: z.string(), requireTls: z.boolean(), minSeverity: severity })
        .optional(),
      slack: z.object({ channel: z.string(), minSeverity: severity }).optional(),
      webhook: z.object({ minSeverity: severity }).optional(),
      heartbeat: z.object({ interval: z.string().min(1) }).optional(),
    })
    .nullable()
    .optional(),
  /**
   * Each service's CA certificate (components/Pki.ts): a replica's PostgreSQL,
   * Redis and metrics files each trust only their own. A main stack from
   * before per-service CAs exported one CA as caCertPem: checkFleetInfo
   * refuses it with a message that says so.
   */
  cas: z.object({ postgres: pem, redis: pem, metrics: pem }),
  roles: z.object({ replication: z.string(), rewind: z.string(), exporter: z.string(), app: z.string() }),
  redisUsers: z.object({ app: z.string(), replication: z.string(), exporter: z.string(), admin: z.string() }),
});
export type FleetInfo = z.infer<typeof fleetInfoSchema>;

const secretString = z.string().min(16, { message: "expected a generated password" });
export const replicaCredentialsSchema = z.object({
  postgresApp: secretString,
  postgresReplication: secretString,
  postgresRewind: secretString,
  postgresExporter: secretString,
  redisApp: secretString,
  redisReplication: secretString,
  redisExporter: secretString,
  redisAdmin: secretString,
  truststorePassword: secretString,
  truststoreBase64: z.string().min(1),
  /** The bcrypt hash of the password Prometheus scrapes node_exporter and postgres_exporter with (their basic auth). */
  exporterScrapeHash: z.string().regex(/^\$2[aby]?\$\d\d\$/, { message: "expected a bcrypt hash" }),
  /** With a monitoring replica: that password, for its Prometheus. */
  exporterScrapePassword: secretString.optional(),
  /** With backups: the repository's cipher pass and the object storage's access key. */
  backupCipherPass: secretString.optional(),
  backupAccessKeyId: z.string().min(1).optional(),
  backupSecretAccessKey: z.string().min(1).optional(),
  /** With Redis snapshots: the password of Redis' backup user, which every host's users.acl carries (a promoted replica's job logs in as it). */
  redisBackup: secretString.optional(),
  /** With a monitoring replica: the receivers' secrets its Alertmanager needs (each only when that receiver is set). */
  alertSmtpPassword: z.string().min(1).optional(),
  alertSlackWebhookUrl: z.string().min(1).optional(),
  alertWebhookUrl: z.string().min(1).optional(),
  alertHeartbeatUrl: z.string().min(1).optional(),
});
export type ReplicaCredentials = z.infer<typeof replicaCredentialsSchema>;

const certPair = z.object({ certPem: pem, keyPem: pem, notAfter: z.string() });
/**
 * Per replica: its PostgreSQL, Redis and exporters certificates, and on the
 * monitoring replica its Prometheus' client certificate.
 */
const replicaHostTlsSchema = z.object({ postgres: certPair, redis: certPair, exporters: certPair, prometheusClient: certPair.optional() });
export const replicaTlsSchema = z.record(z.string(), replicaHostTlsSchema);
/** One replica's entry of replicaTls. */
export type ReplicaHostTls = z.infer<typeof replicaHostTlsSchema>;
export type ReplicaTls = z.infer<typeof replicaTlsSchema>;

const csrPem = z.string().includes("-----BEGIN CERTIFICATE REQUEST-----", { message: "expected a PEM certificate request" });
/**
 * A replica stack's `certRequests` output (public): a request per
 * certificate, made with the keys it keeps (components/HostKeys.ts).
 */
export const certRequestsSchema = z.object({ postgres: csrPem, redis: csrPem, exporters: csrPem, prometheusClient: csrPem.optional() });
export type CertRequests = z.infer<typeof certRequestsSchema>;

const signedCert = z.object({ certPem: pem, notAfter: z.string() });
/** Main's `replicaCerts` output (public): per replica, the certificates it signed for that replica's certRequests. */
export const replicaCertsSchema = z.record(z.string(), z.object({ postgres: signedCert, redis: signedCert, exporters: signedCert, prometheusClient: signedCert.optional() }));
export type ReplicaCerts = z.infer<typeof replicaCertsSchema>;

/** A replica stack's output that the main stack reads is malformed: named with the stack, never echoed. */
export class ReplicaStackOutputError extends Error {
  constructor(stack: string, output: string, detail: string) {
    super(`replica stack ${stack}: output "${output}" ${detail}. Run \`pulumi up\` on that stack (this program's version there and here must match), or name the replica's stack in replicaStacks.`);
    this.name = "ReplicaStackOutputError";
  }
}

/** Checks a replica stack's certRequests; undefined when it has exported none yet (a new stack, or one from before this flow). */
export function checkCertRequests(stack: string, value: unknown): CertRequests | undefined {
  if (value === undefined || value === null) return undefined;
  const r = certRequestsSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ReplicaStackOutputError(stack, ["certRequests", ...issue.path].join("."), `is malformed: ${issue.message}`);
  }
  return r.data;
}

/**
 * Whether a certificate carries the public key of this private key (both
 * PEM). Node's crypto derives the public key from a private one
 * (crypto.createPublicKey: "a private key may be passed", nodejs.org/api/crypto.html)
 * and gives a certificate's (X509Certificate.publicKey); the tls provider's
 * locally signed certificate carries its request's public key
 * (terraform-provider-tls, locally signed cert: x509.CreateCertificate with
 * the request's PublicKey).
 */
export function certMatchesKey(certPem: string, keyPem: string): boolean {
  return spkiOf(new X509Certificate(certPem).publicKey).equals(spkiOf(createPublicKey(keyPem)));
}

/** Refuses main's certificate of one kind for this replica when it is not for this stack's own key, naming what to run. */
export function checkCertForOwnKey(mainStack: string, replicaName: string, kind: string, certPem: string, keyPem: string): void {
  if (!certMatchesKey(certPem, keyPem)) {
    throw new MainStackOutputError(
      mainStack,
      `replicaCerts.${replicaName}.${kind}`,
      `holds a certificate for another key than this stack's own ${kind} key (this stack's keys changed since main signed its certificate requests): run \`pulumi up\` on the main stack, which signs this stack's current certRequests, then on this stack again`,
    );
  }
}

/** Whether a certificate carries the public key of a certificate request (both PEM); false for a request that cannot be read. */
export function certMatchesRequest(certPem: string, certRequestPem: string): boolean {
  try {
    return spkiOf(new X509Certificate(certPem).publicKey).equals(spkiOf(readCertRequest(certRequestPem).publicKey));
  } catch {
    return false;
  }
}

/**
 * Main's certificates for this replica that are for the keys of the
 * requests this stack published at its last `up` (its own certRequests
 * output), or undefined when they are not (yet): a stack that is new, or
 * was destroyed and made again, has new keys, and certificates main signed
 * before are for keys that no longer exist; it publishes its requests and
 * waits for main's next `up`. A stack whose services run on its own keys
 * (its last tlsSource) is refused instead of taking them down. Compared
 * by public key, so a request made again for new addresses with the same
 * key still matches the certificate main signed before.
 */
export function signedForPublished(mainStack: string, replicaName: string, offered: ReplicaCerts[string], published: unknown, running: boolean): ReplicaCerts[string] | undefined {
  const requests = certRequestsSchema.safeParse(published);
  const mine = requests.success ? requests.data : undefined;
  const core = mine !== undefined && (["postgres", "redis", "exporters"] as const).every((k) => certMatchesRequest(offered[k].certPem, mine[k]));
  if (!core) {
    if (running) {
      throw new MainStackOutputError(
        mainStack,
        `replicaCerts.${replicaName}`,
        `holds certificates for other keys than those of the requests this stack published (its certRequests output), while its services run on its own keys: nothing was changed. Check that the main stack reads this stack (its replicaStacks), run \`pulumi up\` there, then on this stack again`,
      );
    }
    return undefined;
  }
  const pc = offered.prometheusClient && mine.prometheusClient && certMatchesRequest(offered.prometheusClient.certPem, mine.prometheusClient) ? offered.prometheusClient : undefined;
  return { postgres: offered.postgres, redis: offered.redis, exporters: offered.exporters, ...(pc ? { prometheusClient: pc } : {}) };
}

/**
 * Checks main's `fleet` output. A main stack deployed by a version from
 * before per-service CAs has `caCertPem` (its single CA) and no `cas`: the
 * replica refuses it by name rather than put one CA in every service's
 * trust file, which the certificates main now issues no longer chain to.
 */
export function checkFleetInfo(stack: string, value: unknown): FleetInfo {
  if (value && typeof value === "object" && !("cas" in value) && "caCertPem" in value) {
    throw new MainStackOutputError(
      stack,
      "fleet.cas",
      "is missing: the main stack was last deployed by a version with one CA for every service (fleet.caCertPem), and this version gives PostgreSQL, Redis and metrics a CA each",
    );
  }
  return checkMainOutput(stack, "fleet", fleetInfoSchema, value);
}

export class MainStackOutputError extends Error {
  constructor(stack: string, output: string, detail: string) {
    super(`main stack ${stack}: output "${output}" ${detail}. Run \`pulumi up\` on the main stack first (this program's version there and here must match).`);
    this.name = "MainStackOutputError";
  }
}

/** Checks one output of the main stack against its schema. Never echoes the value (it may be secret). */
export function checkMainOutput<T>(stack: string, output: string, schema: z.ZodType<T>, value: unknown): T {
  if (value === undefined || value === null) throw new MainStackOutputError(stack, output, "is missing");
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const where = issue.path.length ? `${output}.${issue.path.join(".")}` : output;
    throw new MainStackOutputError(stack, where, `is malformed: ${issue.message}`);
  }
  return r.data;
}
