/**
 * Certificates from each replica's own keys: a replica stack makes its keys
 * and exports certificate requests, main signs them (components/Pki.ts,
 * stacks/main.ts readCertFlow), and no replica key passes through main's
 * outputs. Also the order for a new replica and the transition of a fleet
 * deployed when main made every key (docs/operations.md).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { X509Certificate } from "node:crypto";
import { legacyPrevious, runMain, runReplicaAgainst } from "./fixtures";
import type { RunResult } from "./harness";
import { certMatchesKey } from "../../lib/fleetOutputs";

type Run = RunResult<Record<string, unknown>>;
const KEY = "tls:index/privateKey:PrivateKey";
const SIGNED = "tls:index/locallySignedCert:LocallySignedCert";
const CSR = "tls:index/certRequest:CertRequest";
const CONTAINER = "docker:index/container:Container";

/** Paths of strings holding a private key, secret markers included (a walk of resolved values). */
function privateKeysIn(v: unknown, path = ""): string[] {
  if (typeof v === "string") return v.includes("PRIVATE KEY") ? [path] : [];
  if (Array.isArray(v)) return v.flatMap((x, i) => privateKeysIn(x, `${path}[${i}]`));
  if (v && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => privateKeysIn(x, path ? `${path}.${k}` : k));
  return [];
}

/** Every string of a run's resource inputs. */
function inputStrings(run: Run): string[] {
  const out: string[] = [];
  const walk = (v: unknown) => {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") Object.values(v).forEach(walk);
  };
  for (const r of run.resources) walk(r.inputs);
  return out;
}

const MONITORING = { "synaxic:monitoringReplica": "replica-2" };

