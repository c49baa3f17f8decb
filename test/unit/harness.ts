/**
 * Runs the program under Pulumi's mocks and records every registered
 * resource with its inputs, keeping the SDK's secret markers so that tests
 * can tell secret inputs from plain ones.
 *
 * The mocks behave like the engine where it matters for secrecy: provider
 * outputs that the engine marks secret (RandomPassword.result, private keys)
 * come back secret here too, and StackReference outputs listed as secret
 * come back secret.
 */
import * as pulumi from "@pulumi/pulumi";
import { createECDH, createHash, createPrivateKey } from "node:crypto";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCa } from "../rig/pki";

export const SECRET_SIG = "4dabf18193072939515e22adb298388d";
export const SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270";

export interface RecordedOptions {
  retainOnDelete?: boolean;
  deleteBeforeReplace?: boolean;
  /** Names of the resources this one depends on explicitly. */
  dependsOn: string[];
  parent?: string;
  additionalSecretOutputs?: string[];
  /** Types this resource was previously registered as (aliases that keep its URN). */
  aliasTypes?: string[];
  protect?: boolean;
  ignoreChanges?: string[];
  customTimeouts?: { create?: string; update?: string; delete?: string };
}

export interface Recorded {
  type: string;
  name: string;
  opts: RecordedOptions;
  /** Inputs as the SDK sent them, secret parts wrapped in the secret marker. */
  raw: Record<string, unknown>;
  /** Inputs with the secret markers removed. */
  inputs: Record<string, any>;
}

export interface RunOptions {
  config: Record<string, string>;
  secretKeys?: string[];
  stack?: string;
  /** Outputs of stacks read through StackReference, by stack name, and which of them are secret. */
  stackReferences?: Record<string, { outputs: Record<string, unknown>; secretOutputNames: string[] }>;
  /** The deploy slot each app's slot step prints (templates/app.ts), by the step's resource name; "a" when absent. */
  appSlots?: Record<string, "a" | "b">;
}

export interface RunResult<T> {
  resources: Recorded[];
  outputs: T;
  /** Resolved values of the program's outputs, and which top-level outputs are secret. */
  values: Record<string, unknown>;
  secretOutputs: Set<string>;
  /** Every secret value the mocks handed out (passwords, private keys) plus secret config values. */
  secretValues: string[];
  of(type: string): Recorded[];
  /** The resource of that type named exactly so, or else the only one whose name contains it. */
  one(type: string, nameIncludes: string): Recorded;
}

// Resource options never reach the mocks; record them on the way in.
const optionsByKey = new Map<string, RecordedOptions>();

// Stacks under mocks write the Docker client's SSH identity like real runs
// do: into a folder of this process, never the user's ~/.ssh/synaxic.
const sshIdentityDir = mkdtempSync(join(tmpdir(), "synaxic-mock-ssh-"));
process.env.SYNAXIC_SSH_DIR = sshIdentityDir;
process.on("exit", () => rmSync(sshIdentityDir, { recursive: true, force: true }));
const runtimeResource = createRequire(__filename)("@pulumi/pulumi/runtime/resource") as { registerResource: (...a: unknown[]) => unknown; __synaxicPatched?: boolean };
if (!runtimeResource.__synaxicPatched) {
  const original = runtimeResource.registerResource;
  runtimeResource.registerResource = (...a: unknown[]) => {
    const [, parent, t, name, , , , , opts] = a as [unknown, pulumi.Resource | undefined, string, string, unknown, unknown, unknown, unknown, pulumi.CustomResourceOptions];
    const deps = opts?.dependsOn ? (Array.isArray(opts.dependsOn) ? opts.dependsOn : [opts.dependsOn]) : [];
    optionsByKey.set(`${t}::${name}`, {
      ...(opts?.retainOnDelete !== undefined ? { retainOnDelete: opts.retainOnDelete } : {}),
      ...(opts?.deleteBeforeReplace !== undefined ? { deleteBeforeReplace: opts.deleteBeforeReplace } : {}),
      dependsOn: deps.map((d) => String((d as unknown as { __name?: string }).__name ?? "?")),
      ...(parent ? { parent: String((parent as unknown as { __name?: string }).__name) } : {}),
      ...(opts?.additionalSecretOutputs ? { additionalSecretOutputs: opts.additionalSecretOutputs } : {}),
      ...(opts?.aliases ? { aliasTypes: opts.aliases.map((a) => String((a as { type?: string }).type ?? "")) } : {}),
      ...(opts?.protect !== undefined ? { protect: opts.protect } : {}),
      ...(opts?.ignoreChanges ? { ignoreChanges: opts.ignoreChanges } : {}),
      ...(opts?.customTimeouts ? { customTimeouts: opts.customTimeouts } : {}),
    });
    return original(...a);
  };
  runtimeResource.__synaxicPatched = true;
}

