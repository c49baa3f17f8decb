/**
 * The TLS a PostgreSQL server of the fleet offers, on a real PostgreSQL 15
 * started from the rendered postgresql.conf: TLS 1.2 only with forward
 * secrecy and AEAD suites (the CBC and SHA-1 suites OpenSSL still offers by
 * default are refused), TLS 1.3, and never TLS 1.1. And one CA per service
 * (components/Pki.ts) on PostgreSQL's side: a client that verifies with the
 * CA of another service refuses the server's certificate, though it names
 * the server's address.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestNet, type Host } from "../rig/net";
import { makeCa, type TestCa } from "../rig/pki";
import { PgCluster, PgNode, startPrimaryWithRoles } from "../rig/postgres";

let net: TestNet;
let cluster: PgCluster;
let main: PgNode;
let client: Host;
/** Another service's CA (the fleet's Redis CA), made as the PostgreSQL CA is. */
let otherCa: TestCa;

beforeAll(async () => {
  net = await TestNet.create(["main", "app"]);
  otherCa = makeCa("redis-test-ca", net.mkdir("other-ca"));
  cluster = new PgCluster({ net, ca: makeCa("pg-test-ca", net.mkdir("ca")), dbHosts: [net.host("main")], appHosts: [net.host("app")], exporterHosts: [] });
  main = cluster.node(net.host("main"));
  client = net.host("app");
  await startPrimaryWithRoles(main);
}, 120_000);

afterAll(async () => {
  await net?.destroy();
});

/** A TLS handshake with the server through PostgreSQL's STARTTLS, as `openssl s_client` makes it. */
async function handshake(args: string[]): Promise<{ ok: boolean; out: string }> {
  const r = await client.exec(["openssl", "s_client", "-connect", `${main.host.ip}:${main.port}`, "-starttls", "postgres", ...args], { input: "", allowFail: true, timeoutMs: 15_000 });
  const out = `${r.stdout}${r.stderr}`;
  const cipher = /Cipher is (\S+)/.exec(out)?.[1];
  return { ok: r.code === 0 && !!cipher && cipher !== "(NONE)", out };
}

describe("PostgreSQL's TLS", () => {
  it("accepts TLS 1.2 with an ECDHE AEAD suite, and TLS 1.3", async () => {
    const gcm = await handshake(["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"]);
    expect(gcm.ok, gcm.out).toBe(true);
    const v13 = await handshake(["-tls1_3"]);
    expect(v13.ok, v13.out).toBe(true);
  });

  it("refuses TLS 1.2 CBC and SHA-1 suites, and TLS 1.1", async () => {
    for (const cipher of ["ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"]) {
      const r = await handshake(["-tls1_2", "-cipher", cipher]);
      expect(r.ok, `${cipher}\n${r.out}`).toBe(false);
    }
    const old = await handshake(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    expect(old.ok, old.out).toBe(false);
  });
});

describe("one CA per service, on PostgreSQL's side (verify-full, as the standbys, the app and the exporter connect)", () => {
  it("connects verifying with the PostgreSQL CA: the control for the refusal", async () => {
    const r = await cluster.remotePsql(client, cluster.conninfo(main), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", { allowFail: true });
    expect(r.stdout.trim(), r.stderr).toBe("t");
  });

  it("refuses the server when verifying with another service's CA, the server's address in its certificate notwithstanding", async () => {
    const conninfo = cluster.conninfo(main).replace(cluster.ca.certFile, otherCa.certFile);
    expect(conninfo).toContain(otherCa.certFile);
    const r = await cluster.remotePsql(client, conninfo, "SELECT 1", { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/certificate verify failed/);
  });
});
