/**
 * One CA per service (components/Pki.ts) through the whole program under
 * mocks: three self-signed CAs, the PostgreSQL one under the single fleet
 * CA's old resource names; each certificate signed by its service's CA (the
 * recorded inputs of every LocallySignedCert); every trust file of each
 * service, on the main host, a replica host and the monitoring replica,
 * holding that service's CA and nothing else; the app's truststore the
 * Redis CA alone; main's outputs carrying the three CAs, a replica refusing
 * a main stack from before them; every CA's expiry on the certificate
 * textfile.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { PKI_CAS, PKI_SERVICES, type PkiService } from "../../components/Pki";
import { REDIS_CONTAINER_PATHS } from "../../templates/redis";
import { REDIS_SNAPSHOT_PATHS } from "../../templates/redis-backup-scheduler";
import { EXPORTER_WEB_FILES } from "../../templates/exporter-web";
import { APP_PG_CA, APP_TRUSTSTORE } from "../../templates/app";
import { PG_PATHS } from "../../lib/postgresContainer";
import { buildTruststore } from "../../lib/truststore";
import { CERT_EXPIRY_METRIC } from "../../templates/prometheus";
import { mockCaNotAfter, testCaPem, type Recorded, type RunResult } from "./harness";
import { runReplica } from "./fixtures";
import { INITIAL_CONTROL, nextControl } from "../../lib/control";

const P = "synaxic:";
const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";
const SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert";
const SIGNED = "tls:index/locallySignedCert:LocallySignedCert";
const KEY = "tls:index/privateKey:PrivateKey";

type Run = RunResult<Record<string, unknown>>;
type Upload = { file: string; content?: string; contentBase64?: string };

const BACKUP = {
  [`${P}backupRepository`]: JSON.stringify({ endpoint: "fsn1.your-objectstorage.com", bucket: "acme-synaxic", region: "fsn1" }),
  [`${P}backupAccessKeyId`]: "AKIAEXAMPLEKEY01",
  [`${P}backupSecretAccessKey`]: "s3-secret-access-key-example-0123",
  [`${P}monitoringReplica`]: "replica-1",
};

let main: Run;
/** The monitoring replica (its Prometheus scrapes with the metrics CA) and a plain one, promoted (its snapshot job runs). */
let monitoring: Run;
let promoted: Run;
/** Each CA's certificate as the mocks issued it (each self-signed certificate has its own). */
const caPem = {} as Record<PkiService, string>;

beforeAll(async () => {
  const a = await runReplica("replica-1", "10.10.0.3", { mainExtra: BACKUP });
  main = a.main as Run;
  monitoring = a.replica as Run;
  // replica-2 the primary by its control stack (main fenced): its Redis is the master, with the snapshot job beside it.
  const control = nextControl(INITIAL_CONTROL, { primary: "replica-2", primaryGeneration: 1, fence: { main: "stop" } }).next;
  promoted = (await runReplica("replica-2", "10.10.0.4", { mainExtra: BACKUP, control })).replica as Run;
  for (const s of PKI_SERVICES) caPem[s] = testCaPem(`pki-${PKI_CAS[s].cert}`);
}, 240_000);

const serviceOf = (pem: string): PkiService | "none" => PKI_SERVICES.find((s) => caPem[s] === pem) ?? "none";
const uploadIn = (run: Run, container: string, file: string): string => {
  const u = ((run.one(CONTAINER, container).inputs.uploads ?? []) as Upload[]).find((x) => x.file === file);
  if (!u || u.content === undefined) throw new Error(`${container} has no upload ${file}`);
  return u.content;
};
const hostFileContent = (run: Run, step: string): string => String(run.one(COMMAND, step).inputs.stdin);

