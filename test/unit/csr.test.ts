/**
 * lib/csr.ts against requests the openssl CLI makes, and the check main
 * applies to a replica's requests before it signs them (components/Pki.ts
 * certRequestMismatch): the tls provider signs whatever names a request asks
 * for, so a request for another host's names, or one whose signature its
 * key does not verify, must be refused here.
 */
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readCertRequest, spkiOf } from "../../lib/csr";
import { certRequestMismatch, certSubject } from "../../components/Pki";
import { pkiHost } from "../../lib/fleet";

let dir: string;
let keyPem: string;

function request(subj: string, san: string | undefined, key = join(dir, "key.pem")): string {
  return execFileSync("openssl", ["req", "-new", "-key", key, "-subj", subj, ...(san ? ["-addext", `subjectAltName=${san}`] : [])], { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

/** The request for replica-1's kind of certificate, as its stack makes it. */
function requestFor(kind: "postgres" | "redis" | "exporters", ip = "10.10.0.3"): string {
  const s = certSubject(pkiHost("replica-1", ip), ip, kind);
  return request(`/O=Synaxic/CN=${s.commonName}`, [...s.ips.map((i) => `IP:${i}`), ...s.dns.map((d) => `DNS:${d}`)].join(","));
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "synaxic-csr-"));
  execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", join(dir, "key.pem")]);
  keyPem = readFileSync(join(dir, "key.pem"), "utf8");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("readCertRequest", () => {
  it("reads the subject, the IP and DNS names and the public key of an ECDSA request", () => {
    const r = readCertRequest(request("/O=Synaxic/CN=postgres.replica-1", "IP:10.10.0.3,IP:127.0.0.1,DNS:replica-1,DNS:localhost"));
    expect(r.commonName).toBe("postgres.replica-1");
    expect(r.organization).toBe("Synaxic");
    expect(r.ips).toEqual(["10.10.0.3", "127.0.0.1"]);
    expect(r.dns).toEqual(["replica-1", "localhost"]);
    expect(spkiOf(r.publicKey).equals(spkiOf(createPublicKey(keyPem)))).toBe(true);
  });

  it("reads a request with no alternative names (Prometheus' client certificate)", () => {
    const r = readCertRequest(request("/O=Synaxic/CN=prometheus.replica-2", undefined));
    expect(r).toMatchObject({ commonName: "prometheus.replica-2", ips: [], dns: [] });
  });

  it("refuses a request whose content was changed after it was signed (the signature no longer verifies)", () => {
    const pem = request("/O=Synaxic/CN=postgres.replica-1", "IP:10.10.0.3,DNS:replica-1");
    const der = Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s/g, ""), "base64");
    // Another address in the same place: 10.10.0.3 becomes 10.10.0.2 (the main host's).
    const at = der.indexOf(Buffer.from([10, 10, 0, 3]));
    expect(at).toBeGreaterThan(0);
    der[at + 3] = 2;
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(() => readCertRequest(forged)).toThrow(/signature its own public key does not verify/);
  });

  it("refuses an alternative name of a kind the program never asks for (a URI)", () => {
    expect(() => readCertRequest(request("/O=Synaxic/CN=postgres.replica-1", "IP:10.10.0.3,URI:spiffe://x/y"))).toThrow(/alternative name of a kind/);
  });

  it("refuses text that is no request", () => {
    expect(() => readCertRequest("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")).toThrow(/certificate request is not DER/);
    expect(() => readCertRequest("hello")).toThrow(/certificate request is not PEM/);
  });
});

describe("certRequestMismatch: main signs a replica's request for that host's names alone", () => {
  it("accepts each kind's request made from certSubject for the host and address main lists", () => {
    for (const kind of ["postgres", "redis", "exporters"] as const) {
      expect(certRequestMismatch(requestFor(kind), pkiHost("replica-1", "10.10.0.3"), "10.10.0.3", kind)).toBeUndefined();
    }
  });

  it("refuses a request for the main host's address and name (a replica stack impersonating main's PostgreSQL)", () => {
    const forged = request("/O=Synaxic/CN=postgres.replica-1", "IP:10.10.0.3,IP:10.10.0.2,IP:127.0.0.1,DNS:replica-1,DNS:main,DNS:localhost,DNS:synaxic-replica-1-postgres");
    const why = certRequestMismatch(forged, pkiHost("replica-1", "10.10.0.3"), "10.10.0.3", "postgres");
    expect(why).toMatch(/addresses \[10\.10\.0\.3, 10\.10\.0\.2, 127\.0\.0\.1\]/);
    expect(why).toMatch(/names \[.*main.*\] \(expected/);
  });

  it("refuses another common name, and a request made for another address than main lists", () => {
    const other = request("/O=Synaxic/CN=postgres.main", undefined);
    expect(certRequestMismatch(other, pkiHost("replica-1", "10.10.0.3"), "10.10.0.3", "postgres")).toMatch(/common name "postgres.main" \(expected "postgres.replica-1"\)/);
    expect(certRequestMismatch(requestFor("redis", "10.10.0.9"), pkiHost("replica-1", "10.10.0.3"), "10.10.0.3", "redis")).toMatch(/addresses \[10\.10\.0\.9, 127\.0\.0\.1\] \(expected \[10\.10\.0\.3, 127\.0\.0\.1\]\)/);
  });

  it("refuses a Prometheus client request that names any address", () => {
    const r = request("/O=Synaxic/CN=prometheus.replica-1", "IP:10.10.0.3");
    expect(certRequestMismatch(r, pkiHost("replica-1", "10.10.0.3"), "10.10.0.3", "prometheus")).toMatch(/addresses \[10\.10\.0\.3\] \(expected \[\]\)/);
  });
});

