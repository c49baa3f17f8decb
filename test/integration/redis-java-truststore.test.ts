/**
 * The truststore from buildTruststore, used the way the app uses it: a Java
 * TLS client (compiled here from java/RedisTlsPing.java) that trusts only the
 * truststore, verifies the host name like HTTPS, AUTHs with the app's ACL
 * user and PINGs a real Redis started from the rendered config.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { TestNet, type ExecResult, type Host } from "../rig/net";
import { makeCa } from "../rig/pki";
import { execIn, randomRedisUsers, RedisServer } from "../rig/redis";
import { renderRedisAcl, renderRedisConf } from "../../templates/redis";
import { buildTruststore } from "../../lib/truststore";

const MASTER_NAME = "redis-main.synaxic.test";

describe("Java client with the generated PKCS12 truststore", () => {
  let net: TestNet;
  let main: Host;
  let client: Host;
  let classDir: string;
  let goodStore: string;
  let otherStore: string;
  const storePassword = `ts-${randomBytes(9).toString("base64url")}`;
  const users = randomRedisUsers();

  beforeAll(async () => {
    net = await TestNet.create(["main", "client"]);
    main = net.host("main");
    client = net.host("client");
    const ca = makeCa("redis-ca", net.mkdir("pki"));
    const otherCa = makeCa("other-ca", net.mkdir("other-pki"));
    const cert = ca.issue("redis-main", [main.ip, MASTER_NAME]);
    const master = RedisServer.create(net, main, "master", { caPem: ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem });
    await master.start(renderRedisConf({ role: "master", bind: [main.ip, "127.0.0.1"], ...master.paths }), renderRedisAcl(users));

    const stores = net.mkdir("stores");
    goodStore = join(stores, "truststore.p12");
    otherStore = join(stores, "other.p12");
    net.writeFile(goodStore, buildTruststore([ca.certPem], storePassword), 0o600);
    net.writeFile(otherStore, buildTruststore([otherCa.certPem], storePassword), 0o600);

    classDir = net.mkdir("java");
    execFileSync("javac", ["-d", classDir, join(__dirname, "java", "RedisTlsPing.java")], { stdio: ["ignore", "ignore", "pipe"], timeout: 60_000 });
  });

  afterAll(async () => {
    await net?.destroy();
  });

  /** Runs the Java client on `from`; passwords go through the environment. */
  async function javaPing(from: Host, store: string, serverName: string, connectAddress?: string, password = storePassword): Promise<ExecResult> {
    const argv = ["java", "-cp", classDir, "RedisTlsPing", store, serverName, "6380", users.app.name];
    if (connectAddress) argv.push(connectAddress);
    return execIn(from, argv, { env: { TRUSTSTORE_PASSWORD: password, REDIS_PASSWORD: users.app.pass }, timeoutMs: 30_000 });
  }

  it("connects, authenticates and PINGs by the address in the certificate", async () => {
    const r = await javaPing(client, goodStore, main.ip);
    expect(r.stdout.trim()).toMatch(/^PONG TLSv1\.[23] trusted=1$/);
    expect(r.code).toBe(0);
  });

  it("connects by the host name in the certificate", async () => {
    const r = await javaPing(client, goodStore, MASTER_NAME, main.ip);
    expect(r.stdout.trim()).toMatch(/^PONG TLSv1\.[23] trusted=1$/);
    expect(r.code).toBe(0);
  });

  it("fails hostname verification for an address the certificate does not name", async () => {
    // Same server, same CA, reached over loopback: 127.0.0.1 is not in the SANs.
    const r = await javaPing(main, goodStore, "127.0.0.1");
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/No subject alternative names matching IP address 127\.0\.0\.1 found/);
  });

  it("fails hostname verification for a name the certificate does not name", async () => {
    const r = await javaPing(client, goodStore, "other.synaxic.test", main.ip);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/No subject alternative DNS name matching other\.synaxic\.test found/);
  });

  it("fails with a truststore that holds only another CA", async () => {
    const r = await javaPing(client, otherStore, main.ip);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/trusted=1 .*PKIX path building failed/);
  });

  it("cannot open the truststore with a wrong password", async () => {
    const r = await javaPing(client, goodStore, main.ip, undefined, `${storePassword}-wrong`);
    expect(r.code).toBe(4);
    expect(r.stdout).toMatch(/TRUSTSTORE_FAILED .*password was incorrect/);
  });
});
