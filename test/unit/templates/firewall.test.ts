/**
 * The firewall templates without a kernel: what the ruleset says for each
 * kind of rule, every input it refuses, and the apply script's decisions
 * (install nftables, check before applying, apply only on a change or a
 * drift, persist with systemd or say why not) run by bash against
 * recording stand-ins for nft, apt-get and systemctl on a PATH this test
 * builds. test/integration/host-firewall.test.ts runs the same text on real
 * nftables.
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderFirewallApplyScript, renderNftablesRuleset, type FirewallApplyParams, type HostFirewallRule } from "../../../templates/firewall";

const RULES: HostFirewallRule[] = [
  { description: "ssh from the admins", port: 22, protocol: "tcp", sources: ["203.0.113.0/24", "2001:db8:1::/48", "198.51.100.7/32"] },
  { description: "http and https: the world", port: 443, protocol: "tcp", sources: ["0.0.0.0/0", "::/0"] },
  { description: "postgres from the private network", port: 5432, protocol: "tcp", sources: ["10.10.0.0/16"] },
  { description: "legacy clients, IPv4 only", port: 8443, protocol: "tcp", sources: ["0.0.0.0/0"] },
  { description: "wireguard", port: 51820, protocol: "udp", sources: ["10.10.0.0/16", "fd00:10::/64"] },
];

/** The lines of the input chain after the fixed preamble. */
function ruleLines(ruleset: string): string[] {
  const input = /chain input \{\n([\s\S]*?)\n\t\}/.exec(ruleset)![1]!;
  return input.split("\n").map((l) => l.trim()).slice(6);
}

