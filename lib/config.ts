/**
 * Stack configuration: the one place that reads `pulumi config`.
 *
 * `parseStackConfig` is pure: it takes the raw configuration map (what
 * `pulumi config` holds, keys like `synaxic:role`) and the set of keys stored
 * as secrets, validates everything with a schema, and either returns a typed
 * object or throws a ConfigError naming the key, the value given and the form
 * expected. Secret values never pass through it: it only checks that they are
 * present and stored encrypted; `loadStackConfig` then reads them with
 * `requireSecret`, so they stay secret Outputs end to end.
 */
import * as pulumi from "@pulumi/pulumi";
import { isIPv4 } from "node:net";
import { X509Certificate } from "node:crypto";
import { z } from "zod";
import { FENCE_METHODS, type FenceMethod } from "./controlInfo";
import { replicaSlotName } from "../templates/postgres-sql";
import { BACKUP_DRILL_DEFAULTS } from "../templates/backup-scheduler";
import { REDIS_BACKUP_PACKAGES_DEFAULT, redisBackupPackagesDefault } from "../templates/redis-backup-image";
import { DEB_VERSION } from "../templates/local-image";
import { ALERTMANAGER_PEER_TIMEOUT_SECONDS } from "../templates/alertmanager";
import { DEFAULT_PUBLIC_PATHS, DEFAULT_WRITE_PATHS, WRITE_PATH, isServerName, publicPathError, type ApiKeyRequests } from "../templates/nginx";
import { PASSWORDS } from "../components/FleetSecrets";
import { rotationEntryError } from "./passwordRotation";

export const PROJECT = "synaxic";

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`${PROJECT}:${key}: ${message}`);
    this.name = "ConfigError";
  }
}

// ---------------------------------------------------------------------------
// Field schemas
// ---------------------------------------------------------------------------

const show = (v: unknown): string => JSON.stringify(v);

const ipv4 = z.string().refine(isIPv4, { message: "expected an IPv4 address such as 10.10.0.2" });

const cidrV4 = z.string().refine(
  (s) => {
    const [addr, bits, ...rest] = s.split("/");
    return rest.length === 0 && !!addr && isIPv4(addr) && /^\d{1,2}$/.test(bits ?? "") && Number(bits) <= 32;
  },
  { message: "expected an IPv4 network in CIDR form such as 10.10.0.0/16" },
);

const port = z.coerce
  .number()
  .int()
  .min(1)
  .max(65535, { message: "expected a TCP port from 1 to 65535" });

/**
 * An image reference with a pinned version: `name:tag` with a tag other than
 * `latest`, or `name@sha256:<digest>`.
 */
export const pinnedImage = z.string().superRefine((s, ctx) => {
  const digest = /^[a-z0-9][a-z0-9._/:-]*@sha256:[a-f0-9]{64}$/;
  const tagged = /^([a-z0-9][a-z0-9._/-]*(?::\d+)?(?:\/[a-z0-9._-]+)*):([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/;
  if (digest.test(s)) return;
  const m = tagged.exec(s);
  if (!m) {
    ctx.addIssue({ code: "custom", message: "expected an image with a pinned tag, such as registry.example.com/synaxic:1.4.2 (a tag or an @sha256 digest is required)" });
  } else if (m[2] === "latest") {
    ctx.addIssue({ code: "custom", message: "the tag 'latest' is not pinned; name a version tag such as :1.4.2 or an @sha256 digest" });
  }
});

const name = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,30}[a-z0-9]$/, {
    message: "expected a lower-case name of letters, digits and '-' (2 to 32 characters, starting with a letter)",
  });

const PG_INT_MAX = 2_147_483_647;

/**
 * Names databaseName cannot take, since it names both the database and the
 * app's role: the server's own databases, the role name PostgreSQL reserves
 * (public; CREATE ROLE refuses it and every pg_* name), the pg_hba.conf
 * database keywords, and the fleet's own roles (lib/postgresContainer.ts
 * PG_ROLES; a unit test keeps them in step).
 */
export const RESERVED_DATABASE_NAMES: readonly string[] = [
  "postgres", "template0", "template1", "public", "none", "current_user", "session_user", "current_role",
  "all", "sameuser", "samerole", "samegroup", "replication",
  "replicator", "synaxic_rewind", "synaxic_exporter",
];

const ALERT_EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const SMARTHOST = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*:([1-9]\d{0,4})$/;
const severity = z.enum(["critical", "warning"], { message: "expected critical (critical alerts only) or warning (warnings and critical alerts)" });
const bool = z.union([z.boolean(), z.enum(["true", "false"]).transform((s) => s === "true")]);
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
/**
 * A PostgreSQL size for a setting kept in megabytes (wal_keep_size,
 * max_slot_wal_keep_size): PostgreSQL refuses to start with more than
 * INT_MAX of its unit (guc_tables.c declares both as int GUCs in MB with
 * max INT_MAX), so larger values are refused here, by key.
 */
const size = z
  .string()
  .regex(/^\d+(kB|MB|GB|TB)$/, { message: "expected a PostgreSQL size such as 512MB or 4GB" })
  .refine((v) => !/^\d+(kB|MB|GB|TB)$/.test(v) || sizeToMB(v) <= PG_INT_MAX, { message: `expected at most ${PG_INT_MAX}MB (about 2047TB), the largest value PostgreSQL accepts for this setting` });

// ---------------------------------------------------------------------------
// The declared keys (mirrors Pulumi.yaml; a unit test checks they agree)
// ---------------------------------------------------------------------------

export interface KeySpec {
  schema: z.ZodType;
  default?: unknown;
  secret?: boolean;
  /** Optional secret: may be absent, but when present must be stored encrypted. */
  optionalSecret?: boolean;
  json?: boolean;
}

export const DEFAULT_IMAGES = {
  postgresImage: "postgres:17.12-trixie",
  redisImage: "redis:8.10.2-trixie",
  nginxImage: "nginx:1.31.10",
  prometheusImage: "prom/prometheus:v3.13.2",
  grafanaImage: "grafana/grafana:13.0.1",
  nodeExporterImage: "prom/node-exporter:v1.11.1",
  postgresExporterImage: "quay.io/prometheuscommunity/postgres-exporter:v0.19.1",
  redisExporterImage: "oliver006/redis_exporter:v1.86.0",
} as const;

// How a former primary was made harmless (the `fence` key): lib/controlInfo.ts.
export { FENCE_METHODS, type FenceMethod } from "./controlInfo";

const debVersion = z.string().regex(DEB_VERSION, { message: 'expected a Debian package version as apt names it, e.g. "8.14.1-2+deb13u7" (`apt-cache policy <package>` in the image it is installed into)' });

const stackName = z.string().regex(/^([A-Za-z0-9_.-]+\/){0,2}[A-Za-z0-9_.-]+$/, { message: 'expected a stack name, e.g. "acme/synaxic/main"' });