const caPems = new Map<string, string>();
/**
 * A real CA certificate, so that code parsing certificates (the truststore)
 * gets real input; one per label, so that each self-signed CA of the
 * program (one per service, components/Pki.ts) has a certificate of its own
 * (subject CN = the label) and a test can tell which one a file holds.
 */
export function testCaPem(label = "mock-ca"): string {
  let pem = caPems.get(label);
  if (pem === undefined) {
    const ca = makeCa(label);
    pem = ca.certPem;
    rmSync(ca.dir, { recursive: true, force: true });
    caPems.set(label, pem);
  }
  return pem;
}

/**
 * A real ECDSA P-256 private key (PKCS#8 PEM), the same for the same seed:
 * its scalar is the seed's SHA-256, its public point computed by ECDH.
 * Mocked tls.PrivateKey resources of the ECDSA algorithm return one, so
 * that code reading keys (the replica's key/certificate check) gets real
 * input, and each run of a test file sees the same keys.
 */
export function mockEcKeyPem(seed: string): string {
  const d = createHash("sha256").update(seed).digest();
  const ecdh = createECDH("prime256v1");
  ecdh.setPrivateKey(d);
  const pub = ecdh.getPublicKey();
  const b64 = (b: Buffer) => b.toString("base64url");
  return createPrivateKey({ key: { kty: "EC", crv: "P-256", d: b64(d), x: b64(pub.subarray(1, 33)), y: b64(pub.subarray(33)) }, format: "jwk" }).export({ type: "pkcs8", format: "pem" }) as string;
}

