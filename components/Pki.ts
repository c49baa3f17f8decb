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

/**
 * The fleet's private CA and a server certificate per host and service
 * (PostgreSQL, Redis, the exporters) whose SANs cover every name and
 * address clients use, a client certificate per Prometheus server, plus
 * the PKCS12 truststore the app reads.
 */
export class Pki extends pulumi.ComponentResource {
  public readonly caCertPem: pulumi.Output<string>;
  public readonly caNotAfter: pulumi.Output<string>;
  public readonly certs: Record<string, HostCerts>;
  /** Client certificates of the Prometheus servers, by host name (client use only). */
  public readonly prometheusClients: Record<string, ServerCert>;
  /** The truststore, base64-encoded PKCS12 (secret). */
  public readonly truststoreBase64: pulumi.Output<string>;

  constructor(name: string, args: PkiArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:Pki", name, {}, opts);
    const parent = { parent: this };
    const caKey = new tls.PrivateKey(`${name}-ca-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, parent);
    const ca = new tls.SelfSignedCert(
      `${name}-ca`,
      {
        privateKeyPem: caKey.privateKeyPem,
        isCaCertificate: true,
        validityPeriodHours: 24 * 365 * 10,
        allowedUses: ["cert_signing", "crl_signing"],
        subject: { commonName: "Synaxic fleet CA", organization: "Synaxic" },
      },
      parent,
    );
    this.caCertPem = ca.certPem;
    this.caNotAfter = ca.validityEndTime;

    const validity = args.serverValidityHours ?? 24 * 365;
    /** A certificate the fleet's CA signs for a request, for the given uses only. */
    const sign = (base: string, certRequestPem: pulumi.Input<string>, allowedUses: string[]) =>
      new tls.LocallySignedCert(
        `${base}-cert`,
        { certRequestPem, caPrivateKeyPem: caKey.privateKeyPem, caCertPem: ca.certPem, validityPeriodHours: validity, earlyRenewalHours: 24 * 30, allowedUses },
        parent,
      );
    this.certs = {};
    for (const host of args.hosts) {
      const issue = (service: "postgres" | "redis" | "exporters"): ServerCert => {
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
        const cert = sign(base, csr.certRequestPem, service === "exporters" ? ["digital_signature", "server_auth"] : ["digital_signature", "key_encipherment", "server_auth", "client_auth"]);
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
      const cert = sign(base, csr.certRequestPem, ["digital_signature", "client_auth"]);
      this.prometheusClients[hostName] = { certPem: cert.certPem, keyPem: pulumi.secret(key.privateKeyPem), notAfter: cert.validityEndTime };
    }

    this.truststoreBase64 = pulumi.secret(
      pulumi.all([ca.certPem, args.truststorePassword]).apply(([caPem, pw]) => buildTruststore([caPem], pw).toString("base64")),
    );

    this.registerOutputs({ caCertPem: this.caCertPem, truststoreBase64: this.truststoreBase64 });
  }
}
