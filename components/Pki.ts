import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { readCertRequest } from "../lib/csr";
import { buildTruststore } from "../lib/truststore";

/** A host the fleet's certificates are issued for. */
export interface PkiHost {
  hostName: string;
  privateIp: pulumi.Input<string>;
  /** Further names and addresses clients use (container names, Docker aliases, container addresses). */
  extraNames: { postgres: string[]; redis: string[] };
}

export interface PkiArgs {
  hosts: PkiHost[];
  /** Password of the PKCS12 truststore the app reads (secret). */
  truststorePassword: pulumi.Input<string>;
  /** Server certificates are valid this long and re-issued by `pulumi up` in their last 30 days. */
  serverValidityHours?: number;
  /** The hosts that run Prometheus: each gets a client certificate that the exporters accept (templates/exporter-web.ts). */
  prometheusHosts?: string[];
  /**
   * Certificate requests a host's own stack made with its own keys, by host
   * name: those hosts' certificates are signed from them and no key of
   * theirs is made here.
   */
  requests?: Record<string, HostCertRequests>;
}

/** A host's certificate requests (PEM, public), as its stack exports them (certRequests). */
export interface HostCertRequests {
  postgres: pulumi.Input<string>;
  redis: pulumi.Input<string>;
  exporters: pulumi.Input<string>;
  /** The monitoring replica's: its Prometheus' client certificate. */
  prometheusClient?: pulumi.Input<string>;
}

/** A certificate signed for a request made elsewhere (public). */
export interface SignedCert {
  certPem: pulumi.Output<string>;
  notAfter: pulumi.Output<string>;
}

export interface SignedHostCerts {
  postgres: SignedCert;
  redis: SignedCert;
  exporters: SignedCert;
  prometheusClient?: SignedCert;
}

/** The certificates of one host: PostgreSQL's and Redis' (server and client use), its exporters' (server use only). */
export interface HostCerts {
  postgres: ServerCert;
  redis: ServerCert;
  exporters: ServerCert;
}

