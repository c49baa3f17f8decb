/**
 * `fleet up` / `fleet preview` ordering and stop-on-failure, with a fake
 * workspace standing in for the Automation API (a real run is the engine
 * tier's). The order: the control stack when the main stack's config names
 * one, main, then each replica (from main's outputs, plus any only in its
 * config); the first failure stops the run and names what was not run.
 */
import { describe, expect, it } from "vitest";
import { deployFleet, failureLines, formatChanges, replicasFromConfig, type FleetStack, type FleetWorkspace, type StackRunResult } from "../../lib/fleetcli/deploy";

interface FakeStackSpec {
  config?: Record<string, string>;
  outputs?: Record<string, unknown>;
  fail?: string;
  /** Outputs the up writes (fleet.replicas after the update). */
  upOutputs?: Record<string, unknown>;
}

function fakeWorkspace(specs: Record<string, FakeStackSpec>) {
  const calls: string[] = [];
  const ws: FleetWorkspace = {
    async select(name) {
      calls.push(`select ${name}`);
      const spec = specs[name];
      if (!spec) throw new Error(`error: no stack named '${name}' found`);
      const run = (kind: "up" | "preview") => async (onOutput: (t: string) => void): Promise<StackRunResult> => {
        calls.push(`${kind} ${name}`);
        onOutput(`engine output of ${name}\n`);
        if (spec.fail) throw new Error(`code: 255\n stdout: \n stderr: error: update failed\n  ${spec.fail}`);
        return kind === "up"
          ? { result: "succeeded", changes: { create: 2, same: 10 }, outputs: spec.upOutputs ?? spec.outputs ?? {} }
          : { result: "previewed", changes: { update: 1, same: 11 } };
      };
      const stack: FleetStack = {
        name,
        up: run("up"),
        preview: run("preview"),
        config: async () => {
          calls.push(`config ${name}`);
          return spec.config ?? {};
        },
        outputs: async () => {
          calls.push(`outputs ${name}`);
          return spec.outputs ?? {};
        },
      };
      return stack;
    },
  };
  return { ws, calls };
}

function io() {
  const out = { stdout: "", stderr: "", t: 0 };
  return { out, io: { stdout: (s: string) => (out.stdout += s), stderr: (s: string) => (out.stderr += s), now: () => (out.t += 500) } };
}

const MAIN = "acme/synaxic/main";
const fleetOutputs = (...names: string[]) => ({ fleet: { replicas: names.map((n, i) => ({ name: n, privateIp: `10.0.0.${i + 3}`, slotName: `synaxic_${n.replace("-", "_")}` })) } });