describe("three CAs", () => {
  it("main declares a self-signed CA, with a key of its own, per service; the PostgreSQL one under the old fleet CA's names and subject", () => {
    const cas = main.of(SELF_SIGNED);
    expect(cas.map((c) => c.name).sort()).toEqual(["pki-ca", "pki-metrics-ca", "pki-redis-ca"]);
    const subjects = Object.fromEntries(cas.map((c) => [c.name, (c.inputs.subject as { commonName: string }).commonName]));
    // An unchanged name and subject: a fleet deployed with one CA keeps it (and the PostgreSQL certificates it signed).
    expect(subjects["pki-ca"]).toBe("Synaxic fleet CA");
    expect(subjects["pki-redis-ca"]).toBe("Synaxic Redis CA");
    expect(subjects["pki-metrics-ca"]).toBe("Synaxic metrics CA");
    for (const c of cas) {
      expect(c.inputs.isCaCertificate, c.name).toBe(true);
      expect(c.inputs.allowedUses, c.name).toEqual(["cert_signing", "crl_signing"]);
    }
    const keys = cas.map((c) => c.inputs.privateKeyPem as string);
    expect(new Set(keys).size).toBe(3);
    for (const s of PKI_SERVICES) expect(main.of(KEY).some((k) => k.name === `pki-${PKI_CAS[s].key}`), s).toBe(true);
    // The mocks gave each CA its own certificate: the assertions below can tell them apart.
    expect(new Set(Object.values(caPem)).size).toBe(3);
  });

  it("replica stacks declare no CA and no certificate (main issues them all)", () => {
    for (const r of [monitoring, promoted]) {
      expect(r.of(SELF_SIGNED)).toHaveLength(0);
      expect(r.of(SIGNED)).toHaveLength(0);
    }
  });
});

describe("each certificate signed by its service's CA", () => {
  /** The CA each LocallySignedCert was signed with: its caCertPem and its caPrivateKeyPem, which must be the same CA's. */
  const signerOf = (cert: Recorded): PkiService | "mismatch" => {
    const byCert = serviceOf(cert.inputs.caCertPem as string);
    const ca = main.of(SELF_SIGNED).find((c) => c.inputs.privateKeyPem === cert.inputs.caPrivateKeyPem);
    const byKey = ca ? PKI_SERVICES.find((s) => `pki-${PKI_CAS[s].cert}` === ca.name) : undefined;
    return byCert !== "none" && byCert === byKey ? byCert : "mismatch";
  };

  it("PostgreSQL's by the PostgreSQL CA, Redis' by the Redis CA, the exporters' and Prometheus' by the metrics CA, on every host", () => {
    const expected: Record<string, PkiService> = {};
    // replica-1's signed from its stack's requests; replica-2, new, has published none yet and gets none.
    for (const h of ["main", "replica-1"]) {
      expected[`pki-${h}-postgres-cert`] = "postgres";
      expected[`pki-${h}-redis-cert`] = "redis";
      expected[`pki-${h}-exporters-cert`] = "metrics";
    }
    expected["pki-main-prometheus-cert"] = "metrics";
    expected["pki-replica-1-prometheus-cert"] = "metrics";
    const got = Object.fromEntries(main.of(SIGNED).map((c) => [c.name, signerOf(c)]));
    expect(got).toEqual(expected);
  });

  it("keeps each certificate's uses: server and client for PostgreSQL and Redis, server only for the exporters, client only for Prometheus", () => {
    expect(main.one(SIGNED, "pki-main-redis-cert").inputs.allowedUses).toEqual(["digital_signature", "key_encipherment", "server_auth", "client_auth"]);
    expect(main.one(SIGNED, "pki-main-exporters-cert").inputs.allowedUses).toEqual(["digital_signature", "server_auth"]);
    expect(main.one(SIGNED, "pki-main-prometheus-cert").inputs.allowedUses).toEqual(["digital_signature", "client_auth"]);
  });
});

