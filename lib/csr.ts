/**
 * Reads a PKCS#10 certificate request (RFC 2986): its subject's common name
 * and organization, its subject alternative names (RFC 5280 4.2.1.6, carried
 * in the extensionRequest attribute of PKCS#9, RFC 2985 5.4.2) and its public
 * key, after checking the request's signature with that key: a request is
 * what its key's holder asked for, or it is refused.
 *
 * The main stack signs the requests replica stacks publish
 * (components/Pki.ts); the tls provider's locally signed certificate copies
 * a request's subject and names as they are (terraform-provider-tls,
 * internal/provider/resource_locally_signed_cert.go: the template takes
 * certReq.Subject, DNSNames, IPAddresses and URIs), so main reads each
 * request itself and refuses one that asks for names other than its host's.
 * node-forge parses the DER (its pki.certificationRequestFromPem reads RSA
 * keys only; these are ECDSA); Node's crypto checks the signature.
 */
import { createPublicKey, verify, type KeyObject } from "node:crypto";
import forge from "node-forge";

const asn1 = forge.asn1;
type Asn1 = forge.asn1.Asn1;
/** node-forge's fromDer takes options (lib/asn1.js: strict, parseAllBytes, decodeBitStrings); its typings know a boolean only. */
const fromDer = asn1.fromDer as unknown as (der: string, options: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean }) => Asn1;

const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
};

/** The hash of each signature algorithm a request may be signed with (RFC 5758 3.2, RFC 4055 5). */
const SIGNATURE_HASH: Record<string, string> = {
  "1.2.840.10045.4.3.2": "sha256", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
};

export interface CertRequestInfo {
  commonName: string;
  organization: string | undefined;
  /** IP address SANs, dotted (IPv4) or as colon-separated hex groups (IPv6). */
  ips: string[];
  dns: string[];
  /** The request's public key. */
  publicKey: KeyObject;
}

export class CertRequestError extends Error {
  constructor(detail: string) {
    super(`certificate request ${detail}`);
    this.name = "CertRequestError";
  }
}

const children = (node: Asn1, what: string): Asn1[] => {
  if (!Array.isArray(node.value)) throw new CertRequestError(`is malformed: ${what} is not a constructed value`);
  return node.value;
};
const bytesOf = (node: Asn1, what: string): string => {
  if (typeof node.value !== "string") throw new CertRequestError(`is malformed: ${what} is not a primitive value`);
  return node.value;
};
const oidOf = (node: Asn1, what: string): string => asn1.derToOid(bytesOf(node, what));

/** Parses and checks a PEM certificate request; throws CertRequestError saying what is wrong. */
export function readCertRequest(pem: string): CertRequestInfo {
  let der: string;
  try {
    const msgs = forge.pem.decode(pem);
    const msg = msgs.find((m) => m.type === "CERTIFICATE REQUEST" || m.type === "NEW CERTIFICATE REQUEST");
    if (!msg) throw new Error("no CERTIFICATE REQUEST block");
    der = msg.body;
  } catch (e) {
    throw new CertRequestError(`is not PEM: ${(e as Error).message}`);
  }
  let root: Asn1;
  try {
    // Bit strings stay as bytes: the signature is one, and the public key's is re-encoded as read.
    root = fromDer(der, { strict: true, parseAllBytes: true, decodeBitStrings: false });
  } catch (e) {
    throw new CertRequestError(`is not DER: ${(e as Error).message}`);
  }
  const [info, sigAlg, sig] = children(root, "the request");
  if (!info || !sigAlg || !sig) throw new CertRequestError("is malformed: expected info, algorithm and signature");
  const [, subject, spki, attrs] = children(info, "certificationRequestInfo");
  if (!subject || !spki) throw new CertRequestError("is malformed: no subject or public key");

  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(asn1.toDer(spki).getBytes(), "binary"), format: "der", type: "spki" });
  } catch (e) {
    throw new CertRequestError(`holds no usable public key: ${(e as Error).message}`);
  }
  const algOid = oidOf(children(sigAlg, "signatureAlgorithm")[0]!, "the signature algorithm");
  const hash = SIGNATURE_HASH[algOid];
  if (!hash) throw new CertRequestError(`is signed with an algorithm this program does not check (${algOid})`);
  // A BIT STRING's first byte counts the unused bits of its last: 0 for a signature.
  const sigBytes = bytesOf(sig, "the signature");
  if (sigBytes.charCodeAt(0) !== 0) throw new CertRequestError("is malformed: the signature is not a whole number of bytes");
  const signed = Buffer.from(asn1.toDer(info).getBytes(), "binary");
  if (!verify(hash, signed, publicKey, Buffer.from(sigBytes.slice(1), "binary"))) {
    throw new CertRequestError("carries a signature its own public key does not verify");
  }

  const attribute = (rdnOid: string): string | undefined => {
    for (const rdn of children(subject, "the subject")) {
      for (const atv of children(rdn, "a name")) {
        const [type, value] = children(atv, "a name attribute");
        if (type && value && oidOf(type, "a name attribute's type") === rdnOid) return forge.util.decodeUtf8(bytesOf(value, "a name attribute's value"));
      }
    }
    return undefined;
  };
  const commonName = attribute(OID.commonName);
  if (commonName === undefined) throw new CertRequestError("names no common name");

  const ips: string[] = [];
  const dns: string[] = [];
  for (const attr of attrs ? children(attrs, "the attributes") : []) {
    const [type, values] = children(attr, "an attribute");
    if (!type || !values || oidOf(type, "an attribute's type") !== OID.extensionRequest) continue;
    for (const exts of children(values, "the extension request")) {
      for (const ext of children(exts, "the extensions")) {
        const parts = children(ext, "an extension");
        if (oidOf(parts[0]!, "an extension's id") !== OID.subjectAltName) continue;
        const names = fromDer(bytesOf(parts[parts.length - 1]!, "the alternative names"), { strict: true, parseAllBytes: true, decodeBitStrings: false });
        for (const gn of children(names, "the alternative names")) {
          if (gn.tagClass !== asn1.Class.CONTEXT_SPECIFIC) continue;
          const v = bytesOf(gn, "an alternative name");
          if (gn.type === 2) dns.push(v);
          else if (gn.type === 7) ips.push(ipText(v));
          else throw new CertRequestError(`asks for an alternative name of a kind this program never requests (tag ${gn.type})`);
        }
      }
    }
  }
  return { commonName, organization: attribute(OID.organization), ips, dns, publicKey };
}

function ipText(raw: string): string {
  const b = Buffer.from(raw, "binary");
  if (b.length === 4) return [...b].join(".");
  if (b.length === 16) return Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(":");
  throw new CertRequestError(`is malformed: an IP address of ${b.length} bytes`);
}

/** The public key as SPKI DER, to compare keys. */
export function spkiOf(key: KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" });
}