describe("fleet up / preview order", () => {
  it("control stack first (main's controlStack), then main, then each replica main's up lists; each stack's summary", async () => {
    const { ws, calls } = fakeWorkspace({
      "acme/synaxic/control": {},
      [MAIN]: { config: { "synaxic:controlStack": "acme/synaxic/control", "synaxic:replicas": '["replica-1=10.0.0.3"]' }, outputs: fleetOutputs("replica-1"), upOutputs: fleetOutputs("replica-1", "replica-2") },
      "acme/synaxic/replica-1": {},
      "acme/synaxic/replica-2": {},
    });
    const { out, io: sink } = io();
    const outcomes = await deployFleet(ws, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: true }, sink);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual(["up acme/synaxic/control", `up ${MAIN}`, "up acme/synaxic/replica-1", "up acme/synaxic/replica-2"]);
    // The replicas come from the outputs main's up just wrote, not the ones it had before.
    expect(calls).not.toContain(`outputs ${MAIN}`);
    expect(outcomes.map((o) => [o.stack, o.ok])).toEqual([
      ["acme/synaxic/control", true],
      [MAIN, true],
      ["acme/synaxic/replica-1", true],
      ["acme/synaxic/replica-2", true],
    ]);
    expect(out.stdout).toContain(`\n=== up ${MAIN} ===\nengine output of ${MAIN}\n${MAIN}: succeeded, 2 created, 10 unchanged (0.5 s)\n`);
    expect(out.stdout).toMatch(/\nUpdated 4 stacks:\n {2}acme\/synaxic\/control: succeeded/);
    expect(out.stderr).toBe("");
  });

  it("without a control stack: main first; preview takes main's current outputs plus a replica only its config has yet", async () => {
    const { ws, calls } = fakeWorkspace({
      [MAIN]: { config: { "synaxic:replicas": '["replica-1=10.0.0.3","replica-3=10.0.0.5"]' }, outputs: fleetOutputs("replica-1") },
      "acme/synaxic/replica-1": {},
      "acme/synaxic/replica-3": {},
    });
    const { out, io: sink } = io();
    await deployFleet(ws, { kind: "preview", mainStack: MAIN, replicaStacks: [], showOutput: false }, sink);
    expect(calls.filter((c) => /^(preview|up) /.test(c))).toEqual([`preview ${MAIN}`, "preview acme/synaxic/replica-1", "preview acme/synaxic/replica-3"]);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual([]);
    expect(out.stdout).toContain(`${MAIN}: previewed, 1 to update, 11 unchanged`);
    // --quiet: no engine output.
    expect(out.stdout).not.toContain("engine output");
  });

  it("--replica names the replica stacks instead, in the order given", async () => {
    const { ws, calls } = fakeWorkspace({ [MAIN]: { outputs: fleetOutputs("replica-1", "replica-2") }, "ops/replica-b": {}, "ops/replica-a": {} });
    const { io: sink } = io();
    await deployFleet(ws, { kind: "up", mainStack: MAIN, replicaStacks: ["ops/replica-b", "ops/replica-a"], showOutput: false }, sink);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual([`up ${MAIN}`, "up ops/replica-b", "up ops/replica-a"]);
  });

  it("up: a replica whose up left it waiting for main's signature (awaitingMain) gets main again and its own second up; preview does not", async () => {
    const specs = {
      [MAIN]: { outputs: fleetOutputs("replica-1", "replica-2", "replica-3") },
      "acme/synaxic/replica-1": { upOutputs: { tlsSource: "own-keys", awaitingMain: false } },
      "acme/synaxic/replica-2": { upOutputs: { tlsSource: "pending", awaitingMain: true } },
      "acme/synaxic/replica-3": { upOutputs: { tlsSource: "legacy", awaitingMain: true } },
    };
    const { ws, calls } = fakeWorkspace(specs);
    const { out, io: sink } = io();
    const outcomes = await deployFleet(ws, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: false }, sink);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual([
      `up ${MAIN}`,
      "up acme/synaxic/replica-1",
      "up acme/synaxic/replica-2",
      "up acme/synaxic/replica-3",
      `up ${MAIN}`,
      "up acme/synaxic/replica-2",
      "up acme/synaxic/replica-3",
    ]);
    expect(outcomes.every((o) => o.ok)).toBe(true);
    expect(out.stdout).toContain("acme/synaxic/replica-2, acme/synaxic/replica-3 published certificate requests that main has not signed yet");
    const preview = fakeWorkspace(specs);
    await deployFleet(preview.ws, { kind: "preview", mainStack: MAIN, replicaStacks: [], showOutput: false }, io().io);
    expect(preview.calls.filter((c) => c.startsWith("preview "))).toHaveLength(4);
  });

  it("up: main failing in the second round stops before the waiting replicas, naming them", async () => {
    let mainRuns = 0;
    const { ws } = fakeWorkspace({ [MAIN]: { outputs: fleetOutputs("replica-1") }, "acme/synaxic/replica-1": { upOutputs: { awaitingMain: true } } });
    const failingSecond: FleetWorkspace = {
      async select(name) {
        const s = await ws.select(name);
        if (name !== MAIN) return s;
        return { ...s, up: async (f) => (++mainRuns === 2 ? Promise.reject(new Error("stderr: error: replica stack acme/synaxic/replica-1: output \"certRequests.postgres\" asks for ...")) : s.up(f)) };
      },
    };
    const { out, io: sink } = io();
    const outcomes = await deployFleet(failingSecond, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: false }, sink);
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, false]);
    expect(out.stderr).toMatch(/not run: acme\/synaxic\/replica-1\.\n$/);
  });

  it("stops at the first failure: nothing after it runs, the failure and what was not run are on stderr", async () => {
    const { ws, calls } = fakeWorkspace({
      [MAIN]: { outputs: fleetOutputs("replica-1", "replica-2", "replica-3") },
      "acme/synaxic/replica-1": {},
      "acme/synaxic/replica-2": { fail: "error: docker:index:Container synaxic-replica-2-postgres: image not found" },
      "acme/synaxic/replica-3": {},
    });
    const { out, io: sink } = io();
    const outcomes = await deployFleet(ws, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: false }, sink);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual([`up ${MAIN}`, "up acme/synaxic/replica-1", "up acme/synaxic/replica-2"]);
    expect(calls).not.toContain("select acme/synaxic/replica-3");
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, false]);
    expect(out.stderr).toContain("acme/synaxic/replica-2: FAILED after 0.5 s\n");
    expect(out.stderr).toContain("docker:index:Container synaxic-replica-2-postgres: image not found");
    expect(out.stderr).toMatch(/Stopped at acme\/synaxic\/replica-2; not run: acme\/synaxic\/replica-3\.\n$/);
    expect(out.stdout).not.toContain("Updated");
  });

  it("a failing control stack stops before main; a failing main before any replica", async () => {
    const control = fakeWorkspace({
      "acme/synaxic/control": { fail: "fence refused" },
      [MAIN]: { config: { "synaxic:controlStack": "acme/synaxic/control", "synaxic:replicas": '["replica-1=10.0.0.3"]' } },
    });
    const a = io();
    const first = await deployFleet(control.ws, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: false }, a.io);
    expect(control.calls.filter((c) => c.startsWith("up "))).toEqual(["up acme/synaxic/control"]);
    expect(first.map((o) => o.ok)).toEqual([false]);
    expect(a.out.stderr).toMatch(/Stopped at acme\/synaxic\/control; not run: acme\/synaxic\/main, acme\/synaxic\/replica-1\.\n$/);

    const main = fakeWorkspace({ [MAIN]: { fail: "stack is locked", config: { "synaxic:replicas": '["replica-1=10.0.0.3"]' } }, "acme/synaxic/replica-1": {} });
    const b = io();
    await deployFleet(main.ws, { kind: "preview", mainStack: MAIN, replicaStacks: [], showOutput: false }, b.io);
    expect(main.calls.filter((c) => c.startsWith("preview "))).toEqual([`preview ${MAIN}`]);
    expect(b.out.stderr).toMatch(/Stopped at acme\/synaxic\/main; not run: acme\/synaxic\/replica-1\.\n$/);
  });

  it("a replica main's config lists whose stack does not exist stops the run before main, naming the command that creates it", async () => {
    const { ws, calls } = fakeWorkspace({ [MAIN]: { config: { "synaxic:replicas": '["replica-1=10.0.0.3","replica-2=10.0.0.4"]' } }, "acme/synaxic/replica-1": {} });
    const { out, io: sink } = io();
    const outcomes = await deployFleet(ws, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: false }, sink);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual([]);
    expect(outcomes.map((o) => [o.stack, o.ok])).toEqual([["acme/synaxic/replica-2", false]]);
    expect(out.stderr).toContain("acme/synaxic/replica-2: the stack does not exist. Main reads each replica it lists in that replica's stack: create it first (`pulumi stack init acme/synaxic/replica-2`");
    expect(out.stderr).toMatch(/not run: acme\/synaxic\/main, acme\/synaxic\/replica-1\.\n$/);
  });

  it("a replica's stack named in main's synaxic:replicaStacks is the one checked and run", async () => {
    const { ws, calls } = fakeWorkspace({
      [MAIN]: { config: { "synaxic:replicas": '["replica-1=10.0.0.3"]', "synaxic:replicaStacks": '{"replica-1":"ops/db-1"}' }, upOutputs: fleetOutputs("replica-1") },
      "ops/db-1": {},
    });
    const outcomes = await deployFleet(ws, { kind: "up", mainStack: MAIN, replicaStacks: [], showOutput: false }, io().io);
    expect(calls.filter((c) => c.startsWith("up "))).toEqual([`up ${MAIN}`, "up ops/db-1"]);
    expect(outcomes.every((o) => o.ok)).toBe(true);
  });

  it("a replica stack that does not exist is a failure that stops the run", async () => {
    const { ws } = fakeWorkspace({ [MAIN]: { outputs: fleetOutputs("replica-1", "replica-2") }, "acme/synaxic/replica-2": {} });
    const { out, io: sink } = io();
    const outcomes = await deployFleet(ws, { kind: "preview", mainStack: MAIN, replicaStacks: [], showOutput: false }, sink);
    expect(outcomes.map((o) => [o.stack, o.ok])).toEqual([
      [MAIN, true],
      ["acme/synaxic/replica-1", false],
    ]);
    expect(out.stderr).toContain("acme/synaxic/replica-1: cannot select the stack: error: no stack named 'acme/synaxic/replica-1' found");
  });
});

