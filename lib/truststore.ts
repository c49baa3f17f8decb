/**
 * PKCS#12 truststore for Java clients (the app's Redisson client).
 *
 * Java only treats a certificate in a PKCS#12 store as trusted when its
 * certBag carries Oracle's trusted-key-usage attribute
 * (2.16.840.1.113894.746875.1.1 = anyExtendedKeyUsage), as `keytool
 * -importcert` writes it; `openssl pkcs12 -export` of a bare certificate does
 * not add it and Java then ignores the entry.
 *
 * The layout follows what keytool of JDK 17+ writes: the certBags sit in one
 * encryptedData safe (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC) and the whole
 * store carries an HMAC-SHA256 MAC keyed by the PKCS#12 KDF. Salts and the IV
 * are derived from the inputs (HMAC-SHA256 keyed by the password), so the same
 * certificates and password always give the same bytes: a repeated deployment
 * sees no change.
 */
import { createHmac, X509Certificate } from "node:crypto";
import forge from "node-forge";

const asn1 = forge.asn1;
const OID = {
  data: "1.2.840.113549.1.7.1",
  encryptedData: "1.2.840.113549.1.7.6",
  certBag: "1.2.840.113549.1.12.10.1.3",
  x509Certificate: "1.2.840.113549.1.9.22.1",
  friendlyName: "1.2.840.113549.1.9.20",
  oracleTrustedKeyUsage: "2.16.840.1.113894.746875.1.1",
  anyExtendedKeyUsage: "2.5.29.37.0",
  pbes2: "1.2.840.113549.1.5.13",
  pbkdf2: "1.2.840.113549.1.5.12",
  hmacWithSha256: "1.2.840.113549.2.9",
  aes256Cbc: "2.16.840.1.101.3.4.1.42",
  sha256: "2.16.840.1.101.3.4.2.1",
} as const;

/** keytool's defaults (keystore.pkcs12.certPbeIterationCount / macIterationCount). */
export const TRUSTSTORE_ITERATIONS = 10_000;

type Asn1 = forge.asn1.Asn1;

const seq = (items: Asn1[]): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
const set = (items: Asn1[]): Asn1 => {
  // DER: the members of a SET OF are sorted by their encodings.
  const sorted = [...items].sort((a, b) => compareBytes(asn1.toDer(a).getBytes(), asn1.toDer(b).getBytes()));
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, sorted);
};
const oid = (o: string): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(o).getBytes());
const octets = (bytes: string): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes);
const int = (n: number): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(n).getBytes());
const nul = (): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, "");
const explicit0 = (inner: Asn1): Asn1 => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
// forge writes a BMPSTRING value as UTF-16BE code units itself.
const bmp = (s: string): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, s);

function compareBytes(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

const toBinary = (b: Buffer): string => b.toString("binary");

/** Splits PEM text into the DER of each CERTIFICATE block, checking that each is a CA certificate. */
function caCertificatesDer(caCertPems: readonly string[]): Buffer[] {
  if (!Array.isArray(caCertPems) || caCertPems.length === 0) {
    throw new Error("buildTruststore: at least one CA certificate is required");
  }
  const ders: Buffer[] = [];
  const seen = new Set<string>();
  caCertPems.forEach((pem, i) => {
    const blocks = [...String(pem).matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g)];
    if (blocks.length === 0) throw new Error(`buildTruststore: caCertPems[${i}] holds no PEM block`);
    for (const block of blocks) {
      if (block[1] !== "CERTIFICATE") throw new Error(`buildTruststore: caCertPems[${i}] holds a ${block[1]} block, expected CERTIFICATE`);
      const der = Buffer.from(block[2]!.replace(/\s+/g, ""), "base64");
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(der);
      } catch (e) {
        throw new Error(`buildTruststore: caCertPems[${i}] is not a valid X.509 certificate (${(e as Error).message})`);
      }
      if (!cert.ca) throw new Error(`buildTruststore: caCertPems[${i}] (${cert.subject}) is not a CA certificate`);
      const key = der.toString("hex");
      if (seen.has(key)) continue;
      seen.add(key);
      ders.push(der);
    }
  });
  return ders;
}

