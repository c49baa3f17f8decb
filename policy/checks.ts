/**
 * The checks behind each policy, as pure functions of a resource's type,
 * name, inputs and options and of the stack's settings (settings.ts). Each
 * returns the violations it finds, one message per problem, naming the
 * resource and what to change; an empty list means the resource passes.
 * policies.ts wires them to the policy SDK; the unit tests call them
 * directly and through the SDK.
 */
import { Secret } from "@pulumi/policy";
import { pinnedImage } from "../lib/config";
import type { StackSettings } from "./settings";

export const TYPES = {
  container: "docker:index/container:Container",
  remoteImage: "docker:index/remoteImage:RemoteImage",
  firewall: "hcloud:index/firewall:Firewall",
  server: "hcloud:index/server:Server",
} as const;

/** A resource as a policy sees it. `props` are its inputs; for `findPlainSecrets`, with secret parts as `Secret`. */
export interface CheckedResource {
  type: string;
  /** The resource's Pulumi name. */
  name: string;
  props: Record<string, unknown>;
  opts: { protect: boolean };
}

/**
 * The placeholders the engine sends for values not known yet during a
 * preview (the Pulumi wire protocol's unknown sentinels, one per kind of
 * value). A check that meets one skips that value.
 */
export const UNKNOWN_SENTINELS: readonly string[] = [
  "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7", // boolean
  "3eeb2bf0-c639-47a8-9e75-3b44932eb421", // number
  "04da6b54-80e4-46f7-96ec-b56ff0331ba9", // string
  "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2", // array
  "030794c1-ac77-496b-92df-f27374a8bd58", // asset
  "e48ece36-62e2-4504-bad9-02848725956a", // archive
  "dd056dcd-154b-4c76-9bd3-c8f88648b5ff", // object
];

function isUnknown(v: unknown): boolean {
  return typeof v === "string" && UNKNOWN_SENTINELS.includes(v);
}

function label(r: CheckedResource): string {
  return `${r.type} "${r.name}"`;
}

// ---------------------------------------------------------------------------
// 1. Published ports
// ---------------------------------------------------------------------------

/**
 * Container names the program gives (lib/addresses.ts containerName:
 * synaxic-<host>-<service>): the balancer is the "nginx" service; a host's
 * anchor ("host", the local stack's stand-in for a VPS) holds the network
 * namespace the balancer listens in, so it publishes the balancer's port
 * for it.
 */
export const BALANCER_CONTAINER = /^synaxic-[a-z0-9-]+-nginx$/;
export const ANCHOR_CONTAINER = /^synaxic-[a-z0-9-]+-host$/;

interface PortMapping {
  internal?: number;
  external?: number;
  ip?: string;
  protocol?: string;
}

function showPort(p: PortMapping): string {
  return `${p.ip ? `${p.ip}:` : ""}${p.external ?? "(random)"}->${p.internal}${p.protocol && p.protocol !== "tcp" ? `/${p.protocol}` : ""}`;
}

/** Only the balancer publishes ports, and only the balancer's own ports. */
export function checkPublishedPorts(r: CheckedResource, s: StackSettings): string[] {
  if (r.type !== TYPES.container) return [];
  const ports = (r.props.ports ?? []) as PortMapping[];
  if (!Array.isArray(ports) || ports.length === 0) return [];
  const name = String(r.props.name ?? "");
  const shown = ports.map(showPort).join(", ");
  if (!BALANCER_CONTAINER.test(name) && !ANCHOR_CONTAINER.test(name)) {
    return [
      `${label(r)} (container ${JSON.stringify(name)}) publishes ports ${shown}. Only the balancer (synaxic-<host>-nginx) may publish ports: every other service binds its host's private address or loopback in the host's network namespace, and a port Docker publishes bypasses the firewall. Remove \`ports\` from this container.`,
    ];
  }
  const stray = ports.filter((p) => !s.balancerPorts.includes(Number(p.internal)));
  return stray.length
    ? [
        `${label(r)} (container ${JSON.stringify(name)}) publishes ${stray.map(showPort).join(", ")}, which ${stray.length > 1 ? "are" : "is"} not the balancer's port (${s.balancerPorts.join(", ")}: httpPort, httpsPort). Publish only the balancer's ports.`,
      ]
    : [];
}

// ---------------------------------------------------------------------------
// 2. Pinned images
// ---------------------------------------------------------------------------

/** An image ID (content address), as a RemoteImage's imageId gives it to a container. */
const IMAGE_ID = /^sha256:[a-f0-9]{12,64}$/;

