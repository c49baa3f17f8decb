/**
 * The host firewall: one nftables table, `inet synaxic`, that drops what no
 * rule admits, and the script that puts it in force on a host.
 *
 * Hetzner's cloud firewall filters only the public interfaces, not the
 * private network, and hosts set up before this had no packet filter at
 * all. The table is the only thing the program ever changes in the kernel's
 * ruleset: Docker's tables and the distribution's stay as they are (no
 * `flush ruleset`, and /etc/nftables.conf is not touched).
 *
 * Pure functions from typed parameters to text; every value is checked, and
 * a bad one fails at render time with a message that names it.
 */
import { isIPv6 } from "node:net";
import { shellQuote } from "../lib/shell";
import { DEFAULT_APT_LOCK_TIMEOUT_SECONDS, renderAptGetFunction } from "./host";

export interface HostFirewallRule {
  /** Becomes the nft rule's comment: printable ASCII, no quotes or backslashes, at most 100 characters. */
  description: string;
  port: number;
  protocol: "tcp" | "udp";
  /** IPv4 or IPv6 networks in CIDR form; "0.0.0.0/0" is every IPv4 source, "::/0" every IPv6 source. */
  sources: string[];
}

export interface NftablesRulesetParams {
  rules: HostFirewallRule[];
  /** Name of the table in the inet family (default "synaxic"). */
  tableName?: string;
}

/** The cloud metadata service: Hetzner's, and every other cloud's, at the same link-local address. */
export const METADATA_ADDRESS = "169.254.169.254";

export const DEFAULT_FIREWALL_PATH = "/etc/synaxic/firewall.nft";
export const FIREWALL_UNIT = "synaxic-firewall.service";

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;

interface Cidr {
  family: 4 | 6;
  /** As written, lower-cased. */
  text: string;
  prefix: number;
}

function parseIPv4(s: string): bigint | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return undefined;
    v = (v << 8n) | BigInt(part);
  }
  return v;
}