/** Input-derived bytes: HMAC-SHA256(password, label || every certificate), cut to `n` bytes. */
function derive(password: string, label: string, ders: readonly Buffer[], n: number): string {
  const h = createHmac("sha256", Buffer.from(password, "utf8")).update(`synaxic-truststore/${label}\0`);
  for (const der of ders) h.update(der);
  return toBinary(h.digest().subarray(0, n));
}

function certBag(der: Buffer, alias: string): Asn1 {
  return seq([
    oid(OID.certBag),
    explicit0(seq([oid(OID.x509Certificate), explicit0(octets(toBinary(der)))])),
    set([
      seq([oid(OID.friendlyName), set([bmp(alias)])]),
      seq([oid(OID.oracleTrustedKeyUsage), set([oid(OID.anyExtendedKeyUsage)])]),
    ]),
  ]);
}

/** EncryptedData (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) around the DER of a SafeContents. */
function encryptSafe(safeContentsDer: string, password: string, salt: string, iv: string): Asn1 {
  // The password is printable ASCII (checked above), so its bytes are its characters.
  const key = forge.pkcs5.pbkdf2(password, salt, TRUSTSTORE_ITERATIONS, 32, forge.md.sha256.create());
  const cipher = forge.cipher.createCipher("AES-CBC", key);
  cipher.start({ iv });
  cipher.update(forge.util.createBuffer(safeContentsDer, "raw"));
  if (!cipher.finish()) throw new Error("buildTruststore: encryption failed");
  const algorithm = seq([
    oid(OID.pbes2),
    seq([
      seq([oid(OID.pbkdf2), seq([octets(salt), int(TRUSTSTORE_ITERATIONS), int(32), seq([oid(OID.hmacWithSha256), nul()])])]),
      seq([oid(OID.aes256Cbc), octets(iv)]),
    ]),
  ]);
  return seq([
    int(0),
    seq([oid(OID.data), algorithm, asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, cipher.output.getBytes())]),
  ]);
}

/**
 * Builds a PKCS#12 truststore holding `caCertPems` (each string may hold
 * several PEM certificates) as trusted-certificate entries, protected by
 * `password`. Deterministic: equal inputs give equal bytes.
 */
export function buildTruststore(caCertPems: string[], password: string): Buffer {
  if (typeof password !== "string" || password.length === 0) throw new Error("buildTruststore: the password must not be empty");
  // Java's PBE keys (javax.crypto.spec.PBEKeySpec via com.sun.crypto.provider.PBEKey)
  // refuse anything but printable ASCII: such a store could never be opened.
  if (!/^[\x20-\x7e]+$/.test(password)) throw new Error("buildTruststore: the password must be printable ASCII (Java cannot open a PKCS12 store with any other)");
  const ders = caCertificatesDer(caCertPems);

  const bags = ders.map((der, i) => certBag(der, `synaxic-ca-${i + 1}`));
  const safeContentsDer = asn1.toDer(seq(bags)).getBytes();
  const encrypted = encryptSafe(safeContentsDer, password, derive(password, "pbes2-salt", ders, 16), derive(password, "pbes2-iv", ders, 16));
  const authSafe = seq([seq([oid(OID.encryptedData), explicit0(encrypted)])]);
  const authSafeDer = asn1.toDer(authSafe).getBytes();

  // MAC: HMAC-SHA256 over the AuthenticatedSafe, key from the PKCS#12 KDF (ID 3).
  const macSalt = derive(password, "mac-salt", ders, 32);
  const macKey = forge.pkcs12.generateKey(password, forge.util.createBuffer(macSalt, "raw"), 3, TRUSTSTORE_ITERATIONS, 32, forge.md.sha256.create());
  const hmac = forge.hmac.create();
  hmac.start(forge.md.sha256.create(), macKey);
  hmac.update(authSafeDer);
  const mac = hmac.digest().getBytes();

  const pfx = seq([
    int(3),
    seq([oid(OID.data), explicit0(octets(authSafeDer))]),
    seq([seq([seq([oid(OID.sha256), nul()]), octets(mac)]), octets(macSalt), int(TRUSTSTORE_ITERATIONS)]),
  ]);
  return Buffer.from(asn1.toDer(pfx).getBytes(), "binary");
}