/** `openssl req -new` with this private key (PEM, in a private file of its own for the call) and the further arguments. */
function opensslReq(keyPem: string, args: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), "synaxic-mock-req-"));
  try {
    writeFileSync(join(dir, "key.pem"), keyPem, { mode: 0o600 });
    return execFileSync("openssl", ["req", "-new", "-key", join(dir, "key.pem"), ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const requestsMade = new Map<string, string>();
/**
 * A real certificate request (the openssl CLI's) for a mocked
 * tls.CertRequest whose key is a real one (mockEcKeyPem): its subject and
 * names are the inputs', signed by that key, as the provider makes it, so
 * code that reads requests (main's check of a replica's, lib/csr.ts) reads
 * real ones. The same inputs give the same request within a test file.
 */
function mockCertRequest(inputs: Record<string, unknown>): string | undefined {
  const key = inputs.privateKeyPem;
  if (typeof key !== "string" || !key.includes("BEGIN PRIVATE KEY") || key.includes("MockKey")) return undefined;
  const subject = (inputs.subject ?? {}) as { commonName?: string; organization?: string };
  const ips = (inputs.ipAddresses as string[] | undefined) ?? [];
  const dns = (inputs.dnsNames as string[] | undefined) ?? [];
  const id = JSON.stringify([key, subject.commonName, subject.organization, ips, dns]);
  let pem = requestsMade.get(id);
  if (pem === undefined) {
    const subj = `${subject.organization ? `/O=${subject.organization}` : ""}/CN=${subject.commonName ?? ""}`;
    const san = [...ips.map((i) => `IP:${i}`), ...dns.map((d) => `DNS:${d}`)].join(",");
    pem = opensslReq(key, ["-subj", subj, ...(san ? ["-addext", `subjectAltName=${san}`] : [])]);
    requestsMade.set(id, pem);
  }
  return pem;
}

/** The private key each mocked certificate request was made with, by its request PEM (kept across runs: a replica's requests reach main's run). */
const csrKeys = new Map<string, string>();
const certsByKey = new Map<string, string>();
/**
 * A real certificate for the key a mocked request was made with (self-signed
 * by that key with the openssl CLI; the chain is not what the mocks check):
 * mocked tls.LocallySignedCert resources return it, so a certificate carries
 * its request's public key as the provider's does. A request not made under
 * the mocks gets the shared mock CA certificate.
 */
export function mockCertFor(certRequestPem: string): string {
  const key = csrKeys.get(certRequestPem);
  if (key === undefined) return testCaPem();
  let pem = certsByKey.get(key);
  if (pem === undefined) {
    pem = opensslReq(key, ["-x509", "-subj", "/CN=mock-signed", "-days", "30"]);
    certsByKey.set(key, pem);
  }
  return pem;
}

/** A self-signed certificate's end of validity under the mocks: ten years on, a day apart per name, so a test can tell each CA's from the others'. */
export function mockCaNotAfter(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 365;
  return new Date(Date.UTC(2035, 0, 1 + h)).toISOString().replace(".000Z", "Z");
}

/** A string shaped like a bcrypt hash ($2a$, cost 10, 53 characters of salt and hash), unique per tag; not a real hash. */
export function mockBcrypt(tag: string): string {
  const body = `MockBcrypt${tag.replace(/[^./A-Za-z0-9]/g, ".")}`.padEnd(53, ".");
  if (body.length > 53) throw new Error(`mockBcrypt: tag ${tag} is too long`);
  return `$2a$10$${body}`;
}

export function unwrapSecrets(v: unknown): any {
  if (Array.isArray(v)) return v.map(unwrapSecrets);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o[SECRET_SIG] === SECRET_VALUE) return unwrapSecrets(o.value);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrapSecrets(x)]));
  }
  return v;
}

/** Paths of strings in `v` that contain one of `secrets` outside a secret marker. */
export function findLeaks(v: unknown, secrets: string[], path = ""): string[] {
  if (typeof v === "string") return secrets.some((s) => s.length >= 8 && v.includes(s)) ? [path] : [];
  if (Array.isArray(v)) return v.flatMap((x, i) => findLeaks(x, secrets, `${path}[${i}]`));
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o[SECRET_SIG] === SECRET_VALUE) return [];
    return Object.entries(o).flatMap(([k, x]) => findLeaks(x, secrets, path ? `${path}.${k}` : k));
  }
  return [];
}

function tag(s: string): string {
  return createHash("sha256").update(s).digest("hex").slice(0, 16);
}

async function settle(o: unknown): Promise<{ value: unknown; secret: boolean }> {
  if (pulumi.Output.isInstance(o)) {
    const out = o as any;
    const [value, secret] = await Promise.all([out.promise(), out.isSecret]);
    const inner = await settle(value);
    return { value: inner.value, secret: secret || inner.secret };
  }
  if (o instanceof Promise) return settle(await o);
  if (Array.isArray(o)) {
    const parts = await Promise.all(o.map(settle));
    return { value: parts.map((p) => p.value), secret: parts.some((p) => p.secret) };
  }
  if (o && typeof o === "object" && !(o instanceof pulumi.Resource)) {
    const entries = await Promise.all(Object.entries(o).map(async ([k, x]) => [k, await settle(x)] as const));
    return { value: Object.fromEntries(entries.map(([k, p]) => [k, p.value])), secret: entries.some(([, p]) => p.secret) };
  }
  return { value: o, secret: false };
}