describe("nftables ruleset", () => {
  it("replaces one table, inet synaxic, in one transaction, and touches nothing else", () => {
    const text = renderNftablesRuleset({ rules: RULES });
    const statements = text.split("\n").filter((l) => /^\S/.test(l) && !l.startsWith("#") && l !== "}");
    expect(statements).toEqual(["table inet synaxic {}", "delete table inet synaxic", "table inet synaxic {"]);
    expect(text).not.toMatch(/flush|nftables\.conf/);
    expect(text).toMatchSnapshot();
  });

  it("drops by default and admits established, loopback and ICMP/ICMPv6 first", () => {
    const text = renderNftablesRuleset({ rules: RULES });
    const input = /chain input \{\n([\s\S]*?)\n\t\}/.exec(text)![1]!.split("\n").map((l) => l.trim());
    expect(input.slice(0, 6)).toEqual([
      "type filter hook input priority filter; policy drop;",
      "ct state established,related accept",
      "ct state invalid drop",
      'iifname "lo" accept',
      "meta l4proto icmp accept",
      "meta l4proto ipv6-icmp accept",
    ]);
    expect(text).not.toMatch(/chain forward/);
  });

  it("splits sources by family, and the world is no source match at all", () => {
    expect(ruleLines(renderNftablesRuleset({ rules: RULES }))).toEqual([
      'tcp dport 22 ip saddr { 203.0.113.0/24, 198.51.100.7/32 } accept comment "ssh from the admins"',
      'tcp dport 22 ip6 saddr { 2001:db8:1::/48 } accept comment "ssh from the admins"',
      'tcp dport 443 accept comment "http and https: the world"',
      'tcp dport 5432 ip saddr { 10.10.0.0/16 } accept comment "postgres from the private network"',
      'meta nfproto ipv4 tcp dport 8443 accept comment "legacy clients, IPv4 only"',
      'udp dport 51820 ip saddr { 10.10.0.0/16 } accept comment "wireguard"',
      'udp dport 51820 ip6 saddr { fd00:10::/64 } accept comment "wireguard"',
    ]);
  });

  it("the IPv6 world with IPv4 networks: every IPv6 source, only those IPv4 ones; duplicates once", () => {
    const lines = ruleLines(renderNftablesRuleset({ rules: [{ description: "x", port: 1, protocol: "tcp", sources: ["::/0", "10.0.0.0/8", "10.0.0.0/8", "2001:DB8::/32"] }] }));
    expect(lines).toEqual(['tcp dport 1 ip saddr { 10.0.0.0/8 } accept comment "x"', 'meta nfproto ipv6 tcp dport 1 accept comment "x"']);
  });

  it("refuses metadata traffic to every uid but root, and filters no other output", () => {
    const text = renderNftablesRuleset({ rules: RULES });
    const output = /chain output \{\n([\s\S]*?)\n\t\}/.exec(text)![1]!.split("\n").map((l) => l.trim());
    expect(output).toEqual(["type filter hook output priority filter; policy accept;", 'ip daddr 169.254.169.254 meta skuid != 0 reject comment "metadata service: root only"']);
  });

  it("takes another table name", () => {
    const text = renderNftablesRuleset({ rules: RULES, tableName: "fleet_fw" });
    expect(text).toContain("table inet fleet_fw {}\ndelete table inet fleet_fw\ntable inet fleet_fw {\n");
    expect(text).not.toContain("synaxic {");
  });

  const rule = (extra: Partial<HostFirewallRule>): HostFirewallRule => ({ description: "ssh", port: 22, protocol: "tcp", sources: ["10.0.0.0/8"], ...extra });
  const render = (extra: Partial<HostFirewallRule>) => () => renderNftablesRuleset({ rules: [rule({}), rule(extra)] });

  it("refuses sources that are not CIDRs, naming the rule and the source", () => {
    const bad: [string, RegExp][] = [
      ["10.0.0.1", /rules\[1\] \(ssh\)\.sources\[0\]: "10\.0\.0\.1" is not in CIDR form/],
      ["10.0.0.256/32", /sources\[0\]: "10\.0\.0\.256\/32": "10\.0\.0\.256" is not an IPv4 or IPv6 address/],
      ["010.0.0.0/8", /not an IPv4 or IPv6 address/],
      ["10.0.0/8", /not an IPv4 or IPv6 address/],
      ["10.0.0.0/33", /prefix length must be 0 to 32/],
      ["10.0.0.0/08", /prefix length must be 0 to 32/],
      ["2001:db8::/129", /prefix length must be 0 to 128/],
      ["fe80::1%eth0/64", /not an IPv4 or IPv6 address/],
      ["2001:db8:::1/64", /not an IPv4 or IPv6 address/],
      ["10.0.0.0/ 8", /not in CIDR form/],
      ["example.com/32", /not an IPv4 or IPv6 address/],
      ["10.0.0.5/8", /"10\.0\.0\.5\/8" has bits set after its \/8 prefix/],
      ["2001:db8::1/64", /has bits set after its \/64 prefix/],
      ["::ffff:10.0.0.1/120", /has bits set after its \/120 prefix/],
      ["1.2.3.4/0", /has bits set after its \/0 prefix/],
    ];
    for (const [source, message] of bad) expect(render({ sources: [source] }), source).toThrow(message);
    expect(render({ sources: ["10.0.0.0/8", 42 as unknown as string] })).toThrow(/sources\[1\]: 42 is not a CIDR string/);
    for (const good of ["10.0.0.5/32", "0.0.0.0/0", "::/0", "2001:db8::/32", "::ffff:10.0.0.0/104", "::1/128", "fd00::/8", "2001:db8:0:0:0:0:0:1/128"]) {
      expect(render({ sources: [good] }), good).not.toThrow();
    }
  });

  it("refuses a rule with no sources, a bad port or protocol", () => {
    expect(render({ sources: [] })).toThrow(/rules\[1\] \(ssh\)\.sources is empty/);
    for (const port of [0, 65536, 22.5, -1, Number.NaN]) expect(render({ port }), String(port)).toThrow(/rules\[1\] \(ssh\)\.port must be a whole number from 1 to 65535/);
    expect(render({ protocol: "icmp" as "tcp" })).toThrow(/rules\[1\] \(ssh\)\.protocol must be "tcp" or "udp"/);
    expect(render({ port: 65535 })).not.toThrow();
  });

  it("refuses descriptions that cannot be an nft comment", () => {
    for (const description of ["", 'say "hi"', "it's", "back\\slash", "two\nlines", "tab\there", " padded", "café", "x".repeat(101)]) {
      expect(render({ description }), JSON.stringify(description)).toThrow(/rules\[1\]\.description .* must be 1 to 100 printable ASCII characters/);
    }
    expect(render({ description: "a;b # c {d} (e) 100%" })).not.toThrow();
  });

  it("refuses no rules at all, and a table name nft would not take", () => {
    expect(() => renderNftablesRuleset({ rules: [] })).toThrow(/rules is empty/);
    for (const tableName of ["", "1abc", "a-b", "a b", "x".repeat(33)]) expect(() => renderNftablesRuleset({ rules: RULES, tableName }), tableName).toThrow(/tableName .* must be a letter/);
  });
});

