/**
 * The exporters' protection through the whole program under mocks: their
 * TLS files, web configuration and flags on every host; Prometheus' client
 * certificate, password file and scrape configuration on both monitoring
 * hosts; the certificates and the password's hash reaching replica stacks
 * only through the main stack's secret outputs; nothing secret in a plain
 * input or output.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { EXPORTER_SCRAPE_USER, EXPORTER_WEB_FILES } from "../../templates/exporter-web";
import { JOBS } from "../../templates/prometheus";
import { SECRET_SIG, findLeaks, type Recorded, type RunResult } from "./harness";
import { runLocal, runReplica } from "./fixtures";

const P = "synaxic:";
const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";
const CERT = "tls:index/locallySignedCert:LocallySignedCert";
const PASSWORD = "random:index/randomPassword:RandomPassword";

type Run = RunResult<Record<string, unknown>>;
type Upload = { file: string; content: string; permissions: string; owner: string };

let paired: Awaited<ReturnType<typeof runReplica>>;
let other: Awaited<ReturnType<typeof runReplica>>;
let local: Awaited<ReturnType<typeof runLocal>>;

beforeAll(async () => {
  // The legacy flow (main made every host's key), where main's outputs show every replica's certificates; certRequests.test.ts covers replicas' own keys.
  paired = await runReplica("replica-1", "10.10.0.3", { flow: "legacy", mainExtra: { [`${P}monitoringReplica`]: "replica-1" } });
  other = await runReplica("replica-2", "10.10.0.4", { flow: "legacy", mainExtra: { [`${P}monitoringReplica`]: "replica-1" } });
  local = await runLocal(1);
}, 180_000);

const uploads = (run: { one: (t: string, n: string) => Recorded }, name: string) => (run.one(CONTAINER, name).inputs.uploads ?? []) as Upload[];
const upload = (run: { one: (t: string, n: string) => Recorded }, name: string, file: string) => {
  const u = uploads(run, name).find((x) => x.file === file);
  if (!u) throw new Error(`${name} has no upload ${file}`);
  return u;
};
const isSecretInput = (r: Recorded, key: string) => typeof r.raw[key] === "object" && r.raw[key] !== null && (r.raw[key] as Record<string, unknown>)[SECRET_SIG] !== undefined;
/** The value of the bcrypt hash the mocks handed out for the scrape password. */
const scrapeHashOf = (run: Run) => (run.values.replicaCredentials as { exporterScrapeHash: string }).exporterScrapeHash;

function checkExporters(run: Run, prefix: string, ip: string, hash: string): void {
  const node = run.one(CONTAINER, `${prefix}exporters-node`).inputs;
  expect(node.command).toEqual(expect.arrayContaining([`--web.listen-address=${ip}:9100`, `--web.config.file=${EXPORTER_WEB_FILES.webConfig}`]));
  const pg = run.one(CONTAINER, `${prefix}exporters-postgres`).inputs;
  expect(pg.command).toEqual([`--web.config.file=${EXPORTER_WEB_FILES.webConfig}`]);
  const redis = run.one(CONTAINER, `${prefix}exporters-redis`).inputs;
  expect(redis.envs).toEqual(
    expect.arrayContaining([
      `REDIS_EXPORTER_TLS_SERVER_CERT_FILE=${EXPORTER_WEB_FILES.cert}`,
      `REDIS_EXPORTER_TLS_SERVER_KEY_FILE=${EXPORTER_WEB_FILES.key}`,
      `REDIS_EXPORTER_TLS_SERVER_CA_CERT_FILE=${EXPORTER_WEB_FILES.clientCa}`,
    ]),
  );
  // node_exporter, which binds the host's root, reads its files from a host directory it mounts (no uploads: see Exporters.ts).
  const nodeFile = (file: string) => {
    const base = file.split("/").pop()!;
    const step = run.resources.find((r) => r.type.startsWith("command:") && r.name === `${prefix}exporters-node-web-${base.replace(/\./g, "-")}`)!.inputs;
    const create = String(step.create);
    return { content: String(step.stdin), permissions: /\s(0[0-7]{3})\s/.exec(create)![1], owner: /\s(\d+):\d+$/.exec(create)![1], create };
  };
  expect(uploads(run, `${prefix}exporters-node`)).toEqual([]);
  expect((node.mounts as { source: string; target: string; readOnly: boolean }[]).find((m) => m.target === "/etc/synaxic/web")).toMatchObject({ readOnly: true });
  for (const [name, uid] of [["node", "65534"], ["postgres", "65534"], ["redis", "59000"]] as const) {
    const c = `${prefix}exporters-${name}`;
    const file = (f: string) => (name === "node" ? nodeFile(f) : upload(run, c, f));
    const key = file(EXPORTER_WEB_FILES.key);
    expect(key, c).toMatchObject({ permissions: "0400", owner: uid });
    expect(key.content).toMatch(/BEGIN PRIVATE KEY/);
    expect(file(EXPORTER_WEB_FILES.cert).content).toMatch(/^-----BEGIN CERTIFICATE|MockCert|cert/i);
    expect(file(EXPORTER_WEB_FILES.clientCa).permissions).toBe("0444");
  }
  for (const name of ["node", "postgres"]) {
    const web = name === "node" ? nodeFile(EXPORTER_WEB_FILES.webConfig) : upload(run, `${prefix}exporters-${name}`, EXPORTER_WEB_FILES.webConfig);
    expect(web).toMatchObject({ permissions: "0400", owner: "65534" });
    expect(parse(web.content)).toEqual({
      tls_server_config: {
        cert_file: EXPORTER_WEB_FILES.cert,
        key_file: EXPORTER_WEB_FILES.key,
        client_auth_type: "RequireAndVerifyClientCert",
        client_ca_file: EXPORTER_WEB_FILES.clientCa,
        min_version: "TLS12",
      },
      basic_auth_users: { [EXPORTER_SCRAPE_USER]: hash },
    });
  }
  // redis_exporter gets no web configuration (1.45 reads none).
  expect(uploads(run, `${prefix}exporters-redis`).map((u) => u.file)).not.toContain(EXPORTER_WEB_FILES.webConfig);
}