export const KEYS: Record<string, KeySpec> = {
  role: { schema: z.enum(["main", "replica", "control"], { message: "expected main, replica or control" }), default: "main" },
  hostName: { schema: name, default: "main" },
  hostProvider: { schema: z.enum(["hetzner", "existing", "local"], { message: "expected hetzner, existing or local" }), default: "hetzner" },
  // Hetzner
  // Checked against Hetzner's catalogue (lib/hetzner.ts) before anything is declared.
  serverType: { schema: z.string().regex(/^[a-z]{2,4}\d{1,3}$/, { message: "expected a Hetzner server type name such as cx33, cpx32, cax21 or ccx23" }), default: "cx33" },
  location: { schema: z.string().regex(/^[a-z]{3}\d{0,2}$/, { message: "expected a Hetzner location name such as nbg1, fsn1, hel1, ash, hil or sin" }), default: "nbg1" },
  osImage: { schema: z.string().min(1), default: "debian-12" },
  networkZone: { schema: z.string().regex(/^([a-z]+-[a-z]+)?$/, { message: "expected a Hetzner network zone such as eu-central, us-east, us-west or ap-southeast, or empty for the location's own" }), default: "" },
  privateNetworkCidr: { schema: cidrV4, default: "10.10.0.0/16" },
  adminCidrs: { schema: z.array(cidrV4), default: [], json: true },
  // Existing host
  sshHost: { schema: z.string(), default: "" },
  sshPort: { schema: port, default: 22 },
  sshUser: { schema: z.string().regex(/^[a-z_][a-z0-9_-]*$/, { message: "expected a Unix user name" }), default: "root" },
  sshHostKey: { schema: z.string(), default: "" },
  memoryMiB: { schema: int(0, 4_194_304), default: 0 },
  cpus: { schema: int(0, 1024), default: 0 },
  // Both
  privateIp: { schema: ipv4, default: "10.10.0.2" },
  sshPrivateKey: { schema: z.string(), optionalSecret: true, default: "" },
  deleteDataOnDestroy: { schema: bool, default: false },
  commandTimeoutSeconds: { schema: int(30, 3600), default: 600 },
  bootstrapGeneration: { schema: int(0, 1_000_000), default: 0 },
  // Main: a counter per generated password; raising one rotates that password (lib/passwordRotation.ts).
  passwordRotation: {
    schema: z.record(z.string(), z.unknown(), { message: "expected a map from password name to counter, e.g. {\"postgresApp\": 1}" }).superRefine((m, ctx) => {
      for (const [k, v] of Object.entries(m)) {
        const message = rotationEntryError(k, v, PASSWORDS);
        if (message) ctx.addIssue({ code: "custom", path: [k], message });
      }
    }),
    default: {},
    json: true,
  },
  replicas: { schema: z.array(z.string()), default: [], json: true },
  appImage: { schema: pinnedImage, default: "ghcr.io/synaxic/synaxic:1.0.0" },
  ...Object.fromEntries(Object.entries(DEFAULT_IMAGES).map(([k, v]) => [k, { schema: pinnedImage, default: v }])),
  // A Debian package version (Debian policy 5.6.12: [epoch:]upstream[-revision]).
  pgbackrestVersion: {
    schema: z.string().regex(/^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$/, { message: 'expected a Debian package version as apt names it, e.g. "2.55.1-1" (`apt-cache policy pgbackrest` in the PostgreSQL image)' }),
    default: "2.55.1-1",
  },
  databaseName: {
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, { message: "expected a lower-case SQL identifier" })
      .refine((v) => !RESERVED_DATABASE_NAMES.includes(v) && !v.startsWith("pg_"), {
        message: `expected a name of your own: it is also the app's role, and ${"`"}pg_*${"`"}, ${"`"}public${"`"}, the server's own databases, pg_hba keywords and the fleet's roles are taken`,
      }),
    default: "synaxic",
  },
  maxConnections: { schema: int(20, 10000), default: 100 },
  // Above 10000 the balancer's worker_connections and open-file limit would pass what Docker's default hard limit allows.
  balancerConcurrency: { schema: int(1, 10_000), default: 64 },
  balancerRateLimit: { schema: int(0, 1_000_000), default: 50 },
  balancerRateBurst: { schema: int(0, 1_000_000), default: 100 },
  balancerWritePaths: {
    schema: z.array(z.string().regex(WRITE_PATH, { message: 'expected path prefixes such as "/login", each starting with "/" and holding only letters, digits and - . _ ~ /' })).max(100),
    default: [...DEFAULT_WRITE_PATHS],
    json: true,
  },
  balancerApiKeyRequests: { schema: z.enum(["writer", "replicas"], { message: "expected writer (API-key usage counted exactly) or replicas (spread, usage on replicas not counted)" }), default: "writer" },
  balancerPublicPaths: {
    schema: z
      .array(
        z.string().superRefine((v, ctx) => {
          const problem = publicPathError(v);
          if (problem) ctx.addIssue({ code: "custom", message: `expected paths such as "/v1/" (a prefix) or "/health" (one path): ${problem}` });
        }),
      )
      .max(200),
    default: [...DEFAULT_PUBLIC_PATHS],
    json: true,
  },
  balancerServerNames: {
    schema: z.array(z.string().refine(isServerName, { message: 'expected host names such as "api.example.com" or "*.example.com", or IPv4 addresses' })).max(100),
    default: [],
    json: true,
  },
  maxSlotWalKeepSize: { schema: size, default: "4GB" },
  walKeepSize: { schema: size, default: "256MB" },
  synchronousReplication: { schema: z.enum(["off", "any1"], { message: "expected off (asynchronous) or any1 (a commit waits until one standby has flushed it)" }), default: "off" },
  httpPort: { schema: port, default: 80 },
  httpsPort: { schema: port, default: 443 },
  postgresPort: { schema: port, default: 5432 },
  redisPort: { schema: port, default: 6380 },
  appPort: { schema: port, default: 8080 },
  prometheusPort: { schema: port, default: 9090 },
  grafanaPort: { schema: port, default: 3000 },
  nodeExporterPort: { schema: port, default: 9100 },
  postgresExporterPort: { schema: port, default: 9187 },
  redisExporterPort: { schema: port, default: 9121 },
  // Alerting (main): Alertmanager and its receivers (templates/alertmanager.ts)
  alertmanagerImage: { schema: pinnedImage, default: "prom/alertmanager:v0.33.1" },
  alertmanagerPort: { schema: port, default: 9093 },
  alertEmailTo: { schema: z.array(z.string().regex(ALERT_EMAIL, { message: "expected plain email addresses such as ops@example.com" })).max(50), default: [], json: true },
  alertEmailFrom: { schema: z.union([z.literal(""), z.string().regex(ALERT_EMAIL, { message: "expected a plain email address such as alerts@example.com" })]), default: "" },
  alertSmtpSmarthost: { schema: z.union([z.literal(""), z.string().regex(SMARTHOST, { message: "expected host:port of the SMTP server, such as smtp.example.com:587" })]), default: "" },
  alertSmtpUsername: { schema: z.string().regex(/^[^\s]*$/, { message: "expected a user name without spaces" }), default: "" },
  alertSmtpPassword: { schema: z.string(), optionalSecret: true, default: "" },
  alertSmtpRequireTls: { schema: bool, default: true },
  alertEmailMinSeverity: { schema: severity, default: "critical" },
  alertSlackWebhookUrl: { schema: z.string(), optionalSecret: true, default: "" },
  alertSlackChannel: { schema: z.union([z.literal(""), z.string().regex(/^[#@][A-Za-z0-9._-]{1,80}$/, { message: "expected a channel such as #ops or a user such as @someone" })]), default: "" },
  alertSlackMinSeverity: { schema: severity, default: "warning" },
  alertWebhookUrl: { schema: z.string(), optionalSecret: true, default: "" },
  alertWebhookMinSeverity: { schema: severity, default: "warning" },
  alertHeartbeatUrl: { schema: z.string(), optionalSecret: true, default: "" },
  monitoringReplica: { schema: z.union([z.literal(""), name]), default: "" },
  alertmanagerClusterPort: { schema: port, default: 9094 },
  alertHeartbeatInterval: { schema: z.string().regex(/^\d+[smh]$/, { message: "expected a duration of whole seconds, minutes or hours such as 1m" }).refine((v) => !/^[01]s$/.test(v) && !/^0[mh]$/.test(v), { message: "expected at least 2s" }), default: "1m" },
  httpsCertificate: { schema: z.string(), default: "" },
  httpsPrivateKey: { schema: z.string(), optionalSecret: true, default: "" },
  // Required on host stacks (checked there); a control stack has neither, and
  // the engine requires every declared key without a default on every stack.
  googleClientId: { schema: z.string(), default: "" },
  googleClientSecret: { schema: z.string(), optionalSecret: true, default: "" },
  // Backups (main; replica stacks take the main stack's)
  backupRepository: {
    schema: z
      .object({
        endpoint: z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/i, { message: 'expected the S3 endpoint\'s DNS name, optionally with :port and without https://, e.g. "fsn1.your-objectstorage.com"' }),
        bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { message: "expected an S3 bucket name (3-63 lower-case letters, digits, '.' or '-')" }),
        region: z.string().regex(/^[a-z0-9-]{1,64}$/, { message: 'expected a region name such as "fsn1" or "eu-central-1"' }),
        path: z.string().regex(/^\/([A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*)?$/, { message: 'expected an absolute path inside the bucket such as "/synaxic"' }).optional(),
        caCertificate: z.string().includes("-----BEGIN CERTIFICATE-----", { message: "expected the PEM certificate of the CA that signed the endpoint's certificate" }).optional(),
        retentionFull: int(1, 1000).optional(),
        retentionDiff: int(1, 1000).optional(),
      })
      .strict()
      .partial(),
    default: {},
    json: true,
  },
  backupFrom: {
    schema: z.string().regex(/^(auto|primary|[a-z][a-z0-9-]{0,30}[a-z0-9])$/, { message: 'expected auto, primary, or the name of a replica in replicas' }),
    default: "auto",
  },
  backupAccessKeyId: { schema: z.string(), optionalSecret: true, default: "" },
  // The repository's encryption key when it must be a given one (a stack re-created after a destroy); empty: generated.
  // eslint-disable-next-line no-control-regex -- line breaks and control characters would end pgBackRest's ini value
  backupCipherPass: { schema: z.string().refine((v) => v === "" || (v.length >= 20 && !/[\u0000-\u001f\u007f]/.test(v) && v.trim() === v), { message: "expected the repository's cipher pass: at least 20 characters, no line breaks, no leading or trailing blanks" }), optionalSecret: true, default: "" },
  backupSecretAccessKey: { schema: z.string(), optionalSecret: true, default: "" },
  backupRestore: {
    schema: z
      .object({
        target: z.string().regex(/^(latest|\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:?\d{2})?)$/, {
          message: 'expected "latest" or a time with its UTC offset, e.g. "2026-11-30 12:00:00+00"',
        }),
        id: int(1, 1_000_000),
      })
      .strict()
      .partial(),
    default: {},
    json: true,
  },
  backupSchedule: {
    schema: z.object({ fullWeekday: int(0, 6), hourUtc: int(0, 23), verifyWeekday: int(0, 6) }).strict(),
    default: { fullWeekday: 0, hourUtc: 3, verifyWeekday: 3 },
    json: true,
  },
  // The weekly restore drill (templates/backup-scheduler.ts); each field has its default (BACKUP_DRILL_DEFAULTS).
  backupDrill: {
    schema: z.object({ enabled: bool, weekday: int(0, 6), hourUtc: int(0, 23), timeoutMinutes: int(10, 1440) }).strict().partial(),
    default: {},
    json: true,
  },
  // Redis snapshots into the backup repository (templates/redis-backup.ts); each field has its default (REDIS_SNAPSHOT_DEFAULTS).
  redisBackupSchedule: {
    schema: z.object({ enabled: bool, hourUtc: int(0, 23), retention: int(1, 1000) }).strict().partial(),
    default: {},
    json: true,
  },
  redisBackupPackages: {
    schema: z.object({ curl: debVersion, openssl: debVersion, caCertificates: debVersion }).strict().partial(),
    default: {},
    json: true,
  },
  // Main: each replica's stack, where the main stack reads its certificate requests (certRequests).
  replicaStacks: { schema: z.record(name, stackName), default: {}, json: true },
  // Replica
  mainStack: { schema: z.string(), default: "" },
  promote: { schema: bool, default: false },
  followPrimary: { schema: z.string().regex(/^([a-z][a-z0-9-]{0,30}[a-z0-9])?$/, { message: "expected the name of a replica in the main stack's list, or empty" }), default: "" },
  rejoin: { schema: bool, default: false },
  reinitGeneration: { schema: int(0, 1_000_000), default: 0 },
  // Host stacks under a control stack
  controlStack: { schema: z.union([z.literal(""), stackName]), default: "" },
  // Control stack
  primary: { schema: name, default: "main" },
  primaryGeneration: { schema: int(0, 1_000_000), default: 0 },
  fence: { schema: z.record(name, z.enum(FENCE_METHODS, { message: "expected stop, poweroff or acknowledged" })), default: {}, json: true },
  hostStacks: { schema: z.record(name, stackName), default: {}, json: true },
};

// ---------------------------------------------------------------------------
// The typed result
// ---------------------------------------------------------------------------

export interface ReplicaEntry {
  name: string;
  privateIp: string;
  /** Physical replication slot on the primary. */
  slotName: string;
}

export type HostConfig =
  | {
      provider: "hetzner";
      serverType: string;
      location: string;
      osImage: string;
      /** Empty: the location's own zone (lib/hetzner.ts). */
      networkZone: string;
      /** Filled from Hetzner's catalogue by lib/hetzner.ts (0 until then). */
      cpus: number;
      memoryMiB: number;
    }
  | {
      /** Every host of the fleet as containers on this machine's Docker engine (the local stack). */
      provider: "local";
      cpus: number;
      memoryMiB: number;
      /**
       * appImage left at its default (KEYS.appImage), which names no public
       * image: the local fleet builds the stand-in app from this repository
       * (standin-app/, components/StandinAppImage.ts) and runs it instead.
       */
      standinApp: boolean;
    }
  | {
      provider: "existing";
      sshHost: string;
      sshPort: number;
      sshUser: string;
      sshHostKey: string;
      cpus: number;
      memoryMiB: number;
    };

/** A VPS: created on Hetzner or an existing server reached over SSH. */
export type VpsHostConfig = Exclude<HostConfig, { provider: "local" }>;

export interface Ports {
  http: number;
  https: number;
  postgres: number;
  redis: number;
  app: number;
  prometheus: number;
  grafana: number;
  nodeExporter: number;
  postgresExporter: number;
  redisExporter: number;
}

export interface Images {
  postgres: string;
  redis: string;
  nginx: string;
  prometheus: string;
  grafana: string;
  nodeExporter: string;
  postgresExporter: string;
  redisExporter: string;
}

interface CommonConfig {
  hostName: string;
  /** The pgbackrest package built into the PostgreSQL image (main's key; a replica builds the main stack's). */
  pgbackrestVersion: string;
  /** The control stack this host takes its role from (promote, followPrimary, rejoin); empty: main is the primary. */
  controlStack: string;
  host: HostConfig;
  privateIp: string;
  privateNetworkCidr: string;
  adminCidrs: string[];
  deleteDataOnDestroy: boolean;
  commandTimeoutSeconds: number;
  images: Images;
  ports: Ports;
  databaseName: string;
  googleClientId: string;
}

export type AlertSeverity = "critical" | "warning";

/** Alertmanager on the main host and who it notifies; the secrets (SMTP password, URLs) are in StackConfig.secrets. */
export interface AlertingConfig {
  image: string;
  /** On the main host's loopback. */
  port: number;
  email?: { smarthost: string; from: string; to: string[]; username: string; requireTls: boolean; minSeverity: AlertSeverity };
  slack?: { channel: string; minSeverity: AlertSeverity };
  webhook?: { minSeverity: AlertSeverity };
  heartbeat?: { interval: string };
  /**
   * A second Prometheus and Alertmanager on this replica (monitoringReplica),
   * the Alertmanagers clustered over the private network on clusterPort.
   */
  pair?: { replica: string; clusterPort: number };
}

export interface MainConfig extends CommonConfig {
  role: "main";
  alerting: AlertingConfig;
  replicas: ReplicaEntry[];
  appImage: string;
  maxConnections: number;
  maxSlotWalKeepSize: string;
  walKeepSize: string;
  /** PEM certificate for the balancer's HTTPS listener; the key is a secret read separately. */
  httpsCertificate?: string;
  /** After a failover: the promoted replica this host's PostgreSQL and Redis follow (the old primary rejoins through pg_rewind). */
  followPrimary: string;
  /** Take the primary role back: promote this host's PostgreSQL (a standby since followPrimary) before it starts as the primary. */
  promote: boolean;
  /** any1: on the primary, a commit waits until one standby has flushed it (synchronous_standby_names ANY 1). */
  synchronousReplication: "off" | "any1";
  /** Raised by the operator to let the primary initialise a new, empty cluster on an empty data directory. */
  bootstrapGeneration: number;
  /** passwordRotation: a counter per password name; raising one regenerates that password (lib/passwordRotation.ts). */
  passwordRotation: Record<string, number>;
  /** Each replica's stack by replica name, where set (replicaStacks); else <organization>/<project>/<replica name>. */
  replicaStacks: Record<string, string>;
  /** Concurrent client requests the balancer is sized for (its upstream keep-alive pools). */
  balancerConcurrency: number;
  /** Requests per second per client address and the burst allowed (0: no limit). */
  balancerRateLimit: { perSecond: number; burst: number } | null;
  /** Requests the balancer sends to the writing app whatever their method: paths that write on GET, and requests with an API key. */
  balancerRouting: { writePaths: string[]; apiKeyRequests: ApiKeyRequests };
  /** Backups, when backupRepository is set. */
  backup: BackupSettings | null;
  /** Bring the primary back from the backup repository into a fresh volume (lib/backup.ts); null: start from its own volume. */
  restore: BackupRestore | null;
  /**
   * What the balancer serves: the paths that reach an app from outside, and
   * the Host names it answers (empty: any). Names default to the HTTPS
   * certificate's when it is set.
   */
  balancerAccess: { publicPaths: string[]; serverNames: string[] };
}

export interface ReplicaConfig extends CommonConfig {
  role: "replica";
  mainStack: string;
  replicaName: string;
  promote: boolean;
  /** Follow this (promoted) replica instead of the main host; empty for the main host. */
  followPrimary: string;
  /** Start a data directory that holds a diverged primary's data by rewinding it (pg_rewind) onto the primary's timeline. */
  rejoin: boolean;
  reinitGeneration: number;
  maxConnections: number;
}

export type ParsedConfig = MainConfig | ReplicaConfig;

/** A point-in-time restore of the primary: `id` names the fresh volume it restores into; `target` is "latest" or a time with its offset. */
export interface BackupRestore {
  target: string;
  id: number;
}

/** Backups into S3-compatible object storage with pgBackRest (lib/backup.ts); the keys are secrets read separately. */
export interface BackupSettings {
  repository: { endpoint: string; bucket: string; region: string; path: string; caCertificate?: string; retentionFull: number; retentionDiff: number };
  /** UTC: a full backup on fullWeekday (0 = Sunday), a differential on every other day, both at hourUtc; verify on verifyWeekday. */
  schedule: { fullWeekday: number; hourUtc: number; verifyWeekday: number };
  /** The replica whose standby the backups are taken from (backupFrom); null: the primary takes them. */
  standby: string | null;
  /**
   * The weekly restore drill (backupDrill), run by the scheduler that takes the backups: on weekday (0 = Sunday), from
   * hourUtc on, bounded by timeoutMinutes; null: no drills.
   */
  drill: BackupDrill | null;
  /** Redis snapshots (redisBackupSchedule, redisBackupPackages); null: off. */
  redis: RedisSnapshotSettings | null;
}

export type BackupDrill = typeof BACKUP_DRILL_DEFAULTS;

/** Daily Redis snapshots from hourUtc (UTC), the newest `retention` kept; the snapshot image's pinned Debian packages. */
export interface RedisSnapshotSettings {
  hourUtc: number;
  retention: number;
  packages: typeof REDIS_BACKUP_PACKAGES_DEFAULT;
}

/** redisBackupSchedule's defaults: daily from 02:00 UTC (before the PostgreSQL backups' 03:00), a week of snapshots kept. */
export const REDIS_SNAPSHOT_DEFAULTS = { hourUtc: 2, retention: 7 } as const;

/** The control stack: which host is primary, and how former primaries were fenced (lib/control.ts). */
export interface ControlConfig {
  role: "control";
  primary: string;
  primaryGeneration: number;
  fence: Record<string, FenceMethod>;
  /** The host stacks by host name: where a fence finds its host (address, host key, Hetzner server). */
  hostStacks: Record<string, string>;
  commandTimeoutSeconds: number;
}

export type ControlStackConfig = ControlConfig & {
  secrets: {
    /** Present when a fence stops a host over SSH. */
    sshPrivateKey?: pulumi.Output<string>;
    /** hcloud:token, present when a fence powers a Hetzner server off. */
    hcloudToken?: pulumi.Output<string>;
  };
};

/** The parsed configuration plus its secrets, as secret Outputs. */
export type StackConfig = ParsedConfig & {
  /**
   * Where the Docker client's SSH identities are written on the machine that
   * runs Pulumi: the environment variable SYNAXIC_SSH_DIR (an absolute path),
   * or, when unset, ~/.ssh/synaxic of the user running Pulumi.
   */
  sshIdentityDir?: string;
  secrets: {
    sshPrivateKey: pulumi.Output<string>;
    googleClientSecret: pulumi.Output<string>;
    httpsPrivateKey?: pulumi.Output<string>;
    /** The object storage's access key, when backups are on; the repository's cipher pass when it is given (backupCipherPass). */
    backup?: { accessKeyId: pulumi.Output<string>; secretAccessKey: pulumi.Output<string>; cipherPass?: pulumi.Output<string> };
    /** Present when the matching receiver is configured (AlertingConfig). */
    alertSmtpPassword?: pulumi.Output<string>;
    alertSlackWebhookUrl?: pulumi.Output<string>;
    alertWebhookUrl?: pulumi.Output<string>;
    alertHeartbeatUrl?: pulumi.Output<string>;
  };
};

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

function fullKey(key: string): string {
  return `${PROJECT}:${key}`;
}

/** The replica's physical replication slot on the primary (one per replica, named after it). */
export function slotNameFor(replicaName: string): string {
  return replicaSlotName(replicaName);
}

/** "4GB" and the like to megabytes. */
export function sizeToMB(size: string): number {
  const m = /^(\d+)(kB|MB|GB|TB)$/.exec(size);
  if (!m) throw new Error(`sizeToMB: ${size} is not a PostgreSQL size`);
  const n = Number(m[1]);
  return m[2] === "kB" ? Math.ceil(n / 1024) : m[2] === "MB" ? n : m[2] === "GB" ? n * 1024 : n * 1024 * 1024;
}

function readKey(raw: Readonly<Record<string, string>>, key: string): unknown {
  const spec = KEYS[key];
  if (!spec) throw new Error(`internal: undeclared config key ${key}`);
  const value = raw[fullKey(key)];
  if (value === undefined) {
    if (spec.default === undefined) {
      throw new ConfigError(key, `missing; set it with \`pulumi config set ${key}${spec.secret ? " --secret" : ""} <value>\``);
    }
    return spec.default;
  }
  let parsedValue: unknown = value;
  if (spec.json) {
    try {
      parsedValue = JSON.parse(value);
    } catch {
      throw new ConfigError(
        key,
        Array.isArray(spec.default)
          ? `got ${show(value)}; expected a list, e.g. set it with \`pulumi config set --path '${key}[0]' <value>\``
          : `got ${show(value)}; expected a map, e.g. set it with \`pulumi config set --path '${key}.<name>' <value>\``,
      );
    }
  }
  const r = spec.schema.safeParse(parsedValue);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const where = issue.path.length ? `[${issue.path.join("][")}]` : "";
    const given = issue.path.length ? (issue.path as (string | number)[]).reduce<unknown>((v, p) => (v as Record<string | number, unknown>)?.[p], parsedValue) : parsedValue;
    throw new ConfigError(`${key}${where}`, `got ${show(given)}; ${issue.message}`);
  }
  return r.data;
}

function requireSecretPresent(raw: Readonly<Record<string, string>>, secretKeys: ReadonlySet<string>, key: string, optional = false): boolean {
  const k = fullKey(key);
  const value = raw[k];
  if (value === undefined || value === "") {
    if (optional) return false;
    throw new ConfigError(key, `missing required secret; set it with \`pulumi config set --secret ${key} <value>\``);
  }
  if (!secretKeys.has(k)) {
    throw new ConfigError(key, `is stored in plain text; it is a secret, store it with \`pulumi config set --secret ${key} <value>\``);
  }
  return true;
}

function parseReplicas(entries: string[], mainIp: string, cidr: string): ReplicaEntry[] {
  const out: ReplicaEntry[] = [];
  const names = new Map<string, number>();
  const ips = new Map<string, number>();
  entries.forEach((entry, i) => {
    const key = `replicas[${i}]`;
    const m = /^([^=\s]+)=([^=\s]+)$/.exec(entry);
    if (!m) throw new ConfigError(key, `got ${show(entry)}; expected "name=private IPv4 address", e.g. "replica-1=10.10.0.3"`);
    const [, rname, ip] = m as unknown as [string, string, string];
    const n = name.safeParse(rname);
    if (!n.success) throw new ConfigError(key, `got name ${show(rname)}; ${n.error.issues[0]!.message}`);
    if (rname === "main") throw new ConfigError(key, `got name "main"; that name is the main host's, choose another such as replica-1`);
    if (!isIPv4(ip)) throw new ConfigError(key, `got address ${show(ip)}; expected an IPv4 address such as 10.10.0.3`);
    if (!inCidr(ip, cidr)) throw new ConfigError(key, `got address ${show(ip)}; expected an address inside the private network ${cidr}`);
    if (ip === mainIp) throw new ConfigError(key, `got address ${show(ip)}; that is the main host's privateIp`);
    if (names.has(rname)) throw new ConfigError(key, `duplicate replica name ${show(rname)} (also replicas[${names.get(rname)}])`);
    if (ips.has(ip)) throw new ConfigError(key, `duplicate address ${show(ip)} (also replicas[${ips.get(ip)}])`);
    names.set(rname, i);
    ips.set(ip, i);
    out.push({ name: rname, privateIp: ip, slotName: slotNameFor(rname) });
  });
  return out;
}

function ipToInt(ip: string): number {
  return ip.split(".").reduce((a, o) => a * 256 + Number(o), 0);
}

export function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split("/") as [string, string];
  const b = Number(bits);
  if (b === 0) return true;
  const mask = b === 32 ? 0xffffffff : (~((1 << (32 - b)) - 1) >>> 0) >>> 0;
  return ((ipToInt(ip) & mask) >>> 0) === ((ipToInt(net) & mask) >>> 0);
}

