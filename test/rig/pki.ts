/**
 * Test certificates made with the openssl CLI: a CA and server certificates
 * whose SANs name the addresses and host names given. ECDSA P-256, like the
 * program's own (components/Pki.ts).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { isIP } from "node:net";

export interface CertFiles {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

export interface TestCa extends CertFiles {
  dir: string;
  /** Issues a certificate for these names and addresses, for server and client use unless `usage` narrows it (as components/Pki.ts does for the exporters and Prometheus). */
  issue(label: string, sans: string[], commonName?: string, usage?: "server" | "client" | "both"): CertFiles;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Temporary folders this process made for CAs; removed when it exits. */
const ownDirs: string[] = [];
process.on("exit", () => {
  for (const d of ownDirs) rmSync(d, { recursive: true, force: true });
});

export function makeCa(label = "test-ca", dir?: string): TestCa {
  if (dir === undefined) {
    dir = mkdtempSync(join(tmpdir(), "synaxic-pki-"));
    ownDirs.push(dir);
  }
  const keyFile = join(dir, `${label}.key`);
  const certFile = join(dir, `${label}.crt`);
  openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyFile], dir);
  openssl(
    ["req", "-x509", "-new", "-key", keyFile, "-sha256", "-days", "30", "-subj", `/CN=${label}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", certFile],
    dir,
  );
  const ca: TestCa = {
    dir,
    keyFile,
    certFile,
    certPem: readFileSync(certFile, "utf8"),
    keyPem: readFileSync(keyFile, "utf8"),
    issue(name: string, sans: string[], commonName = sans[0] ?? name, usage: "server" | "client" | "both" = "both"): CertFiles {
      const k = join(dir, `${name}.key`);
      const csr = join(dir, `${name}.csr`);
      const c = join(dir, `${name}.crt`);
      const ext = join(dir, `${name}.ext`);
      openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", k], dir);
      openssl(["req", "-new", "-key", k, "-subj", `/CN=${commonName}`, "-out", csr], dir);
      const san = sans.map((s) => (isIP(s) ? `IP:${s}` : `DNS:${s}`)).join(",");
      const eku = { server: "serverAuth", client: "clientAuth", both: "serverAuth,clientAuth" }[usage];
      const ku = usage === "both" ? "digitalSignature,keyEncipherment" : "digitalSignature";
      writeFileSync(ext, `subjectAltName=${san}\nextendedKeyUsage=${eku}\nkeyUsage=${ku}\n`);
      openssl(["x509", "-req", "-in", csr, "-CA", certFile, "-CAkey", keyFile, "-CAcreateserial", "-days", "30", "-sha256", "-extfile", ext, "-out", c], dir);
      return { certFile: c, keyFile: k, certPem: readFileSync(c, "utf8"), keyPem: readFileSync(k, "utf8") };
    },
  };
  return ca;
}
