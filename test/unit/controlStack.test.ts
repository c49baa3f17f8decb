/**
 * The control stack and the host stacks that take their role from it, under
 * Pulumi's mocks: what is declared to fence, what is recorded, and what each
 * host builds for a given control state.
 */
import { describe, expect, it } from "vitest";
import { loadConfig, loadStackConfig, type ControlStackConfig, type MainConfig, type ReplicaConfig, type StackConfig } from "../../lib/config";
import { INITIAL_CONTROL, nextControl, type ControlInfo } from "../../lib/control";
import { controlStack } from "../../stacks/control";
import { mainStack } from "../../stacks/main";
import { replicaStack } from "../../stacks/replica";
import { findLeaks, runMocked } from "./harness";
import { SECRET_CONFIG, SECRET_KEYS, legacyPrevious, mainConfig, replicaConfig, runMain } from "./fixtures";

const P = "synaxic:";
const CONTROL = "acme/synaxic/control";
const SELF = "organization/synaxic/control";
const MAIN_OUTPUTS = { publicAddress: "203.0.113.5", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5MainHostKey", sshUser: "root", sshPort: 22 };

function runControl(config: Record<string, string>, previous: ControlInfo | undefined, secretKeys: string[] = [`${P}sshPrivateKey`]) {
  return runMocked(
    {
      config: { [`${P}role`]: "control", [`${P}sshPrivateKey`]: SECRET_CONFIG[`${P}sshPrivateKey`]!, ...config },
      secretKeys,
      stack: "control",
      stackReferences: {
        [SELF]: { outputs: previous ? { control: previous } : {}, secretOutputNames: [] },
        "acme/synaxic/main": { outputs: { ...MAIN_OUTPUTS, hetznerServerId: 3001 }, secretOutputNames: [] },
      },
    },
    () => controlStack(loadConfig() as ControlStackConfig),
  );
}

const failoverConfig = {
  [`${P}primary`]: "replica-1",
  [`${P}primaryGeneration`]: "1",
  [`${P}fence`]: JSON.stringify({ main: "stop" }),
  [`${P}hostStacks`]: JSON.stringify({ main: "acme/synaxic/main" }),
};

describe("the control stack", () => {
  it("first run: main is primary, nothing is fenced, nothing is declared but the reference to itself", async () => {
    const run = await runControl({}, undefined);
    expect(run.values.control).toEqual(INITIAL_CONTROL);
    expect(run.values.hostStacks).toEqual({});
    expect(run.resources.filter((r) => r.type.startsWith("command:"))).toEqual([]);
  });

  it("a failover with a stop fence: one SSH command to the old primary with its pinned key, stopping its writers app first; recorded after it", async () => {
    const run = await runControl(failoverConfig, INITIAL_CONTROL);
    const fence = run.one("command:remote:Command", "fence-main-g1");
    expect(fence.inputs.connection).toMatchObject({ host: "203.0.113.5", user: "root", port: 22, hostKey: MAIN_OUTPUTS.hostKey });
    // The connection (it holds the operator's key) is secret; the command holds no secret.
    expect(JSON.stringify(fence.raw.connection)).toContain("4dabf18193072939515e22adb298388d");
    expect(String(fence.inputs.create)).toMatch(/^timeout --kill-after=10 600 sh -c .* sh synaxic-main-app-a synaxic-main-app-b synaxic-main-app synaxic-main-redis synaxic-main-postgres$/s);
    expect(run.values.control).toEqual({ version: 1, primary: "replica-1", generation: 1, previousPrimary: "main", fenced: { main: { method: "stop", generation: 1 } } });
  });

  it("a poweroff fence: Hetzner's API from this machine, the token in the environment (secret), the server id from the host's stack", async () => {
    const run = await runMocked(
      {
        config: { [`${P}role`]: "control", ...failoverConfig, [`${P}fence`]: JSON.stringify({ main: "poweroff" }), "hcloud:token": "HcloudTokenValue0123456789" },
        secretKeys: ["hcloud:token"],
        stack: "control",
        stackReferences: {
          [SELF]: { outputs: { control: INITIAL_CONTROL }, secretOutputNames: [] },
          "acme/synaxic/main": { outputs: { ...MAIN_OUTPUTS, hetznerServerId: 3001 }, secretOutputNames: [] },
        },
      },
      () => controlStack(loadConfig() as ControlStackConfig),
    );
    const fence = run.one("command:local:Command", "fence-main-g1");
    expect(String(fence.inputs.create)).toMatch(/^node -e .* 3001$/s);
    expect(String(fence.inputs.create)).not.toContain("HcloudTokenValue");
    expect(JSON.stringify(fence.raw.environment)).toContain("4dabf18193072939515e22adb298388d");
    expect((run.values.control as ControlInfo).fenced).toEqual({ main: { method: "poweroff", generation: 1 } });
  });

  it("an acknowledged fence declares nothing and is recorded; re-running the same change fences nothing again", async () => {
    const ack = await runControl({ ...failoverConfig, [`${P}fence`]: JSON.stringify({ main: "acknowledged" }) }, INITIAL_CONTROL, []);
    expect(ack.resources.filter((r) => r.type.startsWith("command:"))).toEqual([]);
    expect((ack.values.control as ControlInfo).fenced.main!.method).toBe("acknowledged");
    const again = await runControl(failoverConfig, nextControl(INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" } }).next);
    expect(again.resources.filter((r) => r.type.startsWith("command:"))).toEqual([]);
  });

  it("refuses a change of primary without a fence, before declaring anything", async () => {
    await expect(runControl({ [`${P}primary`]: "replica-1", [`${P}primaryGeneration`]: "1" }, INITIAL_CONTROL)).rejects.toThrow(/fence\.main: missing/);
  });
});

/** A host stack's program with the control stack's output set to `control`. */
async function runUnder(
  control: ControlInfo,
  host: "main" | "replica-1" | "replica-2",
  extra: Record<string, string> = {},
  /** The control stack's hostStacks output, and those host stacks' outputs. */
  others: { hostStacks?: Record<string, string>; stacks?: Record<string, Record<string, unknown>> } = {},
) {
  const stackControl = {
    [CONTROL]: { outputs: { control, ...(others.hostStacks ? { hostStacks: others.hostStacks } : {}) }, secretOutputNames: [] },
    ...Object.fromEntries(Object.entries(others.stacks ?? {}).map(([name, outputs]) => [name, { outputs, secretOutputNames: [] }])),
  };
  if (host === "main") {
    return runMocked({ config: mainConfig(2, { [`${P}controlStack`]: CONTROL, ...extra }), secretKeys: SECRET_KEYS, stack: "main", stackReferences: stackControl }, () =>
      mainStack(loadStackConfig() as MainConfig & StackConfig),
    );
  }
  // A fleet where main made every replica's key (the legacy flow): each replica declares its services on its first run here.
  const main = await runMain(2, {}, { previous: legacyPrevious(2) });
  const ip = host === "replica-1" ? "10.10.0.3" : "10.10.0.4";
  return runMocked(
    {
      config: replicaConfig(host, ip, { [`${P}controlStack`]: CONTROL, ...extra }),
      secretKeys: SECRET_KEYS,
      stack: host,
      stackReferences: { ...stackControl, "acme/synaxic/main": { outputs: structuredClone(main.values), secretOutputNames: [...main.secretOutputs] } },
    },
    () => replicaStack(loadStackConfig() as ReplicaConfig & StackConfig),
  );
}

describe("host stacks under the control stack", () => {
  const failedOver = nextControl(INITIAL_CONTROL, { primary: "replica-1", primaryGeneration: 1, fence: { main: "stop" } }).next;

  it("the replica the control stack names promotes; another replica follows it; the old main can only follow it", async () => {
    const promoted = await runUnder(failedOver, "replica-1");
    expect(promoted.values.postgresMode).toBe("promoted");
    expect(promoted.values.primary).toBe("replica-1");
    expect(promoted.values.controlGeneration).toBe(1);
    const other = await runUnder(failedOver, "replica-2");
    expect(other.values.postgresMode).toBe("replica");
    expect(String(other.one("command:remote:Command", "postgres-conf").inputs.stdin)).toMatch(/primary_conninfo = '.*host=10\.10\.0\.3 /);
    const oldMain = await runUnder(failedOver, "main");
    expect(oldMain.values.postgresMode).toBe("rejoin");
    expect((oldMain.one("docker:index/container:Container", "app-container").inputs.envs as string[]).find((e) => e.startsWith("SPRING_DATASOURCE_URL="))).toMatch(/readOnly=true/);
  });

  it("with HTTPS on main, the promoted replica's balancer serves the same certificate (key secret) and its firewalls open the HTTPS port", async () => {
    const tls = { [`${P}httpsCertificate`]: "-----BEGIN CERTIFICATE-----\nMainCert\n-----END CERTIFICATE-----\n", [`${P}httpsPrivateKey`]: "-----BEGIN PRIVATE KEY-----\nMainHttpsKey\n-----END PRIVATE KEY-----\n", [`${P}balancerServerNames`]: '["synaxic.example.com"]' };
    const main = await runMocked(
      { config: mainConfig(2, tls), secretKeys: [...SECRET_KEYS, `${P}httpsPrivateKey`], stack: "main", stackReferences: { "organization/synaxic/main": { outputs: legacyPrevious(2), secretOutputNames: [] } } },
      () => mainStack(loadStackConfig() as MainConfig & StackConfig),
    );
    expect(main.secretOutputs).toContain("balancerHttps");
    const promoted = await runMocked(
      {
        config: replicaConfig("replica-1", "10.10.0.3", { [`${P}controlStack`]: CONTROL }),
        secretKeys: SECRET_KEYS,
        stack: "replica-1",
        stackReferences: {
          [CONTROL]: { outputs: { control: failedOver }, secretOutputNames: [] },
          "acme/synaxic/main": { outputs: structuredClone(main.values), secretOutputNames: [...main.secretOutputs] },
        },
      },
      () => replicaStack(loadStackConfig() as ReplicaConfig & StackConfig),
    );
    const nginx = promoted.one("docker:index/container:Container", "balancer-container");
    const uploads = nginx.inputs.uploads as { file: string; content: string }[];
    expect(uploads.find((u) => u.file.endsWith("fullchain.pem"))!.content).toContain("MainCert");
    expect(uploads.find((u) => u.file.endsWith("privkey.pem"))!.content).toContain("MainHttpsKey");
    // ...and only inside a secret.
    expect(findLeaks(promoted.resources.map((r) => r.raw), [tls[`${P}httpsPrivateKey`]!])).toEqual([]);
    expect(String(promoted.one("command:remote:Command", "balancer-conf").inputs.stdin)).toMatch(/listen 443 ssl/);
    expect(String(promoted.one("command:remote:Command", "balancer-conf").inputs.stdin)).toContain("server_name synaxic.example.com;");
    const rules = promoted.one("hcloud:index/firewall:Firewall", "firewall").inputs.rules as { port: string }[];
    expect(rules.map((r) => r.port)).toEqual(expect.arrayContaining(["80", "443"]));
    // Not promoted: no public port.
    const other = await runUnder(failedOver, "replica-2");
    expect((other.one("hcloud:index/firewall:Firewall", "firewall").inputs.rules as { port: string }[]).map((r) => r.port)).not.toContain("443");
  });

  it("the rewind role's pg_hba line opens only to the fenced former primaries: none before a change, only main's address on the promoted replica after it", async () => {
    const rewindLines = (hba: unknown) => String(hba).split("\n").filter((l) => /\bsynaxic_rewind\b/.test(l));
    expect(rewindLines((await runUnder(INITIAL_CONTROL, "main")).values.pgHba)).toEqual([]);
    const promoted = await runUnder(failedOver, "replica-1");
    expect(rewindLines(promoted.values.pgHba)).toEqual([expect.stringMatching(/^hostssl\s+postgres\s+synaxic_rewind\s+10\.10\.0\.2\/32\s+scram-sha-256$/)]);
    // After switching back, main lets replica-1 (fenced now) rewind against it, and no one else.
    const back = nextControl(failedOver, { primary: "main", primaryGeneration: 2, fence: { "replica-1": "stop" } }).next;
    expect(rewindLines((await runUnder(back, "main")).values.pgHba)).toEqual([expect.stringMatching(/synaxic_rewind\s+10\.10\.0\.3\/32/)]);
  });

  it("the rewind line closes once the fenced host's stack reports it rejoined under the fence's generation or later; not before, and not for a host whose stack the control stack does not name", async () => {
    const rewindLines = (hba: unknown) => String(hba).split("\n").filter((l) => /\bsynaxic_rewind\b/.test(l));
    const MAIN_STACK = "acme/synaxic/main-host";
    const under = (outputs: Record<string, unknown>, hostStacks: Record<string, string> = { main: MAIN_STACK }) => runUnder(failedOver, "replica-1", {}, { hostStacks, stacks: { [MAIN_STACK]: outputs } });
    const open = [expect.stringMatching(/synaxic_rewind\s+10\.10\.0\.2\/32/)];
    // main's stack before its next up (no rejoinedGeneration), or rejoined under an earlier generation: open.
    expect(rewindLines((await under({ controlGeneration: 1 })).values.pgHba)).toEqual(open);
    expect(rewindLines((await under({ rejoinedGeneration: 0 })).values.pgHba)).toEqual(open);
    // An acknowledged fence of a host the control stack names no stack for: open, nothing read.
    const unnamed = await under({ rejoinedGeneration: 1 }, {});
    expect(rewindLines(unnamed.values.pgHba)).toEqual(open);
    expect(unnamed.resources.filter((r) => r.name.startsWith("rejoined-"))).toEqual([]);
    // Rejoined: closed (a reload on the primary's next up).
    const closed = await under({ rejoinedGeneration: 1 });
    expect(rewindLines(closed.values.pgHba)).toEqual([]);
    expect(closed.one("pulumi:pulumi:StackReference", "rejoined-main").inputs.name).toBe(MAIN_STACK);
  });

  it("a fenced former primary reports the generation it rejoined under, once its PostgreSQL is ready; the primary and a plain replica do not", async () => {
    const oldMain = await runUnder(failedOver, "main");
    expect(oldMain.values.postgresMode).toBe("rejoin");
    expect(oldMain.values.rejoinedGeneration).toBe(1);
    expect((await runUnder(failedOver, "replica-1")).values.rejoinedGeneration).toBeUndefined();
    expect((await runUnder(failedOver, "replica-2")).values.rejoinedGeneration).toBeUndefined();
    const back = nextControl(failedOver, { primary: "main", primaryGeneration: 2, fence: { "replica-1": "stop" } }).next;
    expect((await runUnder(back, "replica-1")).values.rejoinedGeneration).toBe(2);
  });

  it("before any change, every host is what it always was: main primary, replicas streaming from it", async () => {
    expect((await runUnder(INITIAL_CONTROL, "main")).values.postgresMode).toBe("primary");
    expect((await runUnder(INITIAL_CONTROL, "replica-2")).values.postgresMode).toBe("replica");
  });

  it("a second candidate is refused: a replica's own promote is not read under a control stack", async () => {
    await expect(runUnder(failedOver, "replica-2", { [`${P}promote`]: "true" })).rejects.toThrow(/synaxic:promote: is set on a stack whose primary is decided by the control stack/);
  });

  it("a control stack naming a host outside the fleet stops the host stack before anything is declared", async () => {
    await expect(runUnder({ ...failedOver, primary: "replica-7" }, "replica-2")).rejects.toThrow(/names "replica-7" as primary, which is not a host of this fleet/);
  });
});