// ---------------------------------------------------------------------------

/** Real programs the apply script and the stand-ins get: what a minimal Debian image has. */
const TOOLS = ["bash", "basename", "cat", "chmod", "cmp", "cp", "date", "dirname", "env", "grep", "install", "mkdir", "mktemp", "rm", "sleep", "touch"];
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
function which(tool: string): string {
  const r = spawnSync("bash", ["-c", `command -v ${tool}`], { env: { PATH: SYSTEM_PATH }, encoding: "utf8" });
  if (r.status !== 0 || !r.stdout.startsWith("/")) throw new Error(`test setup: ${tool} not found on ${SYSTEM_PATH}`);
  return r.stdout.trim();
}
const BASH = which("bash");

/**
 * nft as a file: `-c -f F` refuses a file containing "BAD"; `-f F` makes F
 * the live table ($STATE/live); `list table inet T` prints it.
 */
const NFT = [
  'case "$1" in',
  '  -c) if grep -q BAD "$3"; then echo "$3:1:1-3: Error: syntax error" >&2; exit 1; fi ;;',
  '  -f) cp "$2" "$STATE/live" ;;',
  '  list) [ -e "$STATE/live" ] || { echo "Error: No such file or directory" >&2; exit 1; }; echo "listing of $4"; cat "$STATE/live" ;;',
  "esac",
].join("\n");

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Host {
  bin: string;
  state: string;
  add(name: string, body: string): void;
  remove(name: string): void;
  params(extra?: Partial<FirewallApplyParams>): FirewallApplyParams;
  run(script: string): Promise<{ code: number | null; out: string; err: string }>;
  calls(): string[];
  resetCalls(): void;
}

function host(opts: { systemd: "running" | "offline" | "absent"; nft?: boolean; uid?: number }): Host {
  const dir = mkdtempSync(join(tmpdir(), "synaxic-fw-"));
  dirs.push(dir);
  const bin = join(dir, "bin");
  const state = join(dir, "state");
  mkdirSync(bin);
  mkdirSync(state);
  for (const t of TOOLS) symlinkSync(which(t), join(bin, t));
  const stub = (name: string, body: string) => `#!${BASH}\nSTATE=${state}\nBIN=${bin}\necho "${name} $*" >> "$STATE/calls"\n${body}\n`;
  const add = (name: string, body: string) => {
    writeFileSync(join(bin, name), stub(name, body));
    chmodSync(join(bin, name), 0o755);
  };
  add("id", `[ "$1" = -u ] && echo ${opts.uid ?? 0}`);
  if (opts.nft !== false) add("nft", NFT);
  // Installing nftables puts the nft stand-in on the PATH.
  writeFileSync(join(state, "nft.stub"), stub("nft", NFT));
  add("apt-get", 'for a in "$@"; do if [ "$a" = nftables ]; then cp "$STATE/nft.stub" "$BIN/nft"; chmod 755 "$BIN/nft"; fi; done');
  if (opts.systemd === "running") {
    add("systemctl", ['case "$1" in', "  is-system-running) echo running ;;", '  is-enabled) [ -e "$STATE/enabled" ] && echo enabled || { echo disabled; exit 1; } ;;', '  enable) touch "$STATE/enabled" ;;', "esac"].join("\n"));
  } else if (opts.systemd === "offline") {
    add("systemctl", '[ "$1" = is-system-running ] && { echo offline; exit 1; }; echo "System has not been booted with systemd as init system (PID 1). Can\'t operate." >&2; exit 1');
  }
  const h: Host = {
    bin,
    state,
    add,
    remove: (name) => rmSync(join(bin, name)),
    params: (extra = {}) => ({ ruleset: renderNftablesRuleset({ rules: RULES }), path: join(state, "etc", "synaxic", "firewall.nft"), unitPath: join(state, "units", "synaxic-firewall.service"), ...extra }),
    run: (script) =>
      new Promise((resolve, reject) => {
        const child = spawn(BASH, ["-s"], { env: { PATH: bin, TMPDIR: state, LC_ALL: "C" }, timeout: 30_000 });
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        child.on("error", reject);
        child.on("close", (code) => resolve({ code, out, err }));
        child.stdin.end(script);
      }),
    calls: () => (existsSync(join(state, "calls")) ? readFileSync(join(state, "calls"), "utf8").trim().split("\n").filter(Boolean) : []),
    resetCalls: () => writeFileSync(join(state, "calls"), ""),
  };
  return h;
}

