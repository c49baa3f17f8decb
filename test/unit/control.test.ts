import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { INITIAL_CONTROL, checkControlOutput, hostRole, nextControl, type ControlInfo } from "../../lib/control";
import { parseStackConfig, type ControlConfig } from "../../lib/config";
import { fencedContainers, renderPoweroffProgram, renderStopScript } from "../../templates/fence";
import { SECRET_KEYS, replicaConfig } from "./fixtures";

const FLEET = ["main", "replica-1", "replica-2"];

/** The states of a failover to replica-1 and a switch back, as the control stack records them. */
function failover(): ControlInfo {
  return nextControl(INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" } }).next;
}

describe("nextControl: the rules of a change of primary", () => {
  it("a first run with the main host as primary changes nothing and fences nothing", () => {
    expect(nextControl(INITIAL_CONTROL, { primary: "main", primaryGeneration: 0, fence: {} })).toEqual({ next: INITIAL_CONTROL, demotion: null });
  });

  it("a change of primary fences the old one first and records how, under the new generation", () => {
    const { next, demotion } = nextControl(INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: { main: "poweroff" } });
    expect(demotion).toEqual({ host: "main", method: "poweroff" });
    expect(next).toEqual({ version: 1, primary: "replica-1", generation: 1, previousPrimary: "main", fenced: { main: { method: "poweroff", generation: 1 } } });
  });

  it("switching back: the new primary leaves the fenced list, the one it replaces joins it", () => {
    const { next, demotion } = nextControl(failover(), { primary: "main", primaryGeneration: 2, fence: { main: "stop", "replica-1": "acknowledged" } });
    expect(demotion).toEqual({ host: "replica-1", method: "acknowledged" });
    expect(next.fenced).toEqual({ "replica-1": { method: "acknowledged", generation: 2 } });
  });

  it("re-running with the same settings is no change (the fence does not run again)", () => {
    const after = failover();
    expect(nextControl(after, { primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" } })).toEqual({ next: after, demotion: null });
  });

  it.each([
    ["a change without its predecessor fenced", INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: {} }, /fence\.main: missing; main is the primary now and must be fenced before replica-1 takes writes/],
    ["a change without a new generation", INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 0, fence: { main: "stop" } }, /primaryGeneration: got 0; the primary changes from main to replica-1, so the generation must become 1/],
    ["a generation that skips", INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 3, fence: { main: "stop" } }, /must become 1/],
    ["a generation raised without a change", INITIAL_CONTROL, { primary: "main", primaryGeneration: 1, fence: {} }, /changes only together with primary/],
    ["a generation lowered", failover(), { primary: "main", primaryGeneration: 0, fence: { "replica-1": "stop" } }, /never goes down/],
    ["a second replica named while another was just promoted, fencing someone else", failover(), { primary: "replica-2", primaryGeneration: 2, fence: { main: "stop" } }, /fence\.replica-1: missing/],
  ])("refuses %s", (_what, previous, settings, message) => {
    expect(() => nextControl(previous as ControlInfo, settings as never)).toThrow(message);
  });
});