function checkPrometheus(run: Run, prefix: string): void {
  const conf = parse(String(run.one(COMMAND, `${prefix}monitoring-config`).inputs.stdin)) as { scrape_configs: Record<string, unknown>[] };
  const jobs = Object.fromEntries(conf.scrape_configs.map((j) => [j.job_name, j]));
  const tls = { ca_file: "/etc/prometheus/scrape/ca.crt", cert_file: "/etc/prometheus/scrape/client.crt", key_file: "/etc/prometheus/scrape/client.key", min_version: "TLS12" };
  const basic = { username: EXPORTER_SCRAPE_USER, password_file: "/etc/prometheus/scrape/exporter-password" };
  expect(jobs[JOBS.node]).toMatchObject({ scheme: "https", tls_config: tls, basic_auth: basic });
  expect(jobs[JOBS.postgres]).toMatchObject({ scheme: "https", tls_config: tls, basic_auth: basic });
  expect(jobs[JOBS.redis]).toMatchObject({ scheme: "https", tls_config: tls });
  expect(jobs[JOBS.redis]).not.toHaveProperty("basic_auth");
  // The files Prometheus reads them from: key and password 0400, its user's, secret.
  const file = (label: string) => run.one(COMMAND, `${prefix}monitoring-scrape-${label}`);
  for (const label of ["key", "password"]) {
    const f = file(label);
    expect(String(f.inputs.create)).toMatch(/ 0400 65534:65534$/);
    expect(isSecretInput(f, "stdin"), label).toBe(true);
  }
  expect(String(file("key").inputs.stdin)).toMatch(/BEGIN PRIVATE KEY/);
  expect(String(file("password").inputs.stdin)).toMatch(/^MockPw/);
  expect(String(file("ca").inputs.create)).toMatch(/ 0444 65534:65534$/);
  // A new credential reloads nothing by itself, but Prometheus starts only once the files are there.
  const prom = run.one(CONTAINER, `${prefix}monitoring-prometheus`);
  expect(prom.inputs.command).not.toEqual(expect.arrayContaining([expect.stringMatching(/enable-lifecycle|enable-admin-api/)]));
}