function parseIPv6(s: string): bigint | undefined {
  if (!isIPv6(s) || s.includes("%")) return undefined;
  let groups: string[];
  let tail: bigint | undefined;
  let text = s;
  // An embedded IPv4 address ("::ffff:10.0.0.1") stands for the last two groups.
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tail = parseIPv4(text.slice(lastColon + 1));
    if (tail === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split("::");
  if (halves.length === 2) {
    const head = halves[0] ? halves[0].split(":") : [];
    const rest = halves[1] ? halves[1].split(":") : [];
    groups = [...head, ...Array<string>(8 - head.length - rest.length).fill("0"), ...rest];
  } else {
    groups = text.split(":");
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(`0x${g}`);
  if (tail !== undefined) v = (v & ~0xffffffffn) | tail;
  return v;
}

function parseCidr(where: string, source: string): Cidr {
  if (typeof source !== "string") throw new Error(`${where}: ${JSON.stringify(source)} is not a CIDR string`);
  const m = /^([^/]+)\/([0-9]{1,3})$/.exec(source);
  if (!m) throw new Error(`${where}: ${JSON.stringify(source)} is not in CIDR form (address/prefix, e.g. 10.0.0.5/32 or 2001:db8::/64)`);
  const [, address, prefixText] = m as unknown as [string, string, string];
  const prefix = Number(prefixText);
  const v4 = parseIPv4(address);
  const v6 = v4 === undefined ? parseIPv6(address) : undefined;
  if (v4 === undefined && v6 === undefined) throw new Error(`${where}: ${JSON.stringify(source)}: ${JSON.stringify(address)} is not an IPv4 or IPv6 address`);
  const bits = v4 !== undefined ? 32 : 128;
  if (!/^(0|[1-9][0-9]*)$/.test(prefixText) || prefix > bits) throw new Error(`${where}: ${JSON.stringify(source)}: the prefix length must be 0 to ${bits}`);
  const value = (v4 ?? v6)!;
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((value & hostMask) !== 0n) {
    // nft would silently widen "10.0.0.5/8" to 10.0.0.0/8: refuse it, it is almost always a typo for /32.
    throw new Error(`${where}: ${JSON.stringify(source)} has bits set after its /${prefix} prefix (a network is written with them cleared; a single host as /${bits})`);
  }
  return { family: v4 !== undefined ? 4 : 6, text: source.toLowerCase(), prefix };
}

function validateRule(r: HostFirewallRule, i: number): void {
  const where = `renderNftablesRuleset: rules[${i}]`;
  if (typeof r.description !== "string" || !/^[\x20-\x7e]{1,100}$/.test(r.description) || /["'\\]/.test(r.description) || r.description.trim() !== r.description) {
    throw new Error(
      `${where}.description ${JSON.stringify(r.description)} must be 1 to 100 printable ASCII characters without quotes, backslashes, line breaks or surrounding spaces (it becomes an nft comment)`,
    );
  }
  const named = `${where} (${r.description})`;
  if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) throw new Error(`${named}.port must be a whole number from 1 to 65535 (got ${String(r.port)})`);
  if (r.protocol !== "tcp" && r.protocol !== "udp") throw new Error(`${named}.protocol must be "tcp" or "udp" (got ${JSON.stringify(r.protocol)})`);
  if (!Array.isArray(r.sources) || r.sources.length === 0) throw new Error(`${named}.sources is empty: name the networks it admits ("0.0.0.0/0" and "::/0" for the world)`);
}

/** The nft lines that accept one rule's traffic: one per address family it admits. */
function ruleLines(r: HostFirewallRule, i: number): string[] {
  const cidrs = r.sources.map((s, j) => parseCidr(`renderNftablesRuleset: rules[${i}] (${r.description}).sources[${j}]`, s));
  const match = `${r.protocol} dport ${r.port}`;
  const comment = `comment "${r.description}"`;
  const families = ([4, 6] as const).map((family) => {
    const list = cidrs.filter((c) => c.family === family);
    return { family, world: list.some((c) => c.prefix === 0), texts: [...new Set(list.map((c) => c.text))] };
  });
  const [v4, v6] = families as [(typeof families)[0], (typeof families)[0]];
  // Both worlds: no source match at all.
  if (v4.world && v6.world) return [`${match} accept ${comment}`];
  const lines: string[] = [];
  for (const f of [v4, v6]) {
    if (f.world) lines.push(`meta nfproto ${f.family === 4 ? "ipv4" : "ipv6"} ${match} accept ${comment}`);
    else if (f.texts.length > 0) lines.push(`${match} ${f.family === 4 ? "ip" : "ip6"} saddr { ${f.texts.join(", ")} } accept ${comment}`);
  }
  return lines;
}

/**
 * An nft script that creates or replaces the table `inet <tableName>` and
 * nothing else. `nft -f` commits a whole file as one transaction (nftables
 * wiki, "Atomic rule replacement"), so the table is never seen half-built
 * or missing: the empty declaration makes the delete valid when the table
 * does not exist yet, and the delete drops every chain and set of the
 * previous version (a `flush table` would keep chains a new version no
 * longer has). Connection tracking is not part of the table: established
 * connections outlive the replacement.
 *
 * Input: policy drop; established and related traffic, loopback, ICMP and
 * ICMPv6 (IPv6 neighbour discovery and path MTU discovery need them) are
 * accepted, invalid packets dropped, then each rule accepts its port from
 * its sources. No forward filtering: the fleet's containers share the
 * host's network namespace, so their traffic is the host's.
 *
 * Output: only one rule. Because containers share the host's network
 * namespace, every container process could reach the cloud metadata
 * service (169.254.169.254), which hands out the server's user data;
 * connections to it are refused for every process whose uid is not 0.
 * cloud-init, which needs the service, runs as root. A container process
 * running as root (uid 0 without a user namespace) is not stopped by this.
 */
export function renderNftablesRuleset(p: NftablesRulesetParams): string {
  const table = p.tableName ?? "synaxic";
  if (!TABLE_NAME.test(table)) throw new Error(`renderNftablesRuleset: tableName ${JSON.stringify(table)} must be a letter then up to 31 letters, digits or "_"`);
  if (!Array.isArray(p.rules) || p.rules.length === 0) {
    throw new Error("renderNftablesRuleset: rules is empty: the input policy is drop, so a host with no rule would refuse even SSH");
  }
  p.rules.forEach(validateRule);
  const accepts = p.rules.flatMap(ruleLines);
  const indent = (lines: string[]) => lines.map((l) => `\t\t${l}`).join("\n");
  return `# Synaxic host firewall. Replaces the table inet ${table} and nothing else;
# load it with nft -f (one transaction).
table inet ${table} {}
delete table inet ${table}
table inet ${table} {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
${indent([
  "ct state established,related accept",
  "ct state invalid drop",
  'iifname "lo" accept',
  "meta l4proto icmp accept",
  "meta l4proto ipv6-icmp accept",
  ...accepts,
])}
\t}

\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\tip daddr ${METADATA_ADDRESS} meta skuid != 0 reject comment "metadata service: root only"
\t}
}
`;
}

export interface FirewallApplyParams {
  /** An nft script that defines exactly one table in the inet family (renderNftablesRuleset). */
  ruleset: string;
  /** Where the ruleset is kept on the host (default /etc/synaxic/firewall.nft). */
  path?: string;
  /** The systemd unit that loads it at boot (default /etc/systemd/system/synaxic-firewall.service). */
  unitPath?: string;
  /** How long apt-get waits for another package manager when nftables must be installed, in seconds (default 300). */
  aptLockTimeoutSeconds?: number;
}

const PLAIN_PATH = /^\/[A-Za-z0-9_./-]+$/;

/**
 * The statements of an nft script outside any block, each with its blocks
 * reduced to "{}": quoted strings and comments are skipped.
 */
function topLevelStatements(script: string): string[] {
  const out: string[] = [];
  let cur = "";
  let depth = 0;
  let quoted = false;
  let comment = false;
  for (const ch of script) {
    if (comment) {
      if (ch !== "\n") continue;
      comment = false;
    }
    if (quoted) {
      if (ch === '"') quoted = false;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === "#") comment = true;
    else if (ch === "{") {
      if (depth === 0) cur += "{";
      depth++;
    } else if (ch === "}") {
      depth--;
      if (depth < 0) throw new Error("renderFirewallApplyScript: the ruleset has an unmatched \"}\"");
      if (depth === 0) cur += "}";
    } else if (depth === 0) {
      if (ch === "\n" || ch === ";") {
        if (cur.trim()) out.push(cur.trim());
        cur = "";
      } else cur += ch;
    }
  }
  if (depth !== 0 || quoted) throw new Error("renderFirewallApplyScript: the ruleset has an unclosed block or string");
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/**
 * The one inet table an nft script changes, or an error naming the first
 * statement that would change anything else (another table, `flush
 * ruleset`, an include).
 */
function tableOf(ruleset: string): string {
  const names = new Set<string>();
  for (const st of topLevelStatements(ruleset)) {
    const m =
      /^(?:(?:add|create|delete|destroy|flush)\s+)?table\s+inet\s+([A-Za-z][A-Za-z0-9_]*)\s*(?:\{\})?$/.exec(st) ??
      /^(?:add|create|insert|replace|delete|destroy|flush)\s+(?:chain|rule|set|map|element|flowtable|counter|quota)\s+inet\s+([A-Za-z][A-Za-z0-9_]*)(?:\s.*)?$/.exec(st);
    if (!m) throw new Error(`renderFirewallApplyScript: the ruleset may change one inet table and nothing else; refusing ${JSON.stringify(st)}`);
    names.add(m[1]!);
  }
  if (names.size !== 1) throw new Error(`renderFirewallApplyScript: the ruleset must change exactly one inet table (found ${names.size === 0 ? "none" : [...names].join(", ")})`);
  const name = [...names][0]!;
  if (!TABLE_NAME.test(name)) throw new Error(`renderFirewallApplyScript: table name ${JSON.stringify(name)} is longer than 32 characters`);
  return name;
}

/**
 * A bash script, fed on stdin and run as root, that puts a ruleset in
 * force and keeps it there across reboots:
 *
 * - installs nftables if `nft` is missing;
 * - checks the ruleset with `nft -c -f` before anything changes: a ruleset
 *   the kernel would refuse leaves the file, the live table and the unit as
 *   they were;
 * - applies it when it differs from the file (which it then replaces, mode
 *   0600) or when the live table is not what the file last produced (a
 *   reboot without the unit, a hand edit); otherwise says it is unchanged;
 * - when systemd is the init system, installs and enables a oneshot unit
 *   that loads the file before the network comes up and before Docker
 *   starts; /etc/nftables.conf and nftables.service stay the
 *   distribution's. Without systemd it says persistence was skipped.
 *
 * The listing of the table as last applied is kept next to the file
 * (<path>.applied) to tell an unchanged host from a drifted one.
 */
export function renderFirewallApplyScript(p: FirewallApplyParams): string {
  if (typeof p.ruleset !== "string" || p.ruleset.trim() === "") throw new Error("renderFirewallApplyScript: ruleset is empty");
  if (p.ruleset.includes("SYNAXIC_EOF")) throw new Error("renderFirewallApplyScript: ruleset contains the heredoc marker SYNAXIC_EOF");
  const table = tableOf(p.ruleset);
  const path = p.path ?? DEFAULT_FIREWALL_PATH;
  const unitPath = p.unitPath ?? `/etc/systemd/system/${FIREWALL_UNIT}`;
  if (!PLAIN_PATH.test(path)) throw new Error(`renderFirewallApplyScript: path ${JSON.stringify(path)} must be a plain absolute path`);
  if (!PLAIN_PATH.test(unitPath) || !/\/[A-Za-z0-9_.-]+\.service$/.test(unitPath)) {
    throw new Error(`renderFirewallApplyScript: unitPath ${JSON.stringify(unitPath)} must be a plain absolute path ending in .service`);
  }
  const ruleset = p.ruleset.endsWith("\n") ? p.ruleset : `${p.ruleset}\n`;
  const aptFn = renderAptGetFunction(p.aptLockTimeoutSeconds ?? DEFAULT_APT_LOCK_TIMEOUT_SECONDS);
  return `#!/usr/bin/env bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then echo "firewall: must run as root" >&2; exit 1; fi
SUDO=""
${aptFn}
path=${shellQuote(path)}
applied="$path.applied"
unit_path=${shellQuote(unitPath)}
unit=$(basename "$unit_path")
table=${shellQuote(table)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/ruleset.nft" <<'SYNAXIC_EOF'
${ruleset}SYNAXIC_EOF

if ! command -v nft >/dev/null 2>&1; then
  echo "firewall: installing nftables"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends nftables
fi
nft_bin=$(command -v nft)

# The kernel checks the whole transaction without committing it.
if ! out=$(nft -c -f "$work/ruleset.nft" 2>&1); then
  printf '%s\\n' "$out" >&2
  echo "firewall: the new ruleset does not pass nft -c; nothing was changed" >&2
  exit 1
fi

live=$(nft list table inet "$table" 2>/dev/null || true)
if cmp -s "$work/ruleset.nft" "$path" && [ -n "$live" ] && [ -f "$applied" ] && [ "$live" = "$(cat "$applied")" ]; then
  echo "firewall: table inet $table unchanged"
else
  nft -f "$work/ruleset.nft"
  # A directory that exists keeps its mode: /etc/synaxic holds the other services' files too.
  [ -d "$(dirname "$path")" ] || install -d -m 0755 "$(dirname "$path")"
  install -m 0600 "$work/ruleset.nft" "$path"
  nft list table inet "$table" > "$work/applied"
  install -m 0600 "$work/applied" "$applied"
  echo "firewall: table inet $table applied from $path"
fi

# "offline" (or no systemctl at all): PID 1 is not systemd (systemctl(1), is-system-running).
state=$(systemctl is-system-running 2>/dev/null || true)
if [ -z "$state" ] || [ "$state" = offline ]; then
  echo "firewall: persistence skipped: systemd is not running, so the table lasts until the next reboot"
  exit 0
fi
cat > "$work/unit" <<SYNAXIC_EOF
[Unit]
Description=Synaxic host firewall (nftables table inet $table)
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target docker.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$nft_bin -f $path

[Install]
WantedBy=sysinit.target
SYNAXIC_EOF
if cmp -s "$work/unit" "$unit_path"; then
  unit_changed=0
else
  [ -d "$(dirname "$unit_path")" ] || install -d -m 0755 "$(dirname "$unit_path")"
  install -m 0644 "$work/unit" "$unit_path"
  systemctl daemon-reload
  unit_changed=1
fi
if [ "$(systemctl is-enabled "$unit" 2>/dev/null || true)" != enabled ]; then
  if ! out=$(systemctl enable "$unit" 2>&1); then printf '%s\\n' "$out" >&2; exit 1; fi
  echo "firewall: $unit installed and enabled: the table is loaded at boot, before the network and Docker"
elif [ "$unit_changed" -eq 1 ]; then
  echo "firewall: $unit updated"
else
  echo "firewall: $unit unchanged"
fi
`;
}

/**
 * Takes the firewall off a host (when its stack is destroyed): the table,
 * the boot unit and the files, whichever of them exist. What else the host
 * runs is its owner's again.
 */
export function renderFirewallRemoveScript(p: { tableName?: string; path?: string; unitPath?: string } = {}): string {
  const table = p.tableName ?? "synaxic";
  const path = p.path ?? DEFAULT_FIREWALL_PATH;
  const unitPath = p.unitPath ?? `/etc/systemd/system/${FIREWALL_UNIT}`;
  if (!TABLE_NAME.test(table)) throw new Error(`renderFirewallRemoveScript: tableName ${JSON.stringify(table)} is not a table name`);
  if (!PLAIN_PATH.test(path) || !PLAIN_PATH.test(unitPath)) throw new Error("renderFirewallRemoveScript: paths must be plain absolute paths");
  return `#!/usr/bin/env bash
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then echo "firewall: must run as root" >&2; exit 1; fi
unit_path=${shellQuote(unitPath)}
if [ -f "$unit_path" ]; then
  systemctl disable "$(basename "$unit_path")" >/dev/null 2>&1 || true
  rm -f "$unit_path"
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
if command -v nft >/dev/null 2>&1 && nft list table inet ${shellQuote(table)} >/dev/null 2>&1; then
  nft delete table inet ${shellQuote(table)}
  echo "firewall: table inet ${table} removed"
fi
rm -f ${shellQuote(path)} ${shellQuote(`${path}.applied`)}
`;
}