describe("hostRole: what each host does under the control stack", () => {
  it("before any change: main is primary as it always was, replicas follow it", () => {
    expect(hostRole(INITIAL_CONTROL, "main", FLEET)).toEqual({ promote: false, followPrimary: "", rejoin: false });
    expect(hostRole(INITIAL_CONTROL, "replica-1", FLEET)).toEqual({ promote: false, followPrimary: "", rejoin: false });
  });

  it("after a failover to replica-1: only replica-1 promotes; the others, the old main included, follow it", () => {
    const c = failover();
    expect(hostRole(c, "replica-1", FLEET)).toEqual({ promote: true, followPrimary: "", rejoin: false });
    expect(hostRole(c, "replica-2", FLEET)).toEqual({ promote: false, followPrimary: "replica-1", rejoin: false });
    expect(hostRole(c, "main", FLEET)).toEqual({ promote: false, followPrimary: "replica-1", rejoin: false });
  });

  it("after switching back: main takes the role back by promotion, the former primary rewinds and follows main", () => {
    const back = nextControl(failover(), { primary: "main", primaryGeneration: 2, fence: { "replica-1": "stop" } }).next;
    expect(hostRole(back, "main", FLEET)).toEqual({ promote: true, followPrimary: "", rejoin: false });
    expect(hostRole(back, "replica-1", FLEET)).toEqual({ promote: false, followPrimary: "", rejoin: true });
    expect(hostRole(back, "replica-2", FLEET)).toEqual({ promote: false, followPrimary: "", rejoin: false });
  });

  it("refuses a primary that is not a host of the fleet, and a change with no fence on record", () => {
    expect(() => hostRole({ ...failover(), primary: "replica-9" }, "replica-1", FLEET)).toThrow(/names "replica-9" as primary, which is not a host of this fleet \(main, replica-1, replica-2\)/);
    expect(() => hostRole({ ...failover(), fenced: {} }, "replica-1", FLEET)).toThrow(/without a record that main was fenced/);
  });

  it("checks the output it reads, without echoing it", () => {
    expect(() => checkControlOutput("acme/synaxic/control", undefined)).toThrow(/has no "control" output; run `pulumi up` on the control stack first/);
    expect(() => checkControlOutput("acme/synaxic/control", { ...failover(), generation: -1 })).toThrow(/output "control\.generation" is malformed/);
    expect(checkControlOutput("acme/synaxic/control", failover())).toEqual(failover());
  });
});