/** The private IPv4 ranges of RFC 1918. */
export const PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] as const;

/** A network entirely inside one of the RFC 1918 ranges. */
export function isPrivateCidr(cidr: string): boolean {
  const [net, bits] = cidr.split("/") as [string, string];
  return PRIVATE_RANGES.some((r) => Number(bits) >= Number(r.split("/")[1]) && inCidr(net, r));
}

/**
 * Every port the fleet opens is checked against SSH's: the balancer's ports
 * are open to the world, so `httpPort: 22` would open SSH to everyone, and
 * any other service on SSH's port could not bind.
 */
function checkPublicPorts(ports: Ports, sshPort: number): void {
  for (const [k, v] of Object.entries(ports)) {
    if (v === sshPort || v === 22) {
      throw new ConfigError(`${k}Port`, `got ${v}; that is SSH's port${k === "http" || k === "https" ? " and the balancer's ports are open to the world" : ""}; choose another`);
    }
  }
}

function checkPortClashes(ports: Ports): void {
  const seen = new Map<number, string>();
  for (const [k, v] of Object.entries(ports)) {
    const other = seen.get(v);
    if (other) throw new ConfigError(`${k}Port`, `got ${v}; it clashes with ${other}Port, which is also ${v}`);
    seen.set(v, k);
  }
  // The app's second deploy slot listens on appPort + 1 (templates/app.ts).
  const slotB = ports.app + 1;
  if (slotB > 65535) throw new ConfigError("appPort", `got ${ports.app}; the app's second deploy slot listens on appPort + 1, which must be a TCP port too`);
  const clash = seen.get(slotB);
  if (clash) throw new ConfigError("appPort", `got ${ports.app}; the app's second deploy slot listens on appPort + 1 = ${slotB}, which is ${clash}Port`);
}