describe("summaries and config", () => {
  it("formats an OpMap for up and for preview", () => {
    expect(formatChanges({ create: 3, update: 1, same: 40, replace: 0 }, "up")).toBe("3 created, 1 updated, 40 unchanged");
    expect(formatChanges({ create: 3, delete: 2 }, "preview")).toBe("3 to create, 2 to delete");
    expect(formatChanges({ refresh: 4 }, "up")).toBe("4 refresh");
    expect(formatChanges({}, "preview")).toBe("no resources");
  });

  it("reads the replicas' names from synaxic:replicas as the CLI prints a list config value (JSON)", () => {
    expect(replicasFromConfig('["replica-1=10.10.0.3","replica-2 = 10.10.0.4"]')).toEqual(["replica-1", "replica-2"]);
    expect(replicasFromConfig(undefined)).toEqual([]);
    expect(() => replicasFromConfig("replica-1=10.10.0.3")).toThrow(/not a list/);
  });
});

describe("a failed stack's summary", () => {
  it("the CLI's error lines out of the Automation API's CommandError (its whole stdout and stderr), else the last lines", () => {
    // The shape of automation/errors.js CommandError's message: code, stdout, stderr, err.
    const message = [
      "code: 255",
      " stdout: Updating (replica-2):",
      "    pulumi:pulumi:Stack synaxic-replica-2 running error: Running program failed with an unhandled exception:",
      "Resources:",
      "    1 errored",
      "",
      " stderr: ",
      "error: update failed",
      "error: update failed",
      " err?: Error: Command failed with exit code 255: pulumi up --yes --skip-preview --stack replica-2 --non-interactive",
    ].join("\n");
    expect(failureLines(message)).toEqual([
      "pulumi:pulumi:Stack synaxic-replica-2 running error: Running program failed with an unhandled exception:",
      "error: update failed",
      "err?: Error: Command failed with exit code 255: pulumi up --yes --skip-preview --stack replica-2 --non-interactive",
    ]);
    expect(failureLines("one\ntwo\n\nthree")).toEqual(["one", "two", "three"]);
  });
});
