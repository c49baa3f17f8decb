/**
 * The rendered firewall on real nftables. "server" gets the apply script
 * (bash, as root, inside its network namespace); "allowed" and "denied" are
 * clients on the same bridge, with IPv4 and IPv6 addresses; "metadata"
 * holds 169.254.169.254 and stands for the cloud's metadata service; the
 * test process itself (on the bridge as well) is the administrator, whose
 * SSH-like connection is open while the firewall goes up and is changed.
 *
 * Listeners and clients are small node programs run inside the namespaces.
 * A client reports "connected" only after the server's greeting or echo
 * came back, "timeout" when nothing came (a drop), or the socket error.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import net from "node:net";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { TestNet, waitFor, type Host } from "../rig/net";
import { METADATA_ADDRESS, renderFirewallApplyScript, renderFirewallRemoveScript, renderNftablesRuleset, type HostFirewallRule } from "../../templates/firewall";

const TCP_PORTS = [22, 80, 5432, 9999];
const UDP_PORT = 51820;
/** How long a client waits before calling a connection dropped. */
const DROP_MS = 1_500;

/** Echo servers: a greeting "<name>:<port>" on connect, then every byte back; UDP datagrams echoed. */
const SERVER = `
const net = require("net"), dgram = require("dgram");
const [name, tcp, udp, host] = process.argv.slice(1);
const tcpPorts = tcp.split(",").filter(Boolean), udpPorts = udp.split(",").filter(Boolean);
let up = 0;
const ready = () => { if (++up === tcpPorts.length + udpPorts.length) console.log("listening"); };
for (const p of tcpPorts) net.createServer((s) => { s.on("error", () => {}); s.write(name + ":" + p + "\\n"); s.on("data", (d) => s.write(d)); }).listen(+p, host, ready);
for (const p of udpPorts) { const u = dgram.createSocket("udp6"); u.on("message", (m, r) => u.send(name + ":" + p + ":" + m, r.port, r.address)); u.bind(+p, host, ready); }
`;

/** One connection attempt; prints {"result", "data"} as JSON. */
const CLIENT = `
const net = require("net"), dgram = require("dgram");
const [proto, host, port, ms] = process.argv.slice(1);
const done = (result, data = "") => { console.log(JSON.stringify({ result, data })); process.exit(0); };
setTimeout(() => done("timeout"), +ms);
if (proto === "tcp") {
  const s = net.connect({ host, port: +port });
  s.on("data", (d) => done("connected", d.toString().trim()));
  s.on("error", (e) => done(e.code || "error", e.message));
} else {
  const u = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  u.on("message", (m) => done("connected", m.toString()));
  u.on("error", (e) => done(e.code || "error", e.message));
  u.send("ping", +port, host);
}
`;

interface Attempt {
  result: string;
  data: string;
}

let tnet: TestNet;
let server: Host;
let allowed: Host;
let denied: Host;
let metadata: Host;
let v6: Record<string, string>;
let path: string;
let unitPath: string;
let admin: net.Socket;
let adminData = "";

async function attempt(from: Host, proto: "tcp" | "udp", host: string, port: number, user?: string): Promise<Attempt> {
  const r = await from.exec(["node", "-e", CLIENT, proto, host, String(port), String(DROP_MS)], user ? { user } : {});
  return JSON.parse(r.stdout.trim()) as Attempt;
}

/** Sends a line on the administrator's connection and waits for it to come back. */
async function adminRoundTrip(line: string): Promise<boolean> {
  admin.write(`${line}\n`);
  return waitFor(`"${line}" echoed on the admin connection`, async () => adminData.includes(`${line}\n`), 3_000, 20);
}

function rules(extra: HostFirewallRule[] = []): HostFirewallRule[] {
  return [
    { description: "ssh: admin and allowed", port: 22, protocol: "tcp", sources: [`${tnet.rootIp}/32`, `${allowed.ip}/32`, `${v6.allowed}/128`] },
    { description: "http: the world", port: 80, protocol: "tcp", sources: ["0.0.0.0/0", "::/0"] },
    { description: "postgres: allowed only", port: 5432, protocol: "tcp", sources: [`${allowed.ip}/32`] },
    { description: "wireguard; # {udp}", port: UDP_PORT, protocol: "udp", sources: [`${allowed.ip}/32`, `${v6.allowed}/128`] },
    ...extra,
  ];
}