describe.concurrent("firewall apply script", () => {
  it("checks, applies, keeps the file 0600, installs and enables the unit; a second run changes nothing and says so", async ({ expect }) => {
    const h = host({ systemd: "running" });
    const p = h.params();
    const script = renderFirewallApplyScript(p);
    const first = await h.run(script);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain(`firewall: table inet synaxic applied from ${p.path}`);
    expect(first.out).toContain("firewall: synaxic-firewall.service installed and enabled");
    const nftCalls = h.calls().filter((c) => c.startsWith("nft"));
    // Checked before it is applied.
    expect(nftCalls.findIndex((c) => c.startsWith("nft -c -f"))).toBeLessThan(nftCalls.findIndex((c) => /^nft -f /.test(c)));
    expect(readFileSync(p.path!, "utf8")).toBe(p.ruleset);
    expect(statSync(p.path!).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(h.state, "live"), "utf8")).toBe(p.ruleset);
    const unit = readFileSync(p.unitPath!, "utf8");
    expect(unit).toContain(`ExecStart=${join(h.bin, "nft")} -f ${p.path}\n`);
    for (const line of ["Type=oneshot", "RemainAfterExit=yes", "Wants=network-pre.target", "Before=network-pre.target docker.service shutdown.target", "DefaultDependencies=no", "WantedBy=sysinit.target"]) {
      expect(unit).toContain(`${line}\n`);
    }
    expect(h.calls()).toEqual(expect.arrayContaining(["systemctl daemon-reload", "systemctl enable synaxic-firewall.service"]));
    expect(h.calls().filter((c) => c.startsWith("apt-get"))).toEqual([]);

    h.resetCalls();
    const second = await h.run(script);
    expect(second.code, second.err).toBe(0);
    expect(second.out).toContain("firewall: table inet synaxic unchanged");
    expect(second.out).toContain("firewall: synaxic-firewall.service unchanged");
    expect(h.calls().filter((c) => /^nft -f |^systemctl (enable|daemon-reload)|^install /.test(c))).toEqual([]);
  });

  it("leaves the mode of a directory that already exists (the other services' files live there too)", async ({ expect }) => {
    const h = host({ systemd: "offline" });
    const p = h.params();
    mkdirSync(join(h.state, "etc", "synaxic"), { recursive: true, mode: 0o751 });
    chmodSync(join(h.state, "etc", "synaxic"), 0o751);
    const r = await h.run(renderFirewallApplyScript(p));
    expect(r.code, r.err).toBe(0);
    expect(statSync(join(h.state, "etc", "synaxic")).mode & 0o777).toBe(0o751);
    expect(statSync(p.path!).mode & 0o777).toBe(0o600);
  });

  it("re-applies an unchanged file when the live table is gone or differs (a reboot without the unit, a hand edit)", async ({ expect }) => {
    const h = host({ systemd: "offline" });
    const script = renderFirewallApplyScript(h.params());
    expect((await h.run(script)).code).toBe(0);
    rmSync(join(h.state, "live"));
    h.resetCalls();
    const afterReboot = await h.run(script);
    expect(afterReboot.out).toContain("applied");
    expect(h.calls().filter((c) => /^nft -f /.test(c)).length).toBe(1);

    writeFileSync(join(h.state, "live"), "table inet synaxic { }\n");
    h.resetCalls();
    const afterEdit = await h.run(script);
    expect(afterEdit.out).toContain("applied");
    expect(h.calls().filter((c) => /^nft -f /.test(c)).length).toBe(1);
  });

  it("a ruleset nft -c refuses changes nothing: not the file, not the live table, not the unit", async ({ expect }) => {
    const h = host({ systemd: "running" });
    const good = h.params();
    expect((await h.run(renderFirewallApplyScript(good))).code).toBe(0);
    const unitBefore = readFileSync(good.unitPath!, "utf8");
    h.resetCalls();
    const bad = await h.run(renderFirewallApplyScript(h.params({ ruleset: "table inet synaxic {\n\tchain input { BAD }\n}\n" })));
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("Error: syntax error");
    expect(bad.err).toContain("firewall: the new ruleset does not pass nft -c; nothing was changed");
    expect(readFileSync(good.path!, "utf8")).toBe(good.ruleset);
    expect(readFileSync(join(h.state, "live"), "utf8")).toBe(good.ruleset);
    expect(readFileSync(good.unitPath!, "utf8")).toBe(unitBefore);
    expect(h.calls().filter((c) => !c.startsWith("id ") && !c.startsWith("nft -c "))).toEqual([]);
  });

  it("without systemd it applies, writes no unit and says persistence was skipped", async ({ expect }) => {
    for (const systemd of ["offline", "absent"] as const) {
      const h = host({ systemd });
      const p = h.params();
      const r = await h.run(renderFirewallApplyScript(p));
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain("firewall: table inet synaxic applied");
      expect(r.out).toContain("firewall: persistence skipped: systemd is not running");
      expect(existsSync(p.unitPath!)).toBe(false);
      expect(h.calls().filter((c) => /^systemctl (enable|daemon-reload)/.test(c))).toEqual([]);
    }
  });

  it("installs nftables when nft is missing, with apt's lock wait and without recommends", async ({ expect }) => {
    const h = host({ systemd: "offline", nft: false });
    const r = await h.run(renderFirewallApplyScript(h.params({ aptLockTimeoutSeconds: 120 })));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain("firewall: installing nftables");
    expect(h.calls().filter((c) => c.startsWith("apt-get"))).toEqual([
      "apt-get -o DPkg::Lock::Timeout=120 update -qq",
      "apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends nftables",
    ]);
    expect(r.out).toContain("applied");
  });

  it("refuses to run as anyone but root", async ({ expect }) => {
    const h = host({ systemd: "offline", uid: 1000 });
    const r = await h.run(renderFirewallApplyScript(h.params()));
    expect(r.code).toBe(1);
    expect(r.err).toContain("firewall: must run as root");
    expect(h.calls().filter((c) => c.startsWith("nft"))).toEqual([]);
  });

  it("snapshot", async ({ expect }) => {
    expect(renderFirewallApplyScript({ ruleset: renderNftablesRuleset({ rules: RULES.slice(0, 2) }) })).toMatchSnapshot();
  });
});