describe("each service's trust files hold its own CA only", () => {
  /** Every CA file of a host, by where it is, with the service whose CA it must hold. */
  const trustFiles = (run: Run, prefix: string, opts: { snapshots: boolean; prometheus: boolean; pgbackrest: boolean }): [string, PkiService, string][] => [
    ["PostgreSQL ssl_ca_file (and the standby's sslrootcert)", "postgres", uploadIn(run, `${prefix}postgres-container`, PG_PATHS.caFile)],
    ...(opts.pgbackrest ? ([["pgBackRest's TLS CA", "postgres", hostFileContent(run, `${prefix}postgres-pgbackrest-tls-ca`)]] as [string, PkiService, string][]) : []),
    ["the app's sslrootcert", "postgres", uploadIn(run, `${prefix}app-container`, APP_PG_CA)],
    ["postgres_exporter's sslrootcert", "postgres", uploadIn(run, `${prefix}exporters-postgres`, "/etc/synaxic/ca.crt")],
    ["Redis' tls-ca-cert-file", "redis", uploadIn(run, `${prefix}redis-container`, REDIS_CONTAINER_PATHS.caFile)],
    ["redis_exporter's CA for Redis", "redis", uploadIn(run, `${prefix}exporters-redis`, "/etc/synaxic/ca.crt")],
    ...(opts.snapshots ? ([["the Redis snapshot job's CA", "redis", uploadIn(run, `${prefix}redis-snapshots-container`, REDIS_SNAPSHOT_PATHS.caFile)]] as [string, PkiService, string][]) : []),
    ["postgres_exporter's client CA", "metrics", uploadIn(run, `${prefix}exporters-postgres`, EXPORTER_WEB_FILES.clientCa)],
    ["redis_exporter's client CA", "metrics", uploadIn(run, `${prefix}exporters-redis`, EXPORTER_WEB_FILES.clientCa)],
    ["node_exporter's client CA", "metrics", hostFileContent(run, `${prefix}exporters-node-web-client-ca-crt`)],
    ...(opts.prometheus ? ([["Prometheus' scrape CA", "metrics", hostFileContent(run, `${prefix}monitoring-scrape-ca`)]] as [string, PkiService, string][]) : []),
  ];

  it.each([
    ["the main host", () => main, { snapshots: true, prometheus: true, pgbackrest: true }],
    ["the monitoring replica", () => monitoring, { snapshots: false, prometheus: true, pgbackrest: true }],
    ["a promoted replica (its snapshot job)", () => promoted, { snapshots: true, prometheus: false, pgbackrest: true }],
  ] as const)("on %s", (_label, run, opts) => {
    const files = trustFiles(run(), "", opts);
    expect(files.length).toBeGreaterThanOrEqual(8);
    for (const [what, service, content] of files) expect(serviceOf(content), what).toBe(service);
  });

  it("the app's truststore is the Redis CA alone, on main and on replicas", () => {
    const password = (main.values.replicaCredentials as { truststorePassword: string }).truststorePassword;
    const onlyRedis = buildTruststore([caPem.redis], password).toString("base64");
    for (const run of [main, monitoring, promoted]) {
      const u = ((run.one(CONTAINER, "app-container").inputs.uploads ?? []) as Upload[]).find((x) => x.file === APP_TRUSTSTORE);
      expect(u?.contentBase64).toBe(onlyRedis);
    }
    // Not the PostgreSQL CA's, which the single fleet CA's truststore held.
    expect(buildTruststore([caPem.postgres], password).toString("base64")).not.toBe(onlyRedis);
  });
});

describe("main's outputs and the replicas that read them", () => {
  it("fleet carries the three CAs and no longer the single caCertPem", () => {
    const fleet = main.values.fleet as Record<string, unknown>;
    expect(fleet.cas).toEqual(caPem);
    expect(fleet).not.toHaveProperty("caCertPem");
  });

  it("a replica refuses a main stack from before per-service CAs, naming the output and why", async () => {
    await expect(
      runReplica("replica-1", "10.10.0.3", {
        mutateMainOutputs: (o) => {
          const f = o.fleet as Record<string, unknown>;
          f.caCertPem = (f.cas as Record<string, string>).postgres;
          delete f.cas;
        },
      }),
    ).rejects.toThrow(/output "fleet\.cas" is missing: the main stack was last deployed by a version with one CA for every service \(fleet\.caCertPem\)/);
  }, 120_000);

  it("a replica refuses a fleet output whose CAs are incomplete", async () => {
    await expect(
      runReplica("replica-1", "10.10.0.3", {
        mutateMainOutputs: (o) => {
          delete ((o.fleet as Record<string, unknown>).cas as Record<string, string>).metrics;
        },
      }),
    ).rejects.toThrow(/output "fleet\.cas\.metrics" is malformed/);
  }, 120_000);
});

describe("certificate expiry", () => {
  it("main's textfile has every CA's notAfter (and its own certificates'), each CA's own", () => {
    const text = hostFileContent(main, "exporters-cert-expiry");
    const line = (name: string) => new RegExp(`^${CERT_EXPIRY_METRIC}\\{name="${name}"\\} (\\d+)$`, "m").exec(text)?.[1];
    for (const s of PKI_SERVICES) {
      const at = line(`${s}-ca`);
      expect(at, s).toBeDefined();
      expect(Number(at)).toBe(Date.parse(mockCaNotAfter(`pki-${PKI_CAS[s].cert}`)) / 1000);
    }
    expect(new Set(PKI_SERVICES.map((s) => line(`${s}-ca`))).size).toBe(3);
    for (const c of ["main-postgres", "main-redis", "main-exporters", "main-prometheus-client"]) expect(line(c), c).toBeDefined();
    expect(text).not.toMatch(/fleet-ca/);
  });
});
