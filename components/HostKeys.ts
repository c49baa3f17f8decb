import * as pulumi from "@pulumi/pulumi";
import { requestCert, type CertKind, type PkiHost } from "./Pki";

/** A host's own private keys (secret) and its certificate requests (public), by kind. */
export interface HostKeysArgs {
  host: PkiHost;
  /** This host runs Prometheus (the monitoring replica): a key and request for its client certificate too. */
  prometheusClient: boolean;
}

/**
 * A replica's keys, made in its own stack, and the certificate requests it
 * exports (certRequests) for the main stack to sign: its private keys never
 * leave its stack. The subjects and SANs are those the main stack gives the
 * certificates it makes itself (certSubject). Resource names are those of
 * the main stack's Pki for the host, in another stack.
 */
export class HostKeys extends pulumi.ComponentResource {
  public readonly keyPems: { postgres: pulumi.Output<string>; redis: pulumi.Output<string>; exporters: pulumi.Output<string>; prometheusClient?: pulumi.Output<string> };
  public readonly requests: { postgres: pulumi.Output<string>; redis: pulumi.Output<string>; exporters: pulumi.Output<string>; prometheusClient?: pulumi.Output<string> };

  constructor(name: string, args: HostKeysArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:HostKeys", name, {}, opts);
    const parent = { parent: this };
    const one = (kind: CertKind) => requestCert(`${name}-${args.host.hostName}-${kind}`, args.host, kind, parent);
    const pg = one("postgres");
    const rd = one("redis");
    const ex = one("exporters");
    const pc = args.prometheusClient ? one("prometheus") : undefined;
    this.keyPems = { postgres: pg.keyPem, redis: rd.keyPem, exporters: ex.keyPem, ...(pc ? { prometheusClient: pc.keyPem } : {}) };
    this.requests = { postgres: pg.certRequestPem, redis: rd.certRequestPem, exporters: ex.certRequestPem, ...(pc ? { prometheusClient: pc.certRequestPem } : {}) };
    this.registerOutputs({ requests: this.requests });
  }
}