describe("the main host (mocks)", () => {
  it("its exporters serve TLS with its own certificate and check the scrape password's hash", () => {
    checkExporters(paired.main, "", "10.10.0.2", scrapeHashOf(paired.main));
  });

  it("its Prometheus scrapes them with its client certificate and the password from a file", () => {
    checkPrometheus(paired.main, "");
  });

  it("the PKI issues an exporters certificate per host and a client certificate per Prometheus, each for its use only", () => {
    const certs = paired.main.of(CERT).map((c) => c.name).sort();
    expect(certs).toEqual(expect.arrayContaining(["pki-main-exporters-cert", "pki-replica-1-exporters-cert", "pki-replica-2-exporters-cert", "pki-main-prometheus-cert", "pki-replica-1-prometheus-cert"]));
    expect(certs).not.toContain("pki-replica-2-prometheus-cert");
    expect(paired.main.one(CERT, "pki-main-exporters-cert").inputs.allowedUses).toEqual(["digital_signature", "server_auth"]);
    expect(paired.main.one(CERT, "pki-main-prometheus-cert").inputs.allowedUses).toEqual(["digital_signature", "client_auth"]);
    const csr = paired.main.one("tls:index/certRequest:CertRequest", "pki-replica-1-exporters-csr").inputs;
    expect(csr.ipAddresses).toEqual(["10.10.0.3", "127.0.0.1"]);
  });

  it("the scrape password is a generated secret; its bcrypt hash (RandomPassword.bcryptHash) and the password reach replicas only in secret outputs", () => {
    expect(paired.main.of(PASSWORD).map((p) => p.name)).toContain("fleet-exporterScrape");
    const hash = scrapeHashOf(paired.main);
    expect(hash).toMatch(/^\$2a\$10\$/);
    expect(paired.main.secretValues).toContain(hash);
    expect(paired.main.secretOutputs.has("replicaCredentials")).toBe(true);
    expect(paired.main.secretOutputs.has("replicaTls")).toBe(true);
    const creds = paired.main.values.replicaCredentials as Record<string, string>;
    expect(creds.exporterScrapePassword).toMatch(/^MockPw/);
    const tls = paired.main.values.replicaTls as Record<string, Record<string, unknown>>;
    expect(Object.keys(tls["replica-1"]!).sort()).toEqual(["exporters", "postgres", "prometheusClient", "redis"]);
    expect(Object.keys(tls["replica-2"]!).sort()).toEqual(["exporters", "postgres", "redis"]);
    // No secret in any plain input of any resource, nor in a plain output.
    expect(findLeaks(paired.main.resources.map((r) => r.raw), paired.main.secretValues)).toEqual([]);
    const plainOutputs = Object.fromEntries(Object.entries(paired.main.values).filter(([k]) => !paired.main.secretOutputs.has(k)));
    expect(findLeaks(plainOutputs, paired.main.secretValues)).toEqual([]);
  });

  it("without a monitoring replica the password stays on the main stack; the hash still goes to every replica", () => {
    const creds = other.main.values.replicaCredentials as Record<string, string>;
    expect(creds.exporterScrapeHash).toBeDefined();
    // (other.main has the pair too; a fleet without one is the local run below.)
    const localCreds = local.values.replicaCredentials as Record<string, string>;
    expect(localCreds.exporterScrapeHash).toMatch(/^\$2a\$10\$/);
    expect(localCreds).not.toHaveProperty("exporterScrapePassword");
  });

  it("the certificates' expiry textfile lists the exporters' and Prometheus' certificates", () => {
    const textfile = String(paired.main.one(COMMAND, "exporters-cert-expiry").inputs.stdin);
    expect(textfile).toContain('name="main-exporters"');
    expect(textfile).toContain('name="main-prometheus-client"');
  });
});

describe("replica stacks (mocks, main's outputs through the StackReference)", () => {
  it("a replica's exporters get their certificate and the hash from main's secret outputs", () => {
    checkExporters(paired.replica, "", "10.10.0.3", scrapeHashOf(paired.main));
    checkExporters(other.replica, "", "10.10.0.4", scrapeHashOf(other.main));
    const textfile = String(other.replica.one(COMMAND, "exporters-cert-expiry").inputs.stdin);
    expect(textfile).toContain('name="replica-2-exporters"');
    expect(textfile).not.toContain("prometheus-client");
  });

  it("the monitoring replica's Prometheus scrapes with its own client certificate and main's password", () => {
    checkPrometheus(paired.replica, "");
    const key = String(paired.replica.one(COMMAND, "monitoring-scrape-key").inputs.stdin);
    const tls = paired.main.values.replicaTls as Record<string, { prometheusClient: { keyPem: string } }>;
    expect(key).toBe(tls["replica-1"]!.prometheusClient.keyPem);
    expect(String(paired.replica.one(COMMAND, "monitoring-scrape-password").inputs.stdin)).toBe((paired.main.values.replicaCredentials as Record<string, string>).exporterScrapePassword);
    expect(other.replica.of(COMMAND).map((c) => c.name)).not.toContain("monitoring-scrape-key");
  });

  it("no main-stack secret appears in a plain input of a replica", () => {
    for (const r of [paired, other]) expect(findLeaks(r.replica.resources.map((x) => x.raw), r.main.secretValues)).toEqual([]);
  });

  it("a main stack without the exporters' certificates or the hash stops the replica, naming the output", async () => {
    // On the legacy flow (main made the replica's key and certificates); certRequests.test.ts covers main's signed ones.
    const noCert = runReplica("replica-2", "10.10.0.4", { flow: "legacy", mutateMainOutputs: (o) => delete (o.replicaTls as Record<string, Record<string, unknown>>)["replica-2"]!.exporters });
    await expect(noCert).rejects.toThrow(/output "replicaTls\.replica-2\.exporters" is malformed/);
    const noHash = runReplica("replica-2", "10.10.0.4", { flow: "legacy", mutateMainOutputs: (o) => delete (o.replicaCredentials as Record<string, unknown>).exporterScrapeHash });
    await expect(noHash).rejects.toThrow(/output "replicaCredentials\.exporterScrapeHash" is malformed/);
    const noClient = runReplica("replica-1", "10.10.0.3", {
      flow: "legacy",
      mainExtra: { [`${P}monitoringReplica`]: "replica-1" },
      mutateMainOutputs: (o) => delete (o.replicaTls as Record<string, Record<string, unknown>>)["replica-1"]!.prometheusClient,
    });
    await expect(noClient).rejects.toThrow(/output "replicaTls\.replica-1\.prometheusClient" is missing/);
  });
});

describe("the local stack (mocks)", () => {
  it("each local replica's exporters get their own certificate, as a replica stack would", () => {
    checkExporters(local as unknown as Run, "replica-1-", "10.10.0.3", scrapeHashOf(local as unknown as Run));
  });
});