function imageProblem(ref: string): string | undefined {
  const r = pinnedImage.safeParse(ref);
  return r.success ? undefined : r.error.issues[0]!.message;
}

/**
 * Every image reference pinned: a RemoteImage's name, and a container's
 * image unless it is an image ID (the program passes a RemoteImage's
 * imageId, whose name is checked on the RemoteImage). The rule is the
 * program's own (lib/config.ts pinnedImage): a version tag other than
 * latest, or an @sha256 digest.
 */
export function checkPinnedImages(r: CheckedResource): string[] {
  let ref: unknown;
  let what: string;
  if (r.type === TYPES.remoteImage) {
    ref = r.props.name;
    what = "pulls";
  } else if (r.type === TYPES.container) {
    ref = r.props.image;
    what = "runs";
    if (typeof ref === "string" && IMAGE_ID.test(ref)) return [];
  } else {
    return [];
  }
  if (ref === undefined || isUnknown(ref)) return [];
  const problem = imageProblem(String(ref));
  return problem
    ? [`${label(r)} ${what} image ${JSON.stringify(ref)}: ${problem}. Pin the image (the synaxic:*Image keys are checked the same way).`]
    : [];
}

// ---------------------------------------------------------------------------
// 3. Cloud firewall
// ---------------------------------------------------------------------------

interface FirewallRule {
  description?: string;
  direction?: string;
  protocol?: string;
  port?: string;
  sourceIps?: string[];
}

/** A CIDR that covers every address: a prefix of length 0 (0.0.0.0/0, ::/0). */
export function isWorld(cidr: string): boolean {
  const m = /^\s*([0-9a-fA-F.:]+)\/(\d+)\s*$/.exec(cidr);
  return !!m && Number(m[2]) === 0;
}

/** Whether a Hetzner rule's port field ("22", "1000-2000", "any", absent) covers `port`. */
function covers(portField: string | undefined, port: number): boolean {
  if (portField === undefined || portField === "" || portField === "any") return true;
  const m = /^(\d+)(?:-(\d+))?$/.exec(portField.trim());
  if (!m) return true;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  return port >= lo && port <= hi;
}

/**
 * The Hetzner cloud firewall admits the world (0.0.0.0/0, ::/0) only on the
 * balancer's ports, over TCP, one port per rule; SSH (22) never from the
 * world.
 */
export function checkFirewall(r: CheckedResource, s: StackSettings): string[] {
  if (r.type !== TYPES.firewall) return [];
  const rules = (r.props.rules ?? []) as FirewallRule[];
  if (!Array.isArray(rules)) return [];
  const out: string[] = [];
  rules.forEach((rule, i) => {
    if ((rule.direction ?? "in") !== "in") return;
    const world = (rule.sourceIps ?? []).filter((c) => typeof c === "string" && isWorld(c));
    if (world.length === 0) return;
    const what = `${label(r)} rule ${i}${rule.description ? ` (${JSON.stringify(rule.description)})` : ""}`;
    const proto = rule.protocol ?? "tcp";
    const ports = rule.port === undefined || rule.port === "" ? "every port" : `port ${rule.port}`;
    if (proto === "tcp" && covers(rule.port, 22)) {
      out.push(`${what} opens SSH (${ports}) to ${world.join(", ")}. SSH must be reachable from the operators only: list their networks in synaxic:adminCidrs and keep this rule's sourceIps to them.`);
      return;
    }
    const single = /^\d+$/.test(rule.port ?? "") ? Number(rule.port) : undefined;
    if (proto !== "tcp" || single === undefined || !s.balancerPorts.includes(single)) {
      out.push(
        `${what} opens ${proto} ${ports} to ${world.join(", ")}. Only the balancer's ports (${s.balancerPorts.join(", ")}, tcp) may be open to the world; limit this rule's sourceIps to the hosts that need it (their /32 addresses).`,
      );
    }
  });
  return out;
}

// ---------------------------------------------------------------------------
// 4. Data protection
// ---------------------------------------------------------------------------

/**
 * A server's disk holds the fleet's data: unless the stack opts into
 * deleting data (synaxic:deleteDataOnDestroy), an hcloud server carries
 * Pulumi's protect and Hetzner's delete and rebuild protection.
 */