/** A secret that must be an http(s) URL when set; the error never shows it. */
function checkSecretUrl(raw: Readonly<Record<string, string>>, secretKeys: ReadonlySet<string>, key: string, httpsOnly: boolean): boolean {
  if (!requireSecretPresent(raw, secretKeys, key, true)) return false;
  const v = raw[fullKey(key)]!;
  let ok = false;
  try {
    const u = new URL(v);
    ok = (u.protocol === "https:" || (!httpsOnly && u.protocol === "http:")) && !/\s/.test(v);
  } catch {
    ok = false;
  }
  if (!ok) throw new ConfigError(key, `expected ${httpsOnly ? "an https://" : "an http(s)://"} URL (the value is a secret and not shown here)`);
  return true;
}

/** A duration of whole seconds, minutes or hours (alertHeartbeatInterval's form), in seconds. */
function durationSeconds(v: string): number {
  const m = /^(\d+)([smh])$/.exec(v);
  if (!m) throw new Error(`durationSeconds: ${v} is not a duration of whole seconds, minutes or hours`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600 }[m[2] as "s" | "m" | "h"];
}

/** The alerting keys of a main stack: Alertmanager and the receivers that are set. */
function parseAlerting(raw: Readonly<Record<string, string>>, secretKeys: ReadonlySet<string>, get: <T>(key: string) => T, ports: Ports, replicas: readonly ReplicaEntry[]): AlertingConfig {
  const port = get<number>("alertmanagerPort");
  for (const [k, v] of Object.entries(ports)) {
    if (v === port) throw new ConfigError("alertmanagerPort", `got ${port}; it clashes with ${k}Port, which is also ${port}`);
  }
  const clusterPort = get<number>("alertmanagerClusterPort");
  for (const [k, v] of Object.entries({ ...ports, alertmanager: port })) {
    if (v === clusterPort) throw new ConfigError("alertmanagerClusterPort", `got ${clusterPort}; it clashes with ${k}Port, which is also ${clusterPort}`);
  }
  const out: AlertingConfig = { image: get("alertmanagerImage"), port };
  const monitoringReplica = get<string>("monitoringReplica");
  if (monitoringReplica) {
    if (!replicas.some((r) => r.name === monitoringReplica)) {
      throw new ConfigError("monitoringReplica", `got ${show(monitoringReplica)}; expected one of this stack's replicas (${replicas.map((r) => r.name).join(", ") || "none"}), or empty for monitoring on the main host only`);
    }
    out.pair = { replica: monitoringReplica, clusterPort };
  }

  const to = get<string[]>("alertEmailTo");
  const from = get<string>("alertEmailFrom");
  const smarthost = get<string>("alertSmtpSmarthost");
  const username = get<string>("alertSmtpUsername");
  const hasPassword = requireSecretPresent(raw, secretKeys, "alertSmtpPassword", true);
  if (to.length > 0) {
    if (!from) throw new ConfigError("alertEmailFrom", `missing; alertEmailTo is set, so alerts are mailed and need a sender address: \`pulumi config set alertEmailFrom alerts@example.com\``);
    if (!smarthost) throw new ConfigError("alertSmtpSmarthost", `missing; alertEmailTo is set, so alerts are mailed through an SMTP server: \`pulumi config set alertSmtpSmarthost smtp.example.com:587\``);
    if (!!username !== hasPassword) {
      throw new ConfigError(username ? "alertSmtpPassword" : "alertSmtpUsername", `SMTP authentication needs both alertSmtpUsername and alertSmtpPassword (secret); only one is set`);
    }
    out.email = { smarthost, from, to, username, requireTls: get("alertSmtpRequireTls"), minSeverity: get("alertEmailMinSeverity") };
  } else {
    for (const k of ["alertEmailFrom", "alertSmtpSmarthost", "alertSmtpUsername"] as const) {
      if (setAwayFromDefault(raw, k)) throw new ConfigError(k, `is set but alertEmailTo is empty; list the recipients: \`pulumi config set --path 'alertEmailTo[0]' ops@example.com\``);
    }
    if (hasPassword) throw new ConfigError("alertSmtpPassword", `is set but alertEmailTo is empty; list the recipients: \`pulumi config set --path 'alertEmailTo[0]' ops@example.com\``);
  }
  // Slack's incoming webhooks are https; a generic webhook or heartbeat may be a plain-HTTP endpoint on the private network.
  if (checkSecretUrl(raw, secretKeys, "alertSlackWebhookUrl", true)) out.slack = { channel: get("alertSlackChannel"), minSeverity: get("alertSlackMinSeverity") };
  else if (setAwayFromDefault(raw, "alertSlackChannel")) throw new ConfigError("alertSlackChannel", `is set but alertSlackWebhookUrl is not; set the webhook URL with \`pulumi config set --secret alertSlackWebhookUrl <url>\``);
  if (checkSecretUrl(raw, secretKeys, "alertWebhookUrl", false)) out.webhook = { minSeverity: get("alertWebhookMinSeverity") };
  if (checkSecretUrl(raw, secretKeys, "alertHeartbeatUrl", false)) out.heartbeat = { interval: get("alertHeartbeatInterval") };
  if (out.pair && out.heartbeat) {
    // The second Alertmanager sends only after the peer timeout, and skips
    // what the first sent less than the heartbeat's repeat_interval (half the
    // interval) ago: a shorter interval would ping twice per interval.
    const seconds = durationSeconds(out.heartbeat.interval);
    if (seconds / 2 <= ALERTMANAGER_PEER_TIMEOUT_SECONDS) {
      throw new ConfigError(
        "alertHeartbeatInterval",
        `got ${show(out.heartbeat.interval)}; with monitoringReplica set, the two Alertmanagers would both send the Watchdog: expected more than ${2 * ALERTMANAGER_PEER_TIMEOUT_SECONDS}s (twice their peer timeout, ${ALERTMANAGER_PEER_TIMEOUT_SECONDS}s), such as 1m`,
      );
    }
  }
  return out;
}