describe("a new fleet: each replica's first up, main's, the replica's again", () => {
  let main0: Run, main1: Run;
  const pending: Record<string, Run> = {};
  const final: Record<string, Run> = {};
  beforeAll(async () => {
    main0 = await runMain(2, MONITORING);
    pending["replica-1"] = await runReplicaAgainst(main0, "replica-1", "10.10.0.3");
    pending["replica-2"] = await runReplicaAgainst(main0, "replica-2", "10.10.0.4");
    main1 = await runMain(2, MONITORING, { previous: main0.values, replicaOutputs: { "replica-1": pending["replica-1"].values, "replica-2": pending["replica-2"].values } });
    final["replica-1"] = await runReplicaAgainst(main1, "replica-1", "10.10.0.3", { previous: pending["replica-1"].values });
    final["replica-2"] = await runReplicaAgainst(main1, "replica-2", "10.10.0.4", { previous: pending["replica-2"].values });
  }, 240_000);

  it("main's first up makes no key for a replica that has published nothing", () => {
    expect(main0.of(KEY).filter((k) => /replica/.test(k.name))).toEqual([]);
    expect(main0.values.replicaTls).toEqual({});
    expect(main0.values.replicaCerts).toEqual({});
  });

  it("a replica's first up succeeds, deploys its host and no service, and exports its certificate requests (public)", () => {
    const r = pending["replica-1"]!;
    expect(r.values.tlsSource).toBe("pending");
    expect(r.of(CONTAINER)).toEqual([]);
    const reqs = r.values.certRequests as Record<string, string>;
    expect(Object.keys(reqs).sort()).toEqual(["exporters", "postgres", "redis"]);
    expect(r.secretOutputs.has("certRequests")).toBe(false);
    // The monitoring replica asks for its Prometheus client certificate too.
    expect(Object.keys(pending["replica-2"]!.values.certRequests as object).sort()).toEqual(["exporters", "postgres", "prometheusClient", "redis"]);
  });

  it("replica and main compute the same subjects and SANs (the certificate request main made before)", () => {
    const mine = pending["replica-1"]!.one(CSR, "pki-replica-1-postgres-csr").inputs;
    expect(mine.subject).toEqual({ commonName: "postgres.replica-1", organization: "Synaxic" });
    expect(mine.ipAddresses).toEqual(["10.10.0.3", "127.0.0.1"]);
    expect(mine.dnsNames).toEqual(["replica-1", "synaxic-replica-1-postgres", "localhost"]);
    // main's own request, from the same helper: same shape.
    const mains = main0.one(CSR, "pki-main-postgres-csr").inputs;
    expect(mains.dnsNames).toEqual(["main", "synaxic-main-postgres", "localhost"]);
  });

  it("main signs the request read from each replica's stack with the right CA and the same uses as before", () => {
    const reqs = pending["replica-2"]!.values.certRequests as Record<string, string>;
    const ca = (name: string) => main1.one("tls:index/selfSignedCert:SelfSignedCert", name).inputs.privateKeyPem;
    const cert = (kind: string) => main1.one(SIGNED, `pki-replica-2-${kind}-cert`).inputs;
    expect(cert("postgres").certRequestPem).toBe(reqs.postgres);
    expect(cert("postgres").caPrivateKeyPem).toBe(ca("pki-ca"));
    expect(cert("redis").certRequestPem).toBe(reqs.redis);
    expect(cert("redis").caPrivateKeyPem).toBe(ca("pki-redis-ca"));
    expect(cert("exporters").caPrivateKeyPem).toBe(ca("pki-metrics-ca"));
    expect(cert("exporters").allowedUses).toEqual(["digital_signature", "server_auth"]);
    expect(cert("prometheus").certRequestPem).toBe(reqs.prometheusClient);
    expect(cert("prometheus").allowedUses).toEqual(["digital_signature", "client_auth"]);
    expect(cert("redis").allowedUses).toEqual(["digital_signature", "key_encipherment", "server_auth", "client_auth"]);
    // No key or request of a replica's is made on main.
    expect(main1.of(KEY).filter((k) => /replica/.test(k.name))).toEqual([]);
    expect(main1.of(CSR).filter((k) => /replica/.test(k.name))).toEqual([]);
  });

  it("main's outputs hold no replica private key (replicaTls is empty; replicaCerts is public)", () => {
    expect(privateKeysIn(main1.values.replicaTls, "replicaTls")).toEqual([]);
    expect(privateKeysIn(main1.values.replicaCerts, "replicaCerts")).toEqual([]);
    expect(main1.values.legacyTlsReplicas).toEqual([]);
    // The main host's own keys (its Prometheus client's among them) are not outputs either.
    expect(privateKeysIn(main1.values).filter((p) => !p.startsWith("balancerHttps"))).toEqual([]);
  });

  it("the replica's second up runs every service on its own keys with main's certificates, which carry those keys", () => {
    const r = final["replica-2"]!;
    expect(r.values.tlsSource).toBe("own-keys");
    expect(r.of(CONTAINER).length).toBeGreaterThanOrEqual(5);
    const ownKeys = r.of(KEY).filter((k) => k.name.startsWith("pki-")).map((k) => r.resources.find((x) => x.type === CSR && x.name === k.name.replace(/-key$/, "-csr"))!.inputs.privateKeyPem as string);
    expect(ownKeys).toHaveLength(4);
    const certs = main1.values.replicaCerts as Record<string, Record<string, { certPem: string }>>;
    const [pg] = ownKeys;
    expect(certMatchesKey(certs["replica-2"]!.postgres!.certPem, pg!)).toBe(true);
    // The monitoring replica's Prometheus runs (its client certificate signed too).
    expect(r.of(CONTAINER).some((c) => /prometheus/.test(c.name))).toBe(true);
  });

  it("a replica stack's inputs hold its own keys only, never another replica's", () => {
    const own = (run: Run) => run.of(CSR).map((c) => c.inputs.privateKeyPem as string);
    const r1 = inputStrings(final["replica-1"]!).join("\n");
    for (const k of own(final["replica-2"]!)) expect(r1.includes(k)).toBe(false);
    for (const k of own(final["replica-1"]!)) expect(r1.includes(k)).toBe(true);
    expect(privateKeysIn(final["replica-1"]!.values)).toEqual([]);
  });

  it("a running replica refuses main's certificate for another key before declaring anything, naming what to run", async () => {
    await expect(
      runReplicaAgainst(main1, "replica-1", "10.10.0.3", {
        previous: final["replica-1"]!.values,
        mutateMainOutputs: (o) => {
          const c = o.replicaCerts as Record<string, Record<string, unknown>>;
          c["replica-1"]!.redis = c["replica-2"]!.redis;
        },
      }),
    ).rejects.toThrow(/output "replicaCerts\.replica-1" holds certificates for other keys than those of the requests this stack published.*nothing was changed.*run `pulumi up` there, then on this stack again/s);
  });

  it("a replica stack made again (destroyed, new keys) does not take main's old certificates: it publishes new requests and waits, and main's next up signs them", async () => {
    // No previous outputs: `pulumi destroy` leaves the stack with none, and its keys are made again: main's certificates do not count until it has published requests.
    const again = await runReplicaAgainst(main1, "replica-1", "10.10.0.3");
    expect(again.values.tlsSource).toBe("pending");
    expect(again.of(CONTAINER)).toEqual([]);
    const main2 = await runMain(2, MONITORING, { previous: main1.values, replicaOutputs: { "replica-1": again.values, "replica-2": pending["replica-2"]!.values } });
    const next = await runReplicaAgainst(main2, "replica-1", "10.10.0.3", { previous: again.values });
    expect(next.values.tlsSource).toBe("own-keys");
    expect(next.of(CONTAINER).length).toBe(final["replica-1"]!.of(CONTAINER).length);
  }, 120_000);

  it("main refuses a replica's request for names other than its host's (the provider would sign them as asked)", async () => {
    const forged = structuredClone(pending["replica-1"]!.values) as { certRequests: Record<string, string> };
    // replica-1's stack asks for a PostgreSQL certificate with main's request, which names main's address.
    forged.certRequests.postgres = main1.one(SIGNED, "pki-main-postgres-cert").inputs.certRequestPem as string;
    await expect(runMain(2, MONITORING, { previous: main1.values, replicaOutputs: { "replica-1": forged, "replica-2": pending["replica-2"]!.values } })).rejects.toThrow(
      /replica stack organization\/synaxic\/replica-1: output "certRequests\.postgres" asks for common name "postgres\.main" \(expected "postgres\.replica-1"\).*addresses \[10\.10\.0\.2, 127\.0\.0\.1\] \(expected \[10\.10\.0\.3, 127\.0\.0\.1\]\)/s,
    );
  }, 120_000);

  it("the mocks' certificates are real X.509 certificates for the request's key", () => {
    const certs = main1.values.replicaCerts as Record<string, Record<string, { certPem: string }>>;
    expect(() => new X509Certificate(certs["replica-1"]!.redis!.certPem)).not.toThrow();
  });
});