describe("control stack configuration", () => {
  const P = "synaxic:";
  const SSH = { [`${P}sshPrivateKey`]: "key" };
  const parse = (raw: Record<string, string>, secret = [`${P}sshPrivateKey`]) => parseStackConfig({ [`${P}role`]: "control", ...raw }, new Set(secret)) as ControlConfig;

  it("reads primary, generation, fence and host stacks", () => {
    const c = parse({ ...SSH, [`${P}primary`]: "replica-1", [`${P}primaryGeneration`]: "1", [`${P}fence`]: '{"main":"stop"}', [`${P}hostStacks`]: '{"main":"acme/synaxic/main"}' });
    expect(c).toEqual({ role: "control", primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" }, hostStacks: { main: "acme/synaxic/main" }, commandTimeoutSeconds: 600 });
  });

  it.each([
    ["a fence method it does not know", { [`${P}fence`]: '{"main":"kill"}' }, /synaxic:fence\[main\]: got "kill"; expected stop, poweroff or acknowledged/],
    ["a stop fence without the host's stack", { ...SSH, [`${P}fence`]: '{"main":"stop"}' }, /synaxic:hostStacks\.main: missing; fence\.main is stop/],
    ["a stop fence without the SSH key", { [`${P}fence`]: '{"main":"stop"}', [`${P}hostStacks`]: '{"main":"acme/synaxic/main"}' }, /sshPrivateKey: missing required secret/],
    ["a fence that is not a map", { [`${P}fence`]: "stop" }, /synaxic:fence: got "stop"; expected a map/],
    ["a host key on a control stack", { [`${P}sshHost`]: "203.0.113.7" }, /synaxic:sshHost: is for host stacks; a control stack has no host/],
  ])("refuses %s", (_what, raw, message) => {
    expect(() => parse(raw as Record<string, string>, raw[`${P}sshPrivateKey` as keyof typeof raw] ? [`${P}sshPrivateKey`] : [])).toThrow(message);
  });

  it("a host stack under a control stack refuses its own promote, followPrimary or rejoin, and the control keys", () => {
    const host = replicaConfig("replica-2", "10.10.0.4", { [`${P}controlStack`]: "acme/synaxic/control" });
    const secrets = new Set(SECRET_KEYS);
    expect(() => parseStackConfig(host, secrets)).not.toThrow();
    expect(() => parseStackConfig({ ...host, [`${P}promote`]: "true" }, secrets)).toThrow(/synaxic:promote: is set on a stack whose primary is decided by the control stack acme\/synaxic\/control/);
    expect(() => parseStackConfig({ ...host, [`${P}followPrimary`]: "replica-1" }, secrets)).toThrow(/synaxic:followPrimary: is set on a stack whose primary/);
    expect(() => parseStackConfig({ ...host, [`${P}primary`]: "replica-2" }, secrets)).toThrow(/synaxic:primary: is for the control stack/);
  });
});

describe("fence commands", () => {
  it("stop: the writing app first, PostgreSQL last; the balancer is left serving", () => {
    expect(fencedContainers("main")).toEqual(["synaxic-main-app-a", "synaxic-main-app-b", "synaxic-main-app", "synaxic-main-redis", "synaxic-main-postgres"]);
  });

  it("stop: the script runs under sh with a stand-in docker: every existing container kept from restarting, then stopped in order; a missing one skipped", async () => {
    const { mkdtempSync, writeFileSync, readFileSync, chmodSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(join(tmpdir(), "synaxic-fence-"));
    const log = join(dir, "calls");
    // A docker that knows two of the three containers, running until stopped; the app does not exist.
    writeFileSync(
      join(dir, "docker"),
      `#!/bin/sh\necho "$*" >> ${log}\ncase "$1 $2" in\n  "container inspect") case "$*" in *-app*) exit 1;; esac\n    [ "$3" = "-f" ] && { if grep -q "stop $5" ${log}; then echo false; else echo true; fi; }; exit 0;;\nesac\nexit 0\n`,
    );
    chmodSync(join(dir, "docker"), 0o755);
    const code = await new Promise<number>((resolve) =>
      spawn("sh", ["-c", renderStopScript(), "sh", ...fencedContainers("main")], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, stdio: "ignore" }).on("close", (c) => resolve(c ?? 1)),
    );
    expect(code).toBe(0);
    const calls = readFileSync(log, "utf8").split("\n").filter((l) => /^(update|stop)/.test(l));
    expect(calls).toEqual(["update --restart=no synaxic-main-redis", "update --restart=no synaxic-main-postgres", "stop synaxic-main-redis", "stop synaxic-main-postgres"]);
  });

  it("poweroff: against a stand-in of Hetzner's API, powers the server off and waits for the action; the token only in a header", async () => {
    const seen: string[] = [];
    let polls = 0;
    const server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization}`);
      res.setHeader("content-type", "application/json");
      if (req.url === "/v1/servers/42" && req.method === "GET") return res.end(JSON.stringify({ server: { id: 42, name: "synaxic-main", status: "running" } }));
      if (req.url === "/v1/servers/42/actions/poweroff" && req.method === "POST") return res.end(JSON.stringify({ action: { id: 7, status: "running" } }));
      if (req.url === "/v1/actions/7") return res.end(JSON.stringify({ action: { id: 7, status: ++polls < 2 ? "running" : "success" } }));
      res.statusCode = 404;
      return res.end("{}");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    try {
      const run = (id: string, token: string) =>
        new Promise<{ code: number; out: string }>((resolve) => {
          let out = "";
          const p = spawn(process.execPath, ["-e", renderPoweroffProgram(), id], { env: { HCLOUD_TOKEN: token, HCLOUD_ENDPOINT: `http://127.0.0.1:${port}/v1` } });
          p.stdout.on("data", (d) => (out += d));
          p.stderr.on("data", (d) => (out += d));
          p.on("close", (c) => resolve({ code: c ?? 1, out }));
        });
      const ok = await run("42", "t0ken");
      expect(ok.out).toContain("server 42 (synaxic-main) powered off");
      expect(ok.code).toBe(0);
      expect(seen).toEqual(["GET /v1/servers/42 Bearer t0ken", "POST /v1/servers/42/actions/poweroff Bearer t0ken", "GET /v1/actions/7 Bearer t0ken", "GET /v1/actions/7 Bearer t0ken"]);
      const missing = await run("43", "t0ken");
      expect(missing.code).toBe(1);
      expect(missing.out).toMatch(/fence: GET \/servers\/43: HTTP 404/);
      expect(missing.out).not.toContain("t0ken");
    } finally {
      server.close();
    }
  });
});