export function checkDataProtection(r: CheckedResource, s: StackSettings): string[] {
  if (r.type !== TYPES.server || s.deleteDataOnDestroy) return [];
  const missing: string[] = [];
  if (r.opts.protect !== true) missing.push("the `protect: true` resource option");
  if (r.props.deleteProtection !== true && !isUnknown(r.props.deleteProtection)) missing.push("`deleteProtection: true`");
  if (r.props.rebuildProtection !== true && !isUnknown(r.props.rebuildProtection)) missing.push("`rebuildProtection: true`");
  return missing.length
    ? [
        `${label(r)} holds the host's data (PostgreSQL, Redis, monitoring volumes) but lacks ${missing.join(", ")}. Set ${missing.length > 1 ? "them" : "it"}, or, to knowingly let \`pulumi destroy\` delete this stack's data, set synaxic:deleteDataOnDestroy to true in the stack's configuration.`,
      ]
    : [];
}

// ---------------------------------------------------------------------------
// 5. Secrets
// ---------------------------------------------------------------------------

/** Input names that carry a secret (camelCase or snake_case inputs of any resource). */
export const SECRET_INPUT = /(password|passwd|passphrase|secret|token|private_?key|api_?key|credentials?)$/i;
/** Environment variable names that carry a secret (GOOGLE_CLIENT_SECRET, POSTGRES_PASSWORD, ...); *_FILE names a file instead. */
export const SECRET_ENV = /(PASSWORD|PASSWD|PASSPHRASE|PASS|SECRET|TOKEN|PRIVATE_KEY|API_KEY|CREDENTIALS?)$/i;

/** Text that carries a secret whatever input it is in: private keys and well-known password syntaxes. */
const SECRET_CONTENT: { re: RegExp; what: string }[] = [
  { re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/, what: "a private key" },
  { re: /\bPASSWORD\s+'[^']+'/i, what: "an SQL password" },
  { re: /^\s*(requirepass|masterauth)\s+\S+/im, what: "a Redis password (requirepass/masterauth)" },
  { re: /^\s*user\s+\S+(\s+\S+)*\s+>\S+/m, what: "a Redis ACL password (>...)" },
  { re: /\b[a-z][a-z0-9+.-]*:\/\/[^/\s:@]+:[^/\s@]+@/i, what: "credentials in a URL" },
  // The exporters' basic auth (templates/exporter-web.ts): a hash an attacker could crack offline.
  { re: /\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}/, what: "a bcrypt password hash" },
];

interface Leaf {
  path: string;
  key: string;
  value: string;
  secret: boolean;
}

function leaves(v: unknown, path: string, key: string, secret: boolean, out: Leaf[]): void {
  if (v instanceof Secret) return leaves(v.value, path, key, true, out);
  if (typeof v === "string") {
    if (!isUnknown(v)) out.push({ path, key, value: v, secret });
    return;
  }
  if (Array.isArray(v)) return v.forEach((x, i) => leaves(x, `${path}[${i}]`, key, secret, out));
  if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) leaves(x, path ? `${path}.${k}` : k, k, secret, out);
  }
}

/** The environment variable name of a container env entry ("NAME=value") or a command's environment key. */
function envName(leaf: Leaf): string | undefined {
  if (/^envs\[\d+\]$/.test(leaf.path)) {
    const eq = leaf.value.indexOf("=");
    return eq > 0 && eq < leaf.value.length - 1 ? leaf.value.slice(0, eq) : undefined;
  }
  if (/^environment\.[^.[\]]+$/.test(leaf.path) && leaf.value !== "") return leaf.key;
  return undefined;
}

/**
 * Inputs that carry a secret but are not marked secret (so the engine would
 * keep them in plain text in the state and show them in diffs). `props` are
 * the resource's inputs with their secret parts as `Secret` (as the policy
 * SDK gives them to a remediation). Messages name the input, never its value.
 */
export function findPlainSecrets(r: CheckedResource, s: StackSettings): string[] {
  const found: Leaf[] = [];
  leaves(r.props, "", "", false, found);
  const out: string[] = [];
  const fix = "Pass it as a secret Output (pulumi.secret(...), or a secret it derives from) so that it stays encrypted in the state.";
  for (const leaf of found) {
    if (leaf.secret || leaf.value === "") continue;
    const env = envName(leaf);
    const reasons: string[] = [];
    if (env !== undefined) {
      if (SECRET_ENV.test(env)) reasons.push(`the environment variable ${env} carries a secret`);
    } else if (SECRET_INPUT.test(leaf.key)) {
      reasons.push(`the input ${leaf.key} carries a secret`);
    }
    for (const c of SECRET_CONTENT) if (c.re.test(leaf.value)) reasons.push(`it holds ${c.what}`);
    if (s.secretValues.some((v) => leaf.value.includes(v))) reasons.push("it holds the value of a secret configuration key of this stack");
    if (reasons.length) out.push(`${label(r)}: input ${leaf.path} is not secret, but ${reasons.join(" and ")}. ${fix}`);
  }
  return out;
}