describe("an existing fleet (main made every key): the transition, each step working", () => {
  let main0: Run, r1Legacy: Run, main1: Run, r1Own: Run, r2Legacy: Run, main2: Run;
  beforeAll(async () => {
    // Main's first up with this version: its last up (the previous version) listed both replicas.
    main0 = await runMain(2, {}, { previous: legacyPrevious(2) });
    r1Legacy = await runReplicaAgainst(main0, "replica-1", "10.10.0.3");
    main1 = await runMain(2, {}, { previous: main0.values, replicaOutputs: { "replica-1": r1Legacy.values } });
    r1Own = await runReplicaAgainst(main1, "replica-1", "10.10.0.3", { previous: r1Legacy.values });
    // replica-2 has not run yet: main's next up still makes its key.
    r2Legacy = await runReplicaAgainst(main1, "replica-2", "10.10.0.4");
    main2 = await runMain(2, {}, { previous: main1.values, replicaOutputs: { "replica-1": r1Own.values, "replica-2": r2Legacy.values } });
  }, 240_000);

  it("main's first up keeps making every replica's key, under the same resource names (no change for them)", () => {
    expect(Object.keys(main0.values.replicaTls as object).sort()).toEqual(["replica-1", "replica-2"]);
    expect(main0.values.legacyTlsReplicas).toEqual(["replica-1", "replica-2"]);
    expect(main0.of(KEY).some((k) => k.name === "pki-replica-1-postgres-key")).toBe(true);
  });

  it("a replica on the legacy entry runs every service and publishes its requests", () => {
    expect(r1Legacy.values.tlsSource).toBe("legacy");
    expect(r1Legacy.of(CONTAINER).length).toBeGreaterThanOrEqual(5);
    expect(Object.keys(r1Legacy.values.certRequests as object).sort()).toEqual(["exporters", "postgres", "redis"]);
  });

  it("main then signs replica-1's requests and drops its legacy entry, keeping replica-2's", () => {
    expect(Object.keys(main1.values.replicaTls as object)).toEqual(["replica-2"]);
    expect(Object.keys(main1.values.replicaCerts as object)).toEqual(["replica-1"]);
    expect(main1.of(KEY).some((k) => k.name === "pki-replica-1-postgres-key")).toBe(false);
    expect(main1.of(KEY).some((k) => k.name === "pki-replica-2-postgres-key")).toBe(true);
    expect(main1.one(SIGNED, "pki-replica-1-postgres-cert").inputs.certRequestPem).toBe((r1Legacy.values.certRequests as Record<string, string>).postgres);
  });

  it("replica-1 switches to its own keys; replica-2 still works on its legacy entry meanwhile", () => {
    expect(r1Own.values.tlsSource).toBe("own-keys");
    expect(r1Own.of(CONTAINER).length).toBe(r1Legacy.of(CONTAINER).length);
    expect(r2Legacy.values.tlsSource).toBe("legacy");
    expect(r2Legacy.of(CONTAINER).length).toBeGreaterThanOrEqual(5);
  });

  it("once every replica published its requests, main's outputs hold no replica key", () => {
    expect(main2.values.replicaTls).toEqual({});
    expect(main2.values.legacyTlsReplicas).toEqual([]);
    expect(privateKeysIn(main2.values.replicaTls)).toEqual([]);
    expect(Object.keys(main2.values.replicaCerts as object).sort()).toEqual(["replica-1", "replica-2"]);
  });
});