/** A stand-in for Hetzner's catalogue (getServerType, getLocation), shared with the seam test. */
export const HETZNER_CATALOGUE = JSON.parse(readFileSync(join(__dirname, "..", "seam", "fixtures", "hetzner-catalogue.json"), "utf8")) as {
  serverTypes: Record<string, { cores: number; memory: number; architecture: string; isDeprecated: boolean; locations: { name: string; isDeprecated: boolean; unavailableAfter: string }[] }>;
  locations: Record<string, string>;
};

export async function runMocked<T extends Record<string, unknown>>(opts: RunOptions, program: () => T | Promise<T>): Promise<RunResult<T>> {
  const resources: Recorded[] = [];
  const secretValues: string[] = [];
  const secret = (s: string) => {
    secretValues.push(s);
    return pulumi.secret(s);
  };
  const stack = opts.stack ?? "main";
  pulumi.runtime.setAllConfig(opts.config, opts.secretKeys ?? []);
  for (const k of opts.secretKeys ?? []) if (opts.config[k]) secretValues.push(opts.config[k]!);
  let serverCount = 0;

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const raw = args.inputs as Record<string, unknown>;
        const inputs = unwrapSecrets(raw);
        resources.push({ type: args.type, name: args.name, raw, inputs, opts: optionsByKey.get(`${args.type}::${args.name}`) ?? { dependsOn: [] } });
        const id = `${args.name}-id`;
        const t = tag(`${stack}/${args.name}`);
        switch (args.type) {
          case "random:index/randomPassword:RandomPassword": {
            // New keepers make a new password, as the provider replaces the resource (passwordRotation).
            const k = inputs.keepers ? tag(`${stack}/${args.name}/${JSON.stringify(inputs.keepers)}`) : t;
            return { id, state: { ...inputs, result: secret(`MockPw${k}`), bcryptHash: secret(mockBcrypt(k)) } };
          }
          case "tls:index/privateKey:PrivateKey":
            return {
              id,
              state: {
                ...inputs,
                privateKeyPem: secret(inputs.algorithm === "ECDSA" ? mockEcKeyPem(`${stack}/${args.name}`) : `-----BEGIN PRIVATE KEY-----\nMockKey${t}\n-----END PRIVATE KEY-----\n`),
                privateKeyOpenssh: secret(`-----BEGIN OPENSSH PRIVATE KEY-----\nMockSsh${t}\n-----END OPENSSH PRIVATE KEY-----\n`),
                privateKeyPemPkcs8: secret(`-----BEGIN PRIVATE KEY-----\nMockPk8${t}\n-----END PRIVATE KEY-----\n`),
                publicKeyOpenssh: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5${t}\n`,
                publicKeyPem: `-----BEGIN PUBLIC KEY-----\n${t}\n-----END PUBLIC KEY-----\n`,
              },
            };
          case "tls:index/selfSignedCert:SelfSignedCert":
            // Each CA its own certificate (named after the resource) and its own end of validity.
            return { id, state: { ...inputs, certPem: testCaPem(args.name), validityEndTime: mockCaNotAfter(args.name), readyForRenewal: false } };
          case "tls:index/locallySignedCert:LocallySignedCert":
            return { id, state: { ...inputs, certPem: mockCertFor(String(inputs.certRequestPem)), validityEndTime: "2027-11-26T00:00:00Z", readyForRenewal: false } };
          case "tls:index/certRequest:CertRequest": {
            const certRequestPem = mockCertRequest(inputs) ?? `-----BEGIN CERTIFICATE REQUEST-----\n${t}\n-----END CERTIFICATE REQUEST-----\n`;
            if (typeof inputs.privateKeyPem === "string") csrKeys.set(certRequestPem, inputs.privateKeyPem);
            return { id, state: { ...inputs, certRequestPem } };
          }
          case "hcloud:index/server:Server":
            serverCount++;
            return { id: String(3000 + serverCount), state: { ...inputs, ipv4Address: `203.0.113.${10 + serverCount}`, status: "running" } };
          case "hcloud:index/network:Network":
            return { id: "4001", state: inputs };
          case "hcloud:index/firewall:Firewall":
            return { id: "5001", state: inputs };
          case "docker:index/remoteImage:RemoteImage":
            return { id, state: { ...inputs, imageId: `sha256:${t}`, repoDigest: `${inputs.name}@sha256:${t}${t}${t}${t}` } };
          case "command:remote:Command":
          case "command:local:Command":
            // An image build (lib/localImage.ts) prints the built image's ID, as `docker image inspect` does;
            // an app's slot step (components/SynaxicApp.ts) prints its deploy slot.
            if (args.name.endsWith("-image-build")) return { id, state: { ...inputs, stdout: `sha256:${t}\n`, stderr: "" } };
            // A Hetzner host's key rotation (components/Host.ts, rotateHostKey) prints the key generated on the host.
            if (args.name.endsWith("-host-key-rotate")) return { id, state: { ...inputs, stdout: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5Rotated${t}\n`, stderr: "" } };
            if (args.name.endsWith("app-slot")) return { id, state: { ...inputs, stdout: `${opts.appSlots?.[args.name] ?? "a"}\n`, stderr: "" } };
            return { id, state: { ...inputs, stdout: "", stderr: "" } };
          case "pulumi:pulumi:StackReference": {
            // This stack itself, and replica stacks under the names main derives, exist and have exported nothing unless a test gives their outputs.
            const ref = opts.stackReferences?.[String(inputs.name ?? args.name)] ?? (String(inputs.name) === `organization/synaxic/${stack}` || /^organization\/synaxic\/replica-\d+$/.test(String(inputs.name)) ? { outputs: {}, secretOutputNames: [] } : undefined);
            if (!ref) throw new Error(`no stack ${String(inputs.name ?? args.name)} in the mocks`);
            return { id: String(inputs.name), state: { name: inputs.name, outputs: ref.outputs, secretOutputNames: ref.secretOutputNames } };
          }
          default:
            return { id, state: inputs };
        }
      },
      call(args) {
        if (args.token === "hcloud:index/getServerType:getServerType") {
          const t = HETZNER_CATALOGUE.serverTypes[String(args.inputs.name)];
          if (!t) throw new Error(`server type not found: ${String(args.inputs.name)}`);
          return { name: args.inputs.name, ...t };
        }
        if (args.token === "hcloud:index/getLocation:getLocation") {
          const zone = HETZNER_CATALOGUE.locations[String(args.inputs.name)];
          if (!zone) throw new Error(`location not found: ${String(args.inputs.name)}`);
          return { name: args.inputs.name, networkZone: zone };
        }
        if (args.token === "tls:index/getPublicKey:getPublicKey") {
          const k = String(args.inputs.privateKeyPem ?? args.inputs.privateKeyOpenssh ?? "");
          return { publicKeyOpenssh: `ssh-ed25519 AAAAOperator${tag(k)}\n`, publicKeyPem: "" };
        }
        return args.inputs;
      },
    },
    "synaxic",
    stack,
    false,
    // A self-managed backend's organisation.
    "organization",
  );

  const outputs = await program();
  const settled = await Promise.all(Object.entries(outputs).map(async ([k, v]) => [k, await settle(v)] as const));
  // Let registrations that feed no output finish too.
  let last = -1;
  while (last !== resources.length) {
    last = resources.length;
    await new Promise((r) => setTimeout(r, 30));
  }
  const values = Object.fromEntries(settled.map(([k, p]) => [k, p.value]));
  const secretOutputs = new Set(settled.filter(([, p]) => p.secret).map(([k]) => k));
  return {
    resources,
    outputs,
    values,
    secretOutputs,
    secretValues,
    of: (type) => resources.filter((r) => r.type === type),
    one: (type, nameIncludes) => {
      const exact = resources.filter((r) => r.type === type && r.name === nameIncludes);
      const found = exact.length ? exact : resources.filter((r) => r.type === type && r.name.includes(nameIncludes));
      if (found.length !== 1) throw new Error(`expected one ${type} named *${nameIncludes}*, found ${found.map((r) => r.name).join(", ") || "none"}`);
      return found[0]!;
    },
  };
}