/**
 * Validates the raw configuration map. Pure: no Pulumi calls, no I/O.
 * @param raw keys like "synaxic:role" to their string values (secrets included or not)
 * @param secretKeys the full keys stored encrypted
 */
/** Keys that belong to one kind of stack only: set on another, they are refused rather than ignored. */
const CONTROL_ONLY_KEYS = ["primary", "primaryGeneration", "fence", "hostStacks"] as const;

/** A host's own say in the primary's place: refused on every stack (the control stack decides). */
const ROLE_KEYS = ["promote", "followPrimary", "rejoin"] as const;

/**
 * Whether a key holds something other than its declared default. The engine
 * hands the program every key Pulumi.yaml declares with a default, set or not,
 * so "present" says nothing; a value equal to the default is as good as unset.
 */
function setAwayFromDefault(raw: Readonly<Record<string, string>>, key: string): boolean {
  if (raw[fullKey(key)] === undefined) return false;
  return JSON.stringify(readKey(raw, key)) !== JSON.stringify(KEYS[key]!.default);
}

function parseControlConfig(raw: Readonly<Record<string, string>>, secretKeys: ReadonlySet<string>, get: <T>(key: string) => T): ControlConfig {
  const allowed = new Set<string>(["role", "commandTimeoutSeconds", "sshPrivateKey", ...CONTROL_ONLY_KEYS]);
  for (const k of Object.keys(raw)) {
    if (k.startsWith(`${PROJECT}:`) && !allowed.has(k.slice(PROJECT.length + 1)) && setAwayFromDefault(raw, k.slice(PROJECT.length + 1))) {
      throw new ConfigError(k.slice(PROJECT.length + 1), `is for host stacks; a control stack has no host (it reads primary, primaryGeneration, fence and hostStacks)`);
    }
  }
  const fence = get<Record<string, FenceMethod>>("fence");
  const hostStacks = get<Record<string, string>>("hostStacks");
  for (const [host, method] of Object.entries(fence)) {
    if (method !== "acknowledged" && !hostStacks[host]) {
      throw new ConfigError(`hostStacks.${host}`, `missing; fence.${host} is ${method}, which needs ${host}'s stack (its address, host key or Hetzner server): \`pulumi config set --path 'hostStacks.${host}' <org>/synaxic/<stack>\``);
    }
  }
  if (Object.values(fence).includes("stop")) requireSecretPresent(raw, secretKeys, "sshPrivateKey");
  return {
    role: "control",
    primary: get("primary"),
    primaryGeneration: get("primaryGeneration"),
    fence,
    hostStacks,
    commandTimeoutSeconds: get("commandTimeoutSeconds"),
  };
}