describe("firewall apply script: what it refuses", () => {
  const ruleset = renderNftablesRuleset({ rules: RULES });
  it("refuses a ruleset that would change anything but one inet table", () => {
    const cases: [string, RegExp][] = [
      ["flush ruleset\n" + ruleset, /refusing "flush ruleset"/],
      [ruleset + "table ip filter {\n}\n", /refusing "table ip filter \{\}"/],
      [ruleset + "table inet other {}\n", /exactly one inet table \(found synaxic, other\)/],
      ['include "/etc/nftables.conf"\n' + ruleset, /refusing "include/],
      [ruleset + "add rule ip nat postrouting masquerade\n", /refusing "add rule ip nat/],
      ["table inet synaxic {}; flush ruleset\n", /refusing "flush ruleset"/],
      ["# only a comment\n", /exactly one inet table \(found none\)/],
      ["table inet synaxic {\n", /unclosed block/],
      ["}\n", /unmatched/],
      ["", /ruleset is empty/],
      [ruleset + "# SYNAXIC_EOF\n", /heredoc marker/],
    ];
    for (const [text, message] of cases) expect(() => renderFirewallApplyScript({ ruleset: text }), text.slice(0, 40)).toThrow(message);
  });

  it("braces, semicolons and '#' inside comments and quoted strings are not statements", () => {
    const text = renderNftablesRuleset({ rules: [{ description: "a;b # flush ruleset {d}", port: 22, protocol: "tcp", sources: ["10.0.0.0/8"] }] });
    expect(() => renderFirewallApplyScript({ ruleset: text })).not.toThrow();
    expect(() => renderFirewallApplyScript({ ruleset: "# flush ruleset\ntable inet synaxic {}\n" })).not.toThrow();
  });

  it("refuses paths that are not plain absolute paths", () => {
    expect(() => renderFirewallApplyScript({ ruleset, path: "etc/fw.nft" })).toThrow(/path "etc\/fw.nft" must be a plain absolute path/);
    expect(() => renderFirewallApplyScript({ ruleset, path: "/etc/fw $(id).nft" })).toThrow(/path .* must be a plain absolute path/);
    expect(() => renderFirewallApplyScript({ ruleset, unitPath: "/etc/systemd/system/fw.timer" })).toThrow(/unitPath .* ending in \.service/);
    expect(() => renderFirewallApplyScript({ ruleset, aptLockTimeoutSeconds: -5 })).toThrow(/lockTimeoutSeconds must be a positive whole number/);
  });
});