export interface ServerCert {
  certPem: pulumi.Output<string>;
  keyPem: pulumi.Output<string>;
  notAfter: pulumi.Output<string>;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** The organization every subject of the fleet names, CAs included. */
const ORGANIZATION = "Synaxic";

/** The services that each have a CA of their own. */
export type PkiService = "postgres" | "redis" | "metrics";
export const PKI_SERVICES: readonly PkiService[] = ["postgres", "redis", "metrics"];

/** A service's CA certificate (public) and its end of validity. */
export interface ServiceCa {
  certPem: pulumi.Output<string>;
  notAfter: pulumi.Output<string>;
}

/**
 * Resource names and subjects of the three CAs. The PostgreSQL CA keeps the
 * names and subject of the single fleet CA that signed everything before:
 * a fleet deployed with one CA keeps its key and certificate, so its
 * PostgreSQL certificates are not re-issued (a changed subject would
 * replace the self-signed certificate, and with it every certificate it
 * signed).
 */
export const PKI_CAS: Record<PkiService, { key: string; cert: string; commonName: string }> = {
  postgres: { key: "ca-key", cert: "ca", commonName: "Synaxic fleet CA" },
  redis: { key: "redis-ca-key", cert: "redis-ca", commonName: "Synaxic Redis CA" },
  metrics: { key: "metrics-ca-key", cert: "metrics-ca", commonName: "Synaxic metrics CA" },
};

/** The kinds of certificate a host has: its services' and, on a Prometheus host, Prometheus' client certificate. */
export type CertKind = keyof HostCerts | "prometheus";

/** Which CA signs each kind of certificate. */
const SIGNER: Record<CertKind, PkiService> = { postgres: "postgres", redis: "redis", exporters: "metrics", prometheus: "metrics" };

/** What each kind of certificate may be used for. The exporters' serves them and nothing else; Prometheus' is a client's only. */
const CERT_USES: Record<CertKind, string[]> = {
  postgres: ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
  redis: ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
  exporters: ["digital_signature", "server_auth"],
  prometheus: ["digital_signature", "client_auth"],
};

/**
 * The subject and SANs of a host's certificate of one kind: the same on the
 * main stack (the legacy flow, the local stack) and on a replica's stack,
 * which makes its own request from the same inputs (lib/fleet.ts pkiHost).
 */
export function certSubject(host: { hostName: string; extraNames?: PkiHost["extraNames"] }, privateIp: string | undefined, kind: CertKind): { commonName: string; ips: string[]; dns: string[] } {
  if (kind === "prometheus") return { commonName: `prometheus.${host.hostName}`, ips: [], dns: [] };
  const all = [privateIp!, host.hostName, ...(kind === "exporters" ? [] : (host.extraNames?.[kind] ?? []))];
  return {
    commonName: `${kind}.${host.hostName}`,
    ips: [...new Set(all.filter((n) => IPV4.test(n)).concat("127.0.0.1"))],
    dns: [...new Set(all.filter((n) => !IPV4.test(n)).concat("localhost"))],
  };
}

/**
 * What a certificate request asks for that its host's certificate of this
 * kind must not have (another common name, an organization other than
 * Synaxic, a name or address missing or extra), or undefined when it asks
 * for exactly certSubject's. The request's signature is checked too
 * (lib/csr.ts readCertRequest throws on a bad one).
 */
export function certRequestMismatch(certRequestPem: string, host: { hostName: string; extraNames?: PkiHost["extraNames"] }, privateIp: string, kind: CertKind): string | undefined {
  const want = certSubject(host, privateIp, kind);
  const got = readCertRequest(certRequestPem);
  const same = (a: string[], b: string[]) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
  const problems: string[] = [];
  if (got.commonName !== want.commonName) problems.push(`common name ${JSON.stringify(got.commonName)} (expected ${JSON.stringify(want.commonName)})`);
  if (got.organization !== ORGANIZATION) problems.push(`organization ${JSON.stringify(got.organization ?? "")} (expected ${JSON.stringify(ORGANIZATION)})`);
  if (!same(got.ips, want.ips)) problems.push(`addresses [${got.ips.join(", ")}] (expected [${want.ips.join(", ")}])`);
  if (!same(got.dns, want.dns)) problems.push(`names [${got.dns.join(", ")}] (expected [${want.dns.join(", ")}])`);
  return problems.length ? problems.join("; ") : undefined;
}

/**
 * A private key and a certificate request for it (resources `<base>-key`
 * and `<base>-csr`). Prometheus' client request names no address.
 */
export function requestCert(
  base: string,
  host: { hostName: string; privateIp?: pulumi.Input<string>; extraNames?: PkiHost["extraNames"] },
  kind: CertKind,
  opts: pulumi.CustomResourceOptions,
): { keyPem: pulumi.Output<string>; certRequestPem: pulumi.Output<string> } {
  const key = new tls.PrivateKey(`${base}-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, opts);
  const names = pulumi.output(host.privateIp ?? "").apply((ip) => certSubject(host, ip, kind));
  const csr = new tls.CertRequest(
    `${base}-csr`,
    {
      privateKeyPem: key.privateKeyPem,
      subject: { commonName: names.commonName, organization: ORGANIZATION },
      ...(kind === "prometheus" ? {} : { ipAddresses: names.ips, dnsNames: names.dns }),
    },
    opts,
  );
  return { keyPem: pulumi.secret(key.privateKeyPem), certRequestPem: csr.certRequestPem };
}

/**
 * A private CA per service (PostgreSQL, Redis, metrics), a server
 * certificate per host and service whose SANs cover every name and address
 * clients use, a client certificate per Prometheus server, plus the PKCS12
 * truststore the app reads.
 *
 * One CA per service, because neither side of a Redis replication link
 * checks a host name: a replica accepts any master whose certificate chains
 * to its tls-ca-cert-file (Redis' connTLSConnect sets only SNI, and
 * createSSLContext verifies the chain alone, redis/redis src/tls.c), and the
 * master accepts any client certificate offered that does. With one CA, a
 * PostgreSQL or exporter certificate would have opened Redis too. Now each
 * service trusts only its own CA: PostgreSQL (ssl_ca_file, the standbys',
 * the app's and postgres_exporter's sslrootcert, pgBackRest's TLS), Redis
 * (tls-ca-cert-file, redis_exporter, the snapshot job, the app's
 * truststore), metrics (the exporters' client CA, Prometheus' scrape CA).
 */
export class Pki extends pulumi.ComponentResource {
  /** Each service's CA certificate: the only CA that service's servers and clients trust. */
  public readonly cas: Record<PkiService, ServiceCa>;
  /** Certificates and keys made here: the main host's, and a host's whose stack published no requests (the legacy flow, the local stack). */
  public readonly certs: Record<string, HostCerts>;
  /** Certificates signed for the requests a host's own stack published (args.requests): no key here. */
  public readonly signed: Record<string, SignedHostCerts>;
  /** Client certificates of the Prometheus servers, by host name (client use only; the metrics CA). */
  public readonly prometheusClients: Record<string, ServerCert>;
  /** The truststore, base64-encoded PKCS12 (secret): the Redis CA alone (the app verifies Redis with it). */
  public readonly truststoreBase64: pulumi.Output<string>;

  constructor(name: string, args: PkiArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:Pki", name, {}, opts);
    const parent = { parent: this };
    const signers = {} as Record<PkiService, { keyPem: pulumi.Output<string>; certPem: pulumi.Output<string> }>;
    this.cas = {} as Record<PkiService, ServiceCa>;
    for (const service of PKI_SERVICES) {
      const n = PKI_CAS[service];
      const caKey = new tls.PrivateKey(`${name}-${n.key}`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, parent);
      const ca = new tls.SelfSignedCert(
        `${name}-${n.cert}`,
        {
          privateKeyPem: caKey.privateKeyPem,
          isCaCertificate: true,
          validityPeriodHours: 24 * 365 * 10,
          allowedUses: ["cert_signing", "crl_signing"],
          subject: { commonName: n.commonName, organization: ORGANIZATION },
        },
        parent,
      );
      signers[service] = { keyPem: caKey.privateKeyPem, certPem: ca.certPem };
      this.cas[service] = { certPem: ca.certPem, notAfter: ca.validityEndTime };
    }

    const validity = args.serverValidityHours ?? 24 * 365;
    /** A certificate the given service's CA signs for a request, for the given uses only. */
    const sign = (base: string, service: PkiService, certRequestPem: pulumi.Input<string>, allowedUses: string[]) =>
      new tls.LocallySignedCert(
        `${base}-cert`,
        {
          certRequestPem,
          caPrivateKeyPem: signers[service].keyPem,
          caCertPem: signers[service].certPem,
          validityPeriodHours: validity,
          earlyRenewalHours: 24 * 30,
          allowedUses,
        },
        parent,
      );
    this.certs = {};
    this.signed = {};
    for (const host of args.hosts) {
      const requests = args.requests?.[host.hostName];
      if (requests) {
        // The host's own stack made its keys and published these requests: sign them, hold no key.
        const one = (kind: keyof HostCerts): SignedCert => {
          const cert = sign(`${name}-${host.hostName}-${kind}`, SIGNER[kind], requests[kind], CERT_USES[kind]);
          return { certPem: cert.certPem, notAfter: cert.validityEndTime };
        };
        this.signed[host.hostName] = { postgres: one("postgres"), redis: one("redis"), exporters: one("exporters") };
        continue;
      }
      const issue = (kind: keyof HostCerts): ServerCert => {
        const base = `${name}-${host.hostName}-${kind}`;
        const req = requestCert(base, host, kind, parent);
        const cert = sign(base, SIGNER[kind], req.certRequestPem, CERT_USES[kind]);
        return { certPem: cert.certPem, keyPem: req.keyPem, notAfter: cert.validityEndTime };
      };
      this.certs[host.hostName] = { postgres: issue("postgres"), redis: issue("redis"), exporters: issue("exporters") };
    }

    // Prometheus shows this certificate to the exporters; it serves nothing.
    this.prometheusClients = {};
    for (const hostName of args.prometheusHosts ?? []) {
      const base = `${name}-${hostName}-prometheus`;
      const requests = args.requests?.[hostName];
      if (requests) {
        // A host that publishes its requests but none for Prometheus yet (it became the monitoring replica since): its next `up` adds one.
        if (requests.prometheusClient === undefined) continue;
        const cert = sign(base, SIGNER.prometheus, requests.prometheusClient, CERT_USES.prometheus);
        this.signed[hostName]!.prometheusClient = { certPem: cert.certPem, notAfter: cert.validityEndTime };
        continue;
      }
      const req = requestCert(base, { hostName }, "prometheus", parent);
      const cert = sign(base, SIGNER.prometheus, req.certRequestPem, CERT_USES.prometheus);
      this.prometheusClients[hostName] = { certPem: cert.certPem, keyPem: req.keyPem, notAfter: cert.validityEndTime };
    }

    // The app verifies Redis alone with it (PostgreSQL with its own sslrootcert file).
    this.truststoreBase64 = pulumi.secret(
      pulumi.all([this.cas.redis.certPem, args.truststorePassword]).apply(([caPem, pw]) => buildTruststore([caPem], pw).toString("base64")),
    );

    this.registerOutputs({
      postgresCaCertPem: this.cas.postgres.certPem,
      redisCaCertPem: this.cas.redis.certPem,
      metricsCaCertPem: this.cas.metrics.certPem,
      truststoreBase64: this.truststoreBase64,
    });
  }
}