export function parseStackConfig(raw: Readonly<Record<string, string>>, secretKeys: ReadonlySet<string>): ParsedConfig | ControlConfig {
  for (const k of Object.keys(raw)) {
    if (k.startsWith(`${PROJECT}:`) && !(k.slice(PROJECT.length + 1) in KEYS)) {
      throw new ConfigError(k.slice(PROJECT.length + 1), `unknown key; see the configuration reference in the README for the keys this program reads`);
    }
  }
  const get = <T>(key: string): T => readKey(raw, key) as T;
  const role = get<"main" | "replica" | "control">("role");
  if (role === "control") return parseControlConfig(raw, secretKeys, get);
  const provider = get<"hetzner" | "existing" | "local">("hostProvider");

  for (const k of CONTROL_ONLY_KEYS) {
    if (setAwayFromDefault(raw, k)) throw new ConfigError(k, `is for the control stack (role: control); a ${role} stack reads its role from controlStack`);
  }
  const controlStack = get<string>("controlStack");
  if (controlStack && provider === "local") throw new ConfigError("controlStack", `is for fleets of VPS stacks; the local stack runs every host itself`);
  // A primary other than main comes only from the control stack: one decision,
  // so two hosts can never both be told to take writes.
  for (const k of ROLE_KEYS) {
    if (!setAwayFromDefault(raw, k)) continue;
    throw new ConfigError(
      k,
      controlStack
        ? `is set on a stack whose primary is decided by the control stack ${controlStack}; remove it (\`pulumi config rm ${k}\`) and change primary on the control stack instead`
        : `is no longer read: a host other than main becomes primary only through a control stack, so that two hosts can never both promote. ` +
            `Create one (\`pulumi stack init <org>/control\`, \`pulumi config set role control\`, \`pulumi up -s <org>/control\`), ` +
            `set \`pulumi config set controlStack <org>/synaxic/control\` on every host stack, remove this key (\`pulumi config rm ${k}\`) and change primary on the control stack ` +
            `(docs/runbook.md, "Moving a fleet onto a control stack")`,
    );
  }

  if (provider !== "local") requireSecretPresent(raw, secretKeys, "sshPrivateKey");
  requireSecretPresent(raw, secretKeys, "googleClientSecret");
  if (!get<string>("googleClientId")) {
    throw new ConfigError("googleClientId", `missing; set it with \`pulumi config set googleClientId <client id>.apps.googleusercontent.com\` (Google Cloud Console, OAuth client)`);
  }

  let host: HostConfig;
  const cpusGiven = get<number>("cpus");
  const memGiven = get<number>("memoryMiB");
  if (provider === "hetzner") {
    // Hetzner's cloud firewall drops whatever no rule allows: without an
    // SSH rule for where Pulumi runs, the program locks itself out.
    if (get<string[]>("adminCidrs").length === 0) {
      throw new ConfigError(
        "adminCidrs",
        `is empty; a Hetzner server's firewall would then close SSH to everyone, including this program (its commands and Docker run over SSH). List the networks Pulumi runs from (your workstation, bastion and CI runners), e.g. \`pulumi config set --path 'adminCidrs[0]' 198.51.100.7/32\``,
      );
    }
    host = {
      provider,
      serverType: get("serverType"),
      location: get("location"),
      osImage: get("osImage"),
      networkZone: get("networkZone"),
      cpus: 0,
      memoryMiB: 0,
    };
  } else if (provider === "local") {
    if (role !== "main") {
      throw new ConfigError("hostProvider", `got "local" on a ${role} stack; a local stack is a main stack that also runs its replicas on this machine's Docker engine`);
    }
    // Each host of the local fleet is sized as a small VPS (the main host's memory budget needs at least 2844 MiB).
    // The CLI hands the program Pulumi.yaml's default for every key the stack
    // does not set (pulumi/pulumi sdk/go/common/workspace/config.go,
    // mergeConfig), so "not set" reads as the default value.
    host = { provider, cpus: cpusGiven || 2, memoryMiB: memGiven || 4096, standinApp: !setAwayFromDefault(raw, "appImage") };
  } else {
    const sshHost = get<string>("sshHost");
    if (!sshHost) throw new ConfigError("sshHost", `missing; an existing host needs the address it is reached at over SSH`);
    if (!isIPv4(sshHost) && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(sshHost)) {
      throw new ConfigError("sshHost", `got ${show(sshHost)}; expected an IPv4 address or a DNS name`);
    }
    const sshHostKey = get<string>("sshHostKey");
    if (/^ssh-(rsa|dss) /.test(sshHostKey.trim())) {
      // The command provider pins a host key by offering only that key's own
      // algorithm (pulumi-command, provider/pkg/provider/remote/connection.go,
      // SSHConfig: HostKeyAlgorithms = []string{publicKey.Type()}); for an RSA
      // key that is SHA-1 "ssh-rsa", which OpenSSH 8.8 and later refuse by
      // default. Every OpenSSH server also has an ed25519 or ECDSA key.
      throw new ConfigError(
        "sshHostKey",
        `got an ${sshHostKey.trim().split(" ")[0]} key; pinning it makes the SSH client offer SHA-1 signatures, which current OpenSSH servers refuse, so no command would connect. Pin the host's ed25519 key instead (\`ssh-keyscan -t ed25519 <host>\`, checked out of band)`,
      );
    }
    if (!/^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/=]+$/.test(sshHostKey.trim().split(/\s+/).slice(0, 2).join(" "))) {
      throw new ConfigError(
        "sshHostKey",
        `got ${show(sshHostKey)}; expected the host's public SSH key, e.g. "ssh-ed25519 AAAA..." (from \`ssh-keyscan -t ed25519 <host>\`, checked out of band); it is pinned, never skipped`,
      );
    }
    if (!cpusGiven) throw new ConfigError("cpus", `missing; an existing host needs its CPU count for PostgreSQL sizing`);
    if (!memGiven) throw new ConfigError("memoryMiB", `missing; an existing host needs its memory in MiB for PostgreSQL sizing`);
    host = { provider, sshHost, sshPort: get("sshPort"), sshUser: get("sshUser"), sshHostKey: sshHostKey.trim(), cpus: cpusGiven, memoryMiB: memGiven };
  }

  const privateNetworkCidr = get<string>("privateNetworkCidr");
  if (!isPrivateCidr(privateNetworkCidr)) {
    throw new ConfigError(
      "privateNetworkCidr",
      `got ${show(privateNetworkCidr)}; expected a private range inside ${PRIVATE_RANGES.join(", ")} (RFC 1918): PostgreSQL, Redis, the app and the exporters listen on it`,
    );
  }
  const privateIp = get<string>("privateIp");
  if (!inCidr(privateIp, privateNetworkCidr)) {
    throw new ConfigError("privateIp", `got ${show(privateIp)}; expected an address inside privateNetworkCidr ${privateNetworkCidr}`);
  }

  const ports: Ports = {
    http: get("httpPort"),
    https: get("httpsPort"),
    postgres: get("postgresPort"),
    redis: get("redisPort"),
    app: get("appPort"),
    prometheus: get("prometheusPort"),
    grafana: get("grafanaPort"),
    nodeExporter: get("nodeExporterPort"),
    postgresExporter: get("postgresExporterPort"),
    redisExporter: get("redisExporterPort"),
  };
  checkPortClashes(ports);
  checkPublicPorts(ports, provider === "existing" ? get<number>("sshPort") : 22);

  const images: Images = {
    postgres: get("postgresImage"),
    redis: get("redisImage"),
    nginx: get("nginxImage"),
    prometheus: get("prometheusImage"),
    grafana: get("grafanaImage"),
    nodeExporter: get("nodeExporterImage"),
    postgresExporter: get("postgresExporterImage"),
    redisExporter: get("redisExporterImage"),
  };

  const common: CommonConfig = {
    hostName: get("hostName"),
    pgbackrestVersion: get("pgbackrestVersion"),
    controlStack,
    host,
    privateIp,
    privateNetworkCidr,
    adminCidrs: get("adminCidrs"),
    deleteDataOnDestroy: get("deleteDataOnDestroy"),
    commandTimeoutSeconds: get("commandTimeoutSeconds"),
    images,
    ports,
    databaseName: get("databaseName"),
    googleClientId: get("googleClientId"),
  };

  if (role === "main") {
    if (common.hostName !== "main") {
      throw new ConfigError("hostName", `got ${show(common.hostName)} on the main stack; expected "main"`);
    }
    const httpsCertificate = get<string>("httpsCertificate");
    const hasKey = requireSecretPresent(raw, secretKeys, "httpsPrivateKey", true);
    if (!!httpsCertificate !== hasKey) {
      throw new ConfigError(
        hasKey ? "httpsCertificate" : "httpsPrivateKey",
        `HTTPS needs both httpsCertificate (PEM) and httpsPrivateKey (secret PEM); only one is set`,
      );
    }
    if (httpsCertificate && !httpsCertificate.includes("-----BEGIN CERTIFICATE-----")) {
      throw new ConfigError("httpsCertificate", `got ${show(httpsCertificate.slice(0, 40))}...; expected a PEM certificate chain`);
    }
    const replicas = parseReplicas(get<string[]>("replicas"), privateIp, privateNetworkCidr);
    const backup = parseBackup(raw, secretKeys, get, replicas);
    const restore = parseRestore(get, backup !== null);
    const synchronousReplication = get<"off" | "any1">("synchronousReplication");
    if (synchronousReplication !== "off" && replicas.length === 0) {
      throw new ConfigError("synchronousReplication", `got ${show(synchronousReplication)} with no replicas: every commit would wait for a standby that does not exist. Add a replica to replicas first, or leave it off`);
    }
    const alerting = parseAlerting(raw, secretKeys, get, ports, replicas);
    const replicaStacks = get<Record<string, string>>("replicaStacks");
    for (const r of Object.keys(replicaStacks)) {
      if (!replicas.some((x) => x.name === r)) {
        throw new ConfigError(`replicaStacks.${r}`, `names no replica of this stack's (${replicas.map((x) => x.name).join(", ") || "none"}); expected a replica's name from replicas`);
      }
    }
    if (provider === "local" && Object.keys(replicaStacks).length > 0) {
      throw new ConfigError("replicaStacks", `is for a main stack whose replicas have stacks of their own; the local stack runs every host itself`);
    }
    return {
      ...common,
      role,
      alerting,
      replicas,
      replicaStacks,
      followPrimary: "",
      promote: false,
      synchronousReplication,
      bootstrapGeneration: get("bootstrapGeneration"),
      passwordRotation: get("passwordRotation"),
      balancerConcurrency: get("balancerConcurrency"),
      balancerRateLimit: get<number>("balancerRateLimit") > 0 ? { perSecond: get<number>("balancerRateLimit"), burst: get<number>("balancerRateBurst") } : null,
      balancerRouting: { writePaths: get<string[]>("balancerWritePaths"), apiKeyRequests: get<ApiKeyRequests>("balancerApiKeyRequests") },
      balancerAccess: { publicPaths: get<string[]>("balancerPublicPaths"), serverNames: serverNames(get<string[]>("balancerServerNames"), httpsCertificate) },
      appImage: get("appImage"),
      maxConnections: get("maxConnections"),
      maxSlotWalKeepSize: get("maxSlotWalKeepSize"),
      walKeepSize: get("walKeepSize"),
      backup,
      restore,
      ...(httpsCertificate ? { httpsCertificate } : {}),
    };
  }
  for (const k of BACKUP_KEYS) {
    if (setAwayFromDefault(raw, k)) throw new ConfigError(k, `is for the main stack; replica stacks archive and back up into the main stack's repository`);
  }
  for (const k of ["monitoringReplica", "alertmanagerClusterPort"] as const) {
    if (setAwayFromDefault(raw, k)) throw new ConfigError(k, `is for the main stack; it chooses the replica that runs the second Prometheus and Alertmanager`);
  }
  if (setAwayFromDefault(raw, "synchronousReplication")) {
    throw new ConfigError("synchronousReplication", `is for the main stack; every server takes it from the main stack's fleet output, so that whichever is primary waits for the others alike`);
  }

  const mainStack = get<string>("mainStack");
  if (!/^([A-Za-z0-9_.-]+\/){0,2}[A-Za-z0-9_.-]+$/.test(mainStack)) {
    throw new ConfigError("mainStack", `got ${show(mainStack)}; a replica stack needs the main stack's name, e.g. "acme/synaxic/main"`);
  }
  const replicaName = common.hostName;
  if (replicaName === "main") {
    throw new ConfigError("hostName", `got "main" on a replica stack; expected this replica's name as listed in the main stack's replicas, e.g. replica-1`);
  }
  if (get<number>("bootstrapGeneration") !== 0) {
    throw new ConfigError("bootstrapGeneration", `is for the main stack; a replica clones its primary (reinitGeneration re-clones it)`);
  }
  if (setAwayFromDefault(raw, "replicaStacks")) throw new ConfigError("replicaStacks", `is for the main stack; it names where it reads each replica's certificate requests`);
  if (setAwayFromDefault(raw, "passwordRotation")) throw new ConfigError("passwordRotation", `is for the main stack; it generates every password, and replica stacks take the new ones from its outputs`);
  return {
    ...common,
    role,
    mainStack,
    replicaName,
    promote: false,
    followPrimary: "",
    rejoin: false,
    reinitGeneration: get("reinitGeneration"),
    maxConnections: get("maxConnections"),
  };
}