async function apply(ruleset: string, allowFail = false) {
  const script = renderFirewallApplyScript({ ruleset, path, unitPath });
  return server.exec(["bash", "-s"], { input: script, allowFail });
}

const nft = async (...args: string[]) => (await server.exec(["nft", ...args])).stdout;
/** The kernel's handle of our table: a new one each time the table is replaced. */
const tableHandle = async () => /table inet synaxic \{ # handle (\d+)/.exec(await nft("-a", "list", "table", "inet", "synaxic"))?.[1];

beforeAll(async () => {
  tnet = await TestNet.create(["server", "allowed", "denied", "metadata"]);
  server = tnet.host("server");
  allowed = tnet.host("allowed");
  denied = tnet.host("denied");
  metadata = tnet.host("metadata");
  const k = tnet.subnet.split(".")[2];
  v6 = {};
  let i = 1;
  for (const h of [server, allowed, denied, metadata]) {
    v6[h.name] = `fd5e:${k}::${i++}`;
    await h.exec(["ip", "addr", "add", `${v6[h.name]}/64`, "dev", "eth0", "nodad"]);
  }
  // The metadata service: its own host, reached from the server on the link, as on a cloud server.
  await metadata.exec(["ip", "addr", "add", `${METADATA_ADDRESS}/32`, "dev", "eth0"]);
  await server.exec(["ip", "route", "add", `${METADATA_ADDRESS}/32`, "dev", "eth0"]);

  const dir = tnet.mkdir("firewall");
  path = join(dir, "etc", "synaxic", "firewall.nft");
  unitPath = join(dir, "systemd", "synaxic-firewall.service");

  const listen = async (h: Host, tcp: number[], udp: number[]) => {
    const { log } = h.spawnDaemon("listen", ["node", "-e", SERVER, h.name, tcp.join(","), udp.join(","), "::"]);
    await waitFor(`${h.name}'s listeners`, async () => tnet.readLog(log).includes("listening"), 10_000, 50);
  };
  await listen(server, TCP_PORTS, [UDP_PORT]);
  await listen(metadata, [80], []);

  // A table standing for Docker's and the distribution's rules: the firewall must leave it alone.
  await server.exec(["nft", "-f", "-"], { input: "table ip foreign {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n" });

  admin = net.connect({ host: server.ip, port: 22 });
  admin.on("data", (d: Buffer) => (adminData += d.toString()));
  await waitFor("the admin connection's greeting", async () => adminData.includes("server:22\n"), 5_000, 20);
});

afterAll(async () => {
  admin?.destroy();
  await tnet?.destroy();
});

describe("host firewall on nftables", () => {
  it("before it, every client reaches every port (so a refusal below is the firewall's)", async () => {
    const r = await Promise.all([attempt(denied, "tcp", server.ip, 5432), attempt(denied, "tcp", server.ip, 9999), attempt(denied, "udp", server.ip, UDP_PORT)]);
    expect(r.map((a) => a.result)).toEqual(["connected", "connected", "connected"]);
  });

  it("the first run checks and applies it, keeps the file 0600, leaves other tables, and skips persistence without systemd", async () => {
    const ruleset = renderNftablesRuleset({ rules: rules() });
    const r = await apply(ruleset);
    expect(r.stdout).toContain(`firewall: table inet synaxic applied from ${path}`);
    expect(r.stdout).toContain("firewall: persistence skipped: systemd is not running");
    expect(readFileSync(path, "utf8")).toBe(ruleset);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const tables = (await nft("list", "tables")).trim().split("\n").sort();
    expect(tables).toEqual(["table inet synaxic", "table ip foreign"]);
    // The kernel's own view of the rules: the chains and the source sets as rendered.
    const listing = await nft("list", "table", "inet", "synaxic");
    expect(listing).toContain("type filter hook input priority filter; policy drop;");
    expect(listing).toContain(`tcp dport 5432 ip saddr ${allowed.ip} accept`);
  });

  it("the administrator's connection, open while the firewall went up, still works", async () => {
    expect(await adminRoundTrip("after the first apply")).toBe(true);
  });

  it("admits each port from its sources only; the rest is dropped, not refused", async () => {
    const cases: [Host, "tcp" | "udp", string, number, string][] = [
      [allowed, "tcp", server.ip, 22, "connected"],
      [allowed, "tcp", server.ip, 5432, "connected"],
      [allowed, "tcp", server.ip, 80, "connected"],
      [allowed, "tcp", server.ip, 9999, "timeout"],
      [allowed, "udp", server.ip, UDP_PORT, "connected"],
      [denied, "tcp", server.ip, 22, "timeout"],
      [denied, "tcp", server.ip, 5432, "timeout"],
      [denied, "tcp", server.ip, 80, "connected"],
      [denied, "tcp", server.ip, 9999, "timeout"],
      [denied, "udp", server.ip, UDP_PORT, "timeout"],
      [metadata, "tcp", server.ip, 22, "timeout"],
    ];
    const got = await Promise.all(cases.map(([h, proto, addr, port]) => attempt(h, proto, addr, port)));
    const table = cases.map(([h, proto, , port], i) => `${h.name} ${proto}/${port}: ${got[i]!.result}`);
    expect(table).toEqual(cases.map(([h, proto, , port, want]) => `${h.name} ${proto}/${port}: ${want}`));
    expect(got[1]!.data).toBe("server:5432");
    expect(got[4]!.data).toBe(`server:${UDP_PORT}:ping`);
  });

  it("IPv6: sources in ip6 saddr, the world, and neighbour discovery through the drop policy", async () => {
    // Cold neighbour caches: each connection below first needs solicitations and advertisements answered.
    for (const h of [server, allowed, denied]) await h.exec(["ip", "-6", "neigh", "flush", "dev", "eth0"]);
    const cases: [Host, "tcp" | "udp", number, string][] = [
      [allowed, "tcp", 22, "connected"],
      [allowed, "udp", UDP_PORT, "connected"],
      [allowed, "tcp", 5432, "timeout"],
      [denied, "tcp", 22, "timeout"],
      [denied, "tcp", 80, "connected"],
    ];
    const got = await Promise.all(cases.map(([h, proto, port]) => attempt(h, proto, v6.server!, port)));
    expect(cases.map(([h, proto, port], i) => `${h.name} ${proto}/${port}: ${got[i]!.result}`)).toEqual(cases.map(([h, proto, port, want]) => `${h.name} ${proto}/${port}: ${want}`));
    const neigh = (await server.exec(["ip", "-6", "neigh", "show", "dev", "eth0"])).stdout;
    expect(neigh).toMatch(new RegExp(`^${v6.allowed} lladdr .* (REACHABLE|STALE|DELAY|PROBE)`, "m"));
  });

  it("loopback reaches every port, the unlisted one included", async () => {
    const got = await Promise.all([attempt(server, "tcp", "127.0.0.1", 9999), attempt(server, "tcp", "::1", 5432), attempt(server, "tcp", server.ip, 9999)]);
    expect(got.map((a) => a.result)).toEqual(["connected", "connected", "connected"]);
  });

  it("the metadata service answers root only; other uids are refused at once, and only for that address", async () => {
    const asRoot = await attempt(server, "tcp", METADATA_ADDRESS, 80);
    expect(asRoot).toEqual({ result: "connected", data: "metadata:80" });
    const started = Date.now();
    const asNobody = await attempt(server, "tcp", METADATA_ADDRESS, 80, "nobody");
    expect(asNobody.result).toBe("ECONNREFUSED");
    expect(Date.now() - started).toBeLessThan(DROP_MS);
    // The same process reaches the same service at its ordinary address.
    expect(await attempt(server, "tcp", metadata.ip, 80, "nobody")).toEqual({ result: "connected", data: "metadata:80" });
  });

  it("a second run with the same ruleset changes nothing and says so", async () => {
    const before = { handle: await tableHandle(), listing: await nft("list", "table", "inet", "synaxic"), file: readFileSync(path, "utf8") };
    expect(before.handle).toMatch(/^\d+$/);
    const r = await apply(renderNftablesRuleset({ rules: rules() }));
    expect(r.stdout).toContain("firewall: table inet synaxic unchanged");
    expect(r.stdout).not.toContain("applied");
    expect({ handle: await tableHandle(), listing: await nft("list", "table", "inet", "synaxic"), file: readFileSync(path, "utf8") }).toEqual(before);
  });

  it("a changed ruleset replaces the table in one step; the administrator's connection survives", async () => {
    const before = await tableHandle();
    const changed = renderNftablesRuleset({ rules: rules([{ description: "postgres: denied too", port: 5432, protocol: "tcp", sources: [`${denied.ip}/32`] }]) });
    const r = await apply(changed);
    expect(r.stdout).toContain("firewall: table inet synaxic applied");
    expect(await tableHandle()).not.toBe(before);
    expect(readFileSync(path, "utf8")).toBe(changed);
    expect((await attempt(denied, "tcp", server.ip, 5432)).result).toBe("connected");
    expect(await adminRoundTrip("after a changed ruleset")).toBe(true);
    // Back to the first ruleset: the extra rule is gone again.
    await apply(renderNftablesRuleset({ rules: rules() }));
    expect((await attempt(denied, "tcp", server.ip, 5432)).result).toBe("timeout");
    expect(await adminRoundTrip("after going back")).toBe(true);
  });

  it("a ruleset the kernel refuses is stopped by nft -c: file, table and filtering stay as they were", async () => {
    const before = { handle: await tableHandle(), listing: await nft("list", "table", "inet", "synaxic"), file: readFileSync(path, "utf8") };
    // Port 70000 parses as a word but is out of range: only nft itself can tell.
    const bad = "table inet synaxic {}\ndelete table inet synaxic\ntable inet synaxic {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 70000 accept\n\t}\n}\n";
    const r = await apply(bad, true);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Error: .*out of range/);
    expect(r.stderr).toContain("firewall: the new ruleset does not pass nft -c; nothing was changed");
    expect({ handle: await tableHandle(), listing: await nft("list", "table", "inet", "synaxic"), file: readFileSync(path, "utf8") }).toEqual(before);
    expect((await attempt(denied, "tcp", server.ip, 9999)).result).toBe("timeout");
  });

  it("a table lost while the file stayed (a reboot without the unit) is put back by the next run", async () => {
    await nft("delete", "table", "inet", "synaxic");
    expect((await attempt(denied, "tcp", server.ip, 9999)).result).toBe("connected");
    const r = await apply(renderNftablesRuleset({ rules: rules() }));
    expect(r.stdout).toContain("firewall: table inet synaxic applied");
    expect((await attempt(denied, "tcp", server.ip, 9999)).result).toBe("timeout");
    expect((await nft("list", "tables")).trim().split("\n").sort()).toEqual(["table inet synaxic", "table ip foreign"]);
  });

  it("taken off with the stack: the remove script deletes the table and its files, leaves other tables, and a second run is a no-op", async () => {
    const remove = renderFirewallRemoveScript({ path, unitPath });
    const r = await server.exec(["bash", "-s"], { input: remove });
    expect(r.stdout).toContain("firewall: table inet synaxic removed");
    expect((await nft("list", "tables")).trim().split("\n")).toEqual(["table ip foreign"]);
    expect(existsSync(path) || existsSync(`${path}.applied`)).toBe(false);
    expect((await attempt(denied, "tcp", server.ip, 9999)).result).toBe("connected");
    const again = await server.exec(["bash", "-s"], { input: remove });
    expect(again.code).toBe(0);
    expect(again.stdout).toBe("");
  });
});
