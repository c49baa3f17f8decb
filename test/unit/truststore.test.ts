import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import forge from "node-forge";
import { buildTruststore, TRUSTSTORE_ITERATIONS } from "../../lib/truststore";
import { makeCa, type TestCa } from "../rig/pki";

const PASSWORD = "truststore pw: $1'\"x";

describe("buildTruststore", () => {
  let dir: string;
  let ca: TestCa;
  let otherCa: TestCa;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "synaxic-truststore-"));
    ca = makeCa("fleet-ca", mkdtempSync(join(dir, "ca-")));
    otherCa = makeCa("other-ca", mkdtempSync(join(dir, "other-")));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function write(name: string, store: Buffer): string {
    const path = join(dir, name);
    writeFileSync(path, store);
    return path;
  }

  function keytoolList(path: string, password: string): { code: number; out: string } {
    const r = spawnSync("keytool", ["-list", "-v", "-storetype", "PKCS12", "-keystore", path, "-storepass:env", "STOREPASS"], {
      env: { ...process.env, STOREPASS: password },
      encoding: "utf8",
      timeout: 30_000,
    });
    return { code: r.status ?? 1, out: `${r.stdout}${r.stderr}` };
  }

  it("gives the same bytes for the same certificates and password", () => {
    const a = buildTruststore([ca.certPem], PASSWORD);
    const b = buildTruststore([ca.certPem], PASSWORD);
    expect(a.length).toBeGreaterThan(500);
    expect(a.equals(b)).toBe(true);
  });

  it("gives different bytes for another password or another certificate", () => {
    const a = buildTruststore([ca.certPem], PASSWORD);
    expect(a.equals(buildTruststore([ca.certPem], `${PASSWORD}x`))).toBe(false);
    expect(a.equals(buildTruststore([otherCa.certPem], PASSWORD))).toBe(false);
  });

  it("is a store keytool lists as one trustedCertEntry for the CA", () => {
    const path = write("one.p12", buildTruststore([ca.certPem], PASSWORD));
    const { code, out } = keytoolList(path, PASSWORD);
    expect(code).toBe(0);
    expect(out).toMatch(/Your keystore contains 1 entry/);
    expect(out).toMatch(/Alias name: synaxic-ca-1\nCreation date: .*\nEntry type: trustedCertEntry/);
    expect(out).toContain("Owner: CN=fleet-ca");
    const fingerprint = execFileSync("openssl", ["x509", "-noout", "-fingerprint", "-sha256", "-in", ca.certFile], { encoding: "utf8" }).split("=")[1]!.trim();
    expect(out).toContain(`SHA256: ${fingerprint}`);
  });

  it("cannot be opened with a wrong password", () => {
    const path = write("wrong.p12", buildTruststore([ca.certPem], PASSWORD));
    const { code, out } = keytoolList(path, "not-the-password");
    expect(code).not.toBe(0);
    expect(out).toMatch(/keystore password was incorrect/);
  });

  it("holds every CA given, including several in one PEM string, once each", () => {
    const path = write("two.p12", buildTruststore([`${ca.certPem}\n${otherCa.certPem}`, ca.certPem], PASSWORD));
    const { code, out } = keytoolList(path, PASSWORD);
    expect(code).toBe(0);
    expect(out).toMatch(/Your keystore contains 2 entries/);
    expect(out.match(/Entry type: trustedCertEntry/g)).toHaveLength(2);
    expect(out).toContain("Owner: CN=fleet-ca");
    expect(out).toContain("Owner: CN=other-ca");
  });

  it("uses a SHA-256 MAC and PBES2/AES-256 with keytool's iteration count (as OpenSSL reads it)", () => {
    const path = write("info.p12", buildTruststore([ca.certPem], PASSWORD));
    const out = execFileSync("openssl", ["pkcs12", "-info", "-nokeys", "-in", path, "-passin", "env:STOREPASS"], {
      env: { ...process.env, STOREPASS: PASSWORD },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    const info = spawnSync("openssl", ["pkcs12", "-info", "-nokeys", "-noout", "-in", path, "-passin", "env:STOREPASS"], {
      env: { ...process.env, STOREPASS: PASSWORD },
      encoding: "utf8",
    }).stderr;
    expect(info).toContain(`MAC: sha256, Iteration ${TRUSTSTORE_ITERATIONS}`);
    expect(info).toContain(`PBES2, PBKDF2, AES-256-CBC, Iteration ${TRUSTSTORE_ITERATIONS}, PRF hmacWithSHA256`);
    expect(out).toContain("2.16.840.1.113894.746875.1.1");
    expect(out).toContain("friendlyName: synaxic-ca-1");
  });

  it("marks each certBag with Oracle's trusted-key-usage attribute (anyExtendedKeyUsage)", () => {
    const store = buildTruststore([ca.certPem, otherCa.certPem], PASSWORD);
    // forge drops bag attributes whose OID it has no name for; give this one a name.
    const oids = forge.pki.oids as Record<string, string>;
    oids["2.16.840.1.113894.746875.1.1"] = "oracleTrustedKeyUsage";
    oids.oracleTrustedKeyUsage = "2.16.840.1.113894.746875.1.1";
    const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(store.toString("binary")), true, PASSWORD);
    const bags = p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? [];
    expect(bags).toHaveLength(2);
    for (const bag of bags) {
      const trusted = bag.attributes.oracleTrustedKeyUsage as string[] | undefined;
      expect(trusted).toBeDefined();
      expect(trusted!.map((der) => forge.asn1.derToOid(der))).toEqual(["2.5.29.37.0"]);
    }
  });

  it.each([
    ["no certificate", [] as string[], /at least one CA certificate is required/],
    ["text without PEM", ["not a certificate"], /caCertPems\[0\] holds no PEM block/],
    ["a private key", ["-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"], /holds a PRIVATE KEY block, expected CERTIFICATE/],
    ["a corrupt certificate", ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"], /caCertPems\[0\] is not a valid X.509 certificate/],
  ])("rejects %s", (_what, pems, message) => {
    expect(() => buildTruststore(pems, PASSWORD)).toThrow(message);
  });

  it("rejects a server certificate and an empty password", () => {
    const leaf = ca.issue("leaf", ["10.0.0.1"]);
    expect(() => buildTruststore([leaf.certPem], PASSWORD)).toThrow(/caCertPems\[0\] \(CN=10\.0\.0\.1\) is not a CA certificate/);
    expect(() => buildTruststore([ca.certPem], "")).toThrow(/password must not be empty/);
    // Java refuses non-ASCII PKCS12 passwords ("Password is not ASCII").
    expect(() => buildTruststore([ca.certPem], "mot-de-passe-Ø")).toThrow(/password must be printable ASCII/);
    expect(() => buildTruststore([ca.certPem], "tab\tpassword")).toThrow(/password must be printable ASCII/);
  });
});