const BACKUP_KEYS = ["backupRepository", "backupFrom", "backupAccessKeyId", "backupSecretAccessKey", "backupCipherPass", "backupSchedule", "backupDrill", "backupRestore", "redisBackupSchedule", "redisBackupPackages"] as const;

/** redisBackupSchedule and redisBackupPackages: each field defaults; enabled false turns snapshots off. Only with a repository. */
function parseRedisSnapshots(raw: Readonly<Record<string, string>>, get: <T>(key: string) => T, hasRepository: boolean): RedisSnapshotSettings | null {
  // Each pin defaults to the Debian release redisImage is built on (templates/redis-backup-image.ts).
  const schedule = get<Partial<{ enabled: boolean; hourUtc: number; retention: number }>>("redisBackupSchedule");
  const packages = get<Partial<RedisSnapshotSettings["packages"]>>("redisBackupPackages");
  if (!hasRepository) {
    for (const k of ["redisBackupSchedule", "redisBackupPackages"] as const) {
      if (setAwayFromDefault(raw, k)) throw new ConfigError(k, `is set but backupRepository is not; Redis snapshots go into the backup repository: set backupRepository (endpoint, bucket, region) to turn backups on`);
    }
    return null;
  }
  if (schedule.enabled === false) return null;
  return {
    hourUtc: schedule.hourUtc ?? REDIS_SNAPSHOT_DEFAULTS.hourUtc,
    retention: schedule.retention ?? REDIS_SNAPSHOT_DEFAULTS.retention,
    packages: { ...redisBackupPackagesDefault(get<string>("redisImage")), ...packages },
  };
}

/** backupDrill: each field defaults (BACKUP_DRILL_DEFAULTS); enabled false turns drills off. */
function parseDrill(get: <T>(key: string) => T): BackupDrill | null {
  const d = get<Partial<BackupDrill & { enabled: boolean }>>("backupDrill");
  if (d.enabled === false) return null;
  return { weekday: d.weekday ?? BACKUP_DRILL_DEFAULTS.weekday, hourUtc: d.hourUtc ?? BACKUP_DRILL_DEFAULTS.hourUtc, timeoutMinutes: d.timeoutMinutes ?? BACKUP_DRILL_DEFAULTS.timeoutMinutes };
}

/** backupRestore: both fields, and only with a repository to restore from. */
function parseRestore(get: <T>(key: string) => T, hasRepository: boolean): BackupRestore | null {
  const r = get<Partial<BackupRestore>>("backupRestore");
  if (Object.keys(r).length === 0) return null;
  if (!hasRepository) throw new ConfigError("backupRestore", `needs backupRepository: the primary is restored from the backup repository`);
  if (r.target === undefined) throw new ConfigError("backupRestore[target]", `missing; "latest" (everything archived) or a time with its UTC offset, e.g. "2026-11-30 12:00:00+00"`);
  if (r.id === undefined) throw new ConfigError("backupRestore[id]", `missing; a number of your own (1, then 2 for a later restore): each id is a fresh volume the primary is restored into`);
  return { target: r.target, id: r.id };
}

