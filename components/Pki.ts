import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
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

/** Which CA signs each kind of certificate. */
const SIGNER: Record<keyof HostCerts | "prometheus", PkiService> = { postgres: "postgres", redis: "redis", exporters: "metrics", prometheus: "metrics" };

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
  public readonly certs: Record<string, HostCerts>;
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
          subject: { commonName: n.commonName, organization: "Synaxic" },
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
    for (const host of args.hosts) {
      const issue = (service: keyof HostCerts): ServerCert => {
        const base = `${name}-${host.hostName}-${service}`;
        const key = new tls.PrivateKey(`${base}-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, parent);
        const names = pulumi.output(host.privateIp).apply((ip) => {
          const all = [ip, host.hostName, ...(service === "exporters" ? [] : host.extraNames[service])];
          return {
            ips: [...new Set(all.filter((n) => IPV4.test(n)).concat("127.0.0.1"))],
            dns: [...new Set(all.filter((n) => !IPV4.test(n)).concat("localhost"))],
          };
        });
        const csr = new tls.CertRequest(
          `${base}-csr`,
          {
            privateKeyPem: key.privateKeyPem,
            subject: { commonName: `${service}.${host.hostName}`, organization: "Synaxic" },
            ipAddresses: names.ips,
            dnsNames: names.dns,
          },
          parent,
        );
        // The exporters' certificate serves them and nothing else.
        const uses = service === "exporters" ? ["digital_signature", "server_auth"] : ["digital_signature", "key_encipherment", "server_auth", "client_auth"];
        const cert = sign(base, SIGNER[service], csr.certRequestPem, uses);
        return { certPem: cert.certPem, keyPem: pulumi.secret(key.privateKeyPem), notAfter: cert.validityEndTime };
      };
      this.certs[host.hostName] = { postgres: issue("postgres"), redis: issue("redis"), exporters: issue("exporters") };
    }

    // Prometheus shows this certificate to the exporters; it serves nothing.
    this.prometheusClients = {};
    for (const hostName of args.prometheusHosts ?? []) {
      const base = `${name}-${hostName}-prometheus`;
      const key = new tls.PrivateKey(`${base}-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, parent);
      const csr = new tls.CertRequest(`${base}-csr`, { privateKeyPem: key.privateKeyPem, subject: { commonName: `prometheus.${hostName}`, organization: "Synaxic" } }, parent);
      const cert = sign(base, SIGNER.prometheus, csr.certRequestPem, ["digital_signature", "client_auth"]);
      this.prometheusClients[hostName] = { certPem: cert.certPem, keyPem: pulumi.secret(key.privateKeyPem), notAfter: cert.validityEndTime };
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