describe("replicaStacks", () => {
  it("names where main reads a replica's requests", async () => {
    const main0 = await runMain(1);
    const pending = await runReplicaAgainst(main0, "replica-1", "10.10.0.3");
    // The default name (organization/synaxic/replica-1) has exported nothing; the named stack has the requests.
    const named = { "synaxic:replicaStacks": JSON.stringify({ "replica-1": "organization/synaxic/db-1" }) };
    const signed = await runMain(1, named, { previous: main0.values, stacks: { "organization/synaxic/db-1": pending.values } });
    expect(Object.keys(signed.values.replicaCerts as object)).toEqual(["replica-1"]);
    expect(signed.of("pulumi:pulumi:StackReference").map((r) => r.inputs.name)).toContain("organization/synaxic/db-1");
    expect(signed.one(SIGNED, "pki-replica-1-postgres-cert").inputs.certRequestPem).toBe((pending.values.certRequests as Record<string, string>).postgres);
    // Without replicaStacks main reads the default name, which has published nothing: no certificate for replica-1.
    const unnamed = await runMain(1, {}, { previous: main0.values, stacks: { "organization/synaxic/db-1": pending.values } });
    expect(unnamed.values.replicaCerts).toEqual({});
  }, 120_000);

  it("is refused on a replica stack, which main's reads and not the other way", async () => {
    const main0 = await runMain(1);
    await expect(runReplicaAgainst(main0, "replica-1", "10.10.0.3", { extra: { "synaxic:replicaStacks": JSON.stringify({ "replica-1": "acme/synaxic/x" }) } })).rejects.toThrow(/synaxic:replicaStacks: is for the main stack/);
  }, 60_000);

  it("refuses a name that is not one of the replicas", async () => {
    await expect(runMain(1, { "synaxic:replicaStacks": JSON.stringify({ "replica-9": "acme/synaxic/x" }) })).rejects.toThrow(/synaxic:replicaStacks\.replica-9: names no replica/);
  });
});