/** backupRepository and its access key: all or nothing. */
function parseBackup(raw: Readonly<Record<string, string>>, secretKeys: ReadonlySet<string>, get: <T>(key: string) => T, replicas: ReplicaEntry[]): BackupSettings | null {
  const schedule = get<BackupSettings["schedule"]>("backupSchedule");
  const drill = parseDrill(get);
  const from = get<string>("backupFrom");
  if (from !== "auto" && from !== "primary" && !replicas.some((r) => r.name === from)) {
    throw new ConfigError("backupFrom", `got ${show(from)}; expected auto, primary, or one of this stack's replicas (${replicas.map((r) => r.name).join(", ") || "none"})`);
  }
  // auto: from a standby when there is one (the first replica), so that backups load the primary only lightly.
  const standby = from === "primary" ? null : from === "auto" ? (replicas[0]?.name ?? null) : from;
  const repo = get<Partial<BackupSettings["repository"]>>("backupRepository");
  const hasCipherPass = requireSecretPresent(raw, secretKeys, "backupCipherPass", true);
  if (hasCipherPass) get<string>("backupCipherPass");
  const hasKeyId = requireSecretPresent(raw, secretKeys, "backupAccessKeyId", true);
  const hasSecret = requireSecretPresent(raw, secretKeys, "backupSecretAccessKey", true);
  const redis = parseRedisSnapshots(raw, get, Object.keys(repo).length > 0);
  if (Object.keys(repo).length === 0) {
    if (hasCipherPass) throw new ConfigError("backupCipherPass", `is set but backupRepository is not; set backupRepository to turn backups on`);
    if (hasKeyId || hasSecret) throw new ConfigError(hasKeyId ? "backupAccessKeyId" : "backupSecretAccessKey", `is set but backupRepository is not; set backupRepository (endpoint, bucket, region) to turn backups on`);
    return null;
  }
  for (const f of ["endpoint", "bucket", "region"] as const) {
    if (!repo[f]) throw new ConfigError(`backupRepository[${f}]`, `missing; a backup repository needs endpoint, bucket and region, e.g. \`pulumi config set --path backupRepository.${f} <value>\``);
  }
  if (!hasKeyId) requireSecretPresent(raw, secretKeys, "backupAccessKeyId");
  if (!hasSecret) requireSecretPresent(raw, secretKeys, "backupSecretAccessKey");
  return {
    repository: {
      endpoint: repo.endpoint!,
      bucket: repo.bucket!,
      region: repo.region!,
      path: repo.path ?? "/synaxic",
      ...(repo.caCertificate ? { caCertificate: repo.caCertificate } : {}),
      retentionFull: repo.retentionFull ?? 2,
      retentionDiff: repo.retentionDiff ?? 6,
    },
    schedule,
    standby,
    drill,
    redis,
  };
}

/**
 * The Host names the balancer serves: balancerServerNames when set;
 * otherwise, with HTTPS, the names the certificate is valid for (its
 * subjectAltName DNS names and IPv4 addresses: a browser accepts the
 * certificate for no other name, so no other name is a real client's);
 * otherwise none, meaning any Host.
 */
export function serverNames(configured: string[], httpsCertificate: string): string[] {
  if (configured.length > 0 || !httpsCertificate) return configured;
  let sans: string;
  try {
    sans = new X509Certificate(httpsCertificate).subjectAltName ?? "";
  } catch (e) {
    throw new ConfigError("httpsCertificate", `is not a certificate nginx could load (${(e as Error).message}); expected the PEM chain, the server's own certificate first`);
  }
  const names = sans
    .split(/,\s*/)
    .map((entry) => /^(DNS|IP Address):(.+)$/.exec(entry.trim()))
    .filter((m): m is RegExpExecArray => m !== null && (m[1] === "DNS" ? isServerName(m[2]!) : isIPv4(m[2]!)))
    .map((m) => m[2]!);
  if (names.length === 0) {
    throw new ConfigError("balancerServerNames", `is empty and httpsCertificate names no host in its subjectAltName; set the names clients use (e.g. ["api.example.com"])`);
  }
  return [...new Set(names)];
}

/**
 * Reads the running stack's configuration. The only function here that
 * touches Pulumi: it gathers the raw map, validates it, and reads the
 * secrets with requireSecret.
 */
export function loadStackConfig(): StackConfig {
  const cfg = loadConfig();
  if (cfg.role === "control") throw new ConfigError("role", `is control; this program part builds host stacks`);
  return cfg;
}

/** Reads the running stack's configuration, a control stack's included. */
export function loadConfig(): StackConfig | ControlStackConfig {
  const raw = pulumi.runtime.allConfig();
  const secretKeys = new Set(Object.keys(raw).filter((k) => isSecretKey(k)));
  const parsed = parseStackConfig(raw, secretKeys);
  const cfg = new pulumi.Config(PROJECT);
  if (parsed.role === "control") {
    const methods = Object.values(parsed.fence);
    return {
      ...parsed,
      secrets: {
        ...(methods.includes("stop") ? { sshPrivateKey: cfg.requireSecret("sshPrivateKey") } : {}),
        // The Hetzner provider's own key: the token the operator already keeps for the fleet.
        ...(methods.includes("poweroff") ? { hcloudToken: new pulumi.Config("hcloud").requireSecret("token") } : {}),
      },
    };
  }
  const secrets: StackConfig["secrets"] = {
    sshPrivateKey: parsed.host.provider === "local" ? pulumi.secret("") : cfg.requireSecret("sshPrivateKey"),
    googleClientSecret: cfg.requireSecret("googleClientSecret"),
  };
  if (parsed.role === "main" && parsed.httpsCertificate) {
    secrets.httpsPrivateKey = cfg.requireSecret("httpsPrivateKey");
  }
  if (parsed.role === "main" && parsed.backup) {
    secrets.backup = {
      accessKeyId: cfg.requireSecret("backupAccessKeyId"),
      secretAccessKey: cfg.requireSecret("backupSecretAccessKey"),
      ...(raw[`${PROJECT}:backupCipherPass`] ? { cipherPass: cfg.requireSecret("backupCipherPass") } : {}),
    };
  }
  if (parsed.role === "main") {
    const a = parsed.alerting;
    if (a.email?.username) secrets.alertSmtpPassword = cfg.requireSecret("alertSmtpPassword");
    if (a.slack) secrets.alertSlackWebhookUrl = cfg.requireSecret("alertSlackWebhookUrl");
    if (a.webhook) secrets.alertWebhookUrl = cfg.requireSecret("alertWebhookUrl");
    if (a.heartbeat) secrets.alertHeartbeatUrl = cfg.requireSecret("alertHeartbeatUrl");
  }
  if (parsed.host.provider !== "local") checkDockerEnvironment(process.env);
  const sshIdentityDir = parseSshIdentityDir(process.env.SYNAXIC_SSH_DIR);
  return { ...parsed, secrets, ...(sshIdentityDir ? { sshIdentityDir } : {}) };
}

/**
 * Docker client settings in the environment that the Docker provider reads
 * as defaults of its own configuration (terraform-provider-docker,
 * internal/provider/provider.go: `context` from DOCKER_CONTEXT "overrides
 * the host"; ca/cert/key material from DOCKER_*_MATERIAL and cert_path from
 * DOCKER_CERT_PATH, which config.go MakeClient then uses in place of the
 * ssh:// connection). Any of them would send the fleet's containers to
 * another daemon or break the connection, so a VPS stack refuses to run with
 * them set. DOCKER_HOST and DOCKER_SSH_OPTS only fill `host` and `ssh_opts`
 * when those are unset, and the program always sets both; DOCKER_TLS_VERIFY
 * is read by neither the provider nor the client it builds (MakeClient does
 * not use client.FromEnv).
 */
export const DOCKER_ENVIRONMENT = ["DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_CA_MATERIAL", "DOCKER_CERT_MATERIAL", "DOCKER_KEY_MATERIAL"] as const;

export function checkDockerEnvironment(env: Readonly<Record<string, string | undefined>>): void {
  const set = DOCKER_ENVIRONMENT.filter((k) => env[k] !== undefined && env[k] !== "");
  if (set.length) {
    throw new Error(
      `${set.join(", ")} ${set.length > 1 ? "are" : "is"} set in this environment: the Docker provider would take ${set.length > 1 ? "them" : "it"} over this stack's own ssh:// connection to its host. Unset ${set.length > 1 ? "them" : "it"} (\`unset ${set.join(" ")}\`) and run again.`,
    );
  }
}

/** SYNAXIC_SSH_DIR: unset, or an absolute path without spaces or quotes (it becomes an ssh option). */
export function parseSshIdentityDir(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\/[A-Za-z0-9._/-]*$/.test(value)) {
    throw new Error(`SYNAXIC_SSH_DIR: got ${JSON.stringify(value)}; expected an absolute path of letters, digits, '.', '_', '-' and '/'`);
  }
  return value.replace(/\/+$/, "") || "/";
}

function isSecretKey(key: string): boolean {
  // The SDK keeps the list of keys stored encrypted in its config store; this
  // accessor is exported by the runtime but absent from its type declarations.
  const rt = pulumi.runtime as unknown as { isConfigSecret?: (k: string) => boolean };
  return rt.isConfigSecret ? rt.isConfigSecret(key) : false;
}
