/**
 * `fleet up` and `fleet preview`: every stack of the fleet in order (the
 * control stack first when the main stack's config names one in
 * controlStack, then main, then each replica), through Pulumi's Automation
 * API, with each stack's summary; the first failure stops the run.
 *
 * The Automation API (@pulumi/pulumi/automation) selects an existing stack
 * of the program on disk with LocalWorkspace.selectStack({ stackName,
 * workDir }); Stack.up() runs `pulumi up --yes --skip-preview` and
 * Stack.preview() `pulumi preview`, each rejecting with a CommandError when
 * the CLI exits non-zero (automation/cmd.js: createCommandError);
 * UpResult.summary.resourceChanges and PreviewResult.changeSummary are the
 * OpMap of counts per operation (automation/stack.d.ts). The module is
 * loaded only by these two commands: it is not needed to start the others.
 */
import { UsageError } from "../status/errors";
import { replicaStackName } from "../status/outputs";

/** Counts per operation, as the Automation API's OpMap. */
export type OpCounts = Partial<Record<string, number>>;

export interface StackRunResult {
  /** up: the update's result ("succeeded"); preview: "previewed". */
  result: string;
  changes: OpCounts;
  /** up: the stack's outputs after the update (plain values). */
  outputs?: Record<string, unknown>;
}

/** One stack, as much of the Automation API's Stack as the fleet command uses. */
export interface FleetStack {
  readonly name: string;
  up(onOutput: (text: string) => void): Promise<StackRunResult>;
  preview(onOutput: (text: string) => void): Promise<StackRunResult>;
  /** The stack's config, key -> value (secret values never leave this module's caller). */
  config(): Promise<Record<string, string>>;
  outputs(): Promise<Record<string, unknown>>;
}

export interface FleetWorkspace {
  select(stackName: string): Promise<FleetStack>;
}

/** The real workspace: the program in workDir, the Pulumi CLI on PATH. */
export async function automationWorkspace(workDir: string): Promise<FleetWorkspace> {
  const { LocalWorkspace } = await import("@pulumi/pulumi/automation");
  const plain = (m: Record<string, { value: unknown }>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v.value]));
  return {
    async select(stackName) {
      const stack = await LocalWorkspace.selectStack({ stackName, workDir });
      return {
        name: stackName,
        async up(onOutput) {
          const r = await stack.up({ onOutput });
          return { result: r.summary.result, changes: { ...(r.summary.resourceChanges ?? {}) }, outputs: plain(r.outputs) };
        },
        async preview(onOutput) {
          const r = await stack.preview({ onOutput });
          return { result: "previewed", changes: { ...r.changeSummary } };
        },
        async config() {
          const all = await stack.getAllConfig();
          return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v.value]));
        },
        async outputs() {
          return plain(await stack.outputs());
        },
      };
    },
  };
}

/** "3 to create, 1 to update, 40 unchanged" (preview) or "3 created, ..." (up). */
export function formatChanges(changes: OpCounts, kind: "up" | "preview"): string {
  const words: Record<string, [string, string]> = {
    create: ["created", "to create"],
    update: ["updated", "to update"],
    replace: ["replaced", "to replace"],
    delete: ["deleted", "to delete"],
    same: ["unchanged", "unchanged"],
  };
  const parts: string[] = [];
  for (const [op, n] of Object.entries(changes)) {
    if (!n) continue;
    const w = words[op];
    parts.push(w ? `${n} ${kind === "up" ? w[0] : w[1]}` : `${n} ${op}`);
  }
  return parts.length ? parts.join(", ") : "no resources";
}

/** The replicas' names from a main stack's config value synaxic:replicas (["replica-1=10.10.0.3", ...] as JSON). */
export function replicasFromConfig(value: string | undefined): string[] {
  if (!value) return [];
  let list: unknown;
  try {
    list = JSON.parse(value);
  } catch {
    throw new UsageError(`the main stack's synaxic:replicas is not a list: ${JSON.stringify(value.slice(0, 80))}`);
  }
  if (!Array.isArray(list)) throw new UsageError("the main stack's synaxic:replicas is not a list");
  return list.map((e) => String(e).split("=")[0]!.trim()).filter((n) => n.length > 0);
}

/** The main stack's synaxic:replicaStacks (replica name -> stack), as the CLI prints a map config value (JSON); none when unset. */
export function readReplicaStacks(value: string | undefined): Record<string, string> {
  if (value === undefined || value.trim() === "") return {};
  let map: unknown;
  try {
    map = JSON.parse(value);
  } catch {
    throw new UsageError(`the main stack's synaxic:replicaStacks is not a map: ${JSON.stringify(value.slice(0, 80))}`);
  }
  if (!map || typeof map !== "object" || Array.isArray(map)) throw new UsageError("the main stack's synaxic:replicaStacks is not a map");
  return Object.fromEntries(Object.entries(map as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
}

/** The replicas' names from a main stack's outputs (fleet.replicas). */
function replicasFromOutputs(outputs: Record<string, unknown> | undefined): string[] {
  const list = (outputs?.fleet as { replicas?: unknown } | undefined)?.replicas;
  return Array.isArray(list) ? list.map((r) => (r as { name?: unknown }).name).filter((n): n is string => typeof n === "string") : [];
}

export interface DeployOptions {
  kind: "up" | "preview";
  mainStack: string;
  /** Replica stacks named on the command line; otherwise one per replica of the main stack, named after it. */
  replicaStacks: readonly string[];
  /** Print each stack's engine output as it comes. */
  showOutput: boolean;
}

export interface DeployIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Monotonic milliseconds, for each stack's duration. */
  now(): number;
}

export interface StackOutcome {
  stack: string;
  ok: boolean;
  summary: string;
}

/**
 * Runs up or preview on the fleet's stacks in order and stops at the first
 * failure; resolves with each stack's outcome (the failed one last).
 */
export async function deployFleet(ws: FleetWorkspace, o: DeployOptions, io: DeployIo): Promise<StackOutcome[]> {
  const outcomes: StackOutcome[] = [];
  const main = await ws.select(o.mainStack);
  const config = await main.config();
  const control = config["synaxic:controlStack"]?.trim() || undefined;
  const configured = replicasFromConfig(config["synaxic:replicas"]);

  const run = async (stack: FleetStack): Promise<StackRunResult | undefined> => {
    io.stdout(`\n=== ${o.kind} ${stack.name} ===\n`);
    const t0 = io.now();
    try {
      const r = await (o.kind === "up" ? stack.up : stack.preview).call(stack, o.showOutput ? (t) => io.stdout(t) : () => undefined);
      const summary = `${stack.name}: ${r.result}, ${formatChanges(r.changes, o.kind)} (${((io.now() - t0) / 1000).toFixed(1)} s)`;
      io.stdout(`${summary}\n`);
      outcomes.push({ stack: stack.name, ok: true, summary });
      return r;
    } catch (e) {
      const last = failureLines(e instanceof Error ? e.message : String(e)).join("\n  ");
      const summary = `${stack.name}: FAILED after ${((io.now() - t0) / 1000).toFixed(1)} s\n  ${last}`;
      io.stderr(`${summary}\n`);
      outcomes.push({ stack: stack.name, ok: false, summary });
      return undefined;
    }
  };

  // A replica's stack: where main's replicaStacks names it, else beside main's.
  const named = readReplicaStacks(config["synaxic:replicaStacks"]);
  const stackOf = (n: string) => named[n] ?? replicaStackName(o.mainStack, n);
  const laterReplicas = o.replicaStacks.length ? [...o.replicaStacks] : configured.map(stackOf);
  const select = (name: string) =>
    ws.select(name).catch((e: unknown) => {
      const summary = `${name}: cannot select the stack: ${failureLines(e instanceof Error ? e.message : String(e)).join(" | ")}`;
      io.stderr(`${summary}\n`);
      outcomes.push({ stack: name, ok: false, summary });
      return undefined;
    });
  if (control) {
    const c = await select(control);
    if (!c || !(await run(c))) return stopped(outcomes, [o.mainStack, ...laterReplicas], io);
  }
  // Main reads each replica it lists in that replica's stack (its certificate
  // requests, stacks/main.ts readCertFlow), and the engine fails main's
  // program on a stack that does not exist: say so before running it.
  for (const n of configured) {
    const stack = stackOf(n);
    const exists = await ws.select(stack).then(
      () => true,
      () => false,
    );
    if (!exists) {
      const summary = `${stack}: the stack does not exist. Main reads each replica it lists in that replica's stack: create it first (\`pulumi stack init ${stack}\`, with the replica's config), or name its stack in synaxic:replicaStacks`;
      io.stderr(`${summary}\n`);
      outcomes.push({ stack, ok: false, summary });
      return stopped(outcomes, [o.mainStack, ...laterReplicas.filter((r) => r !== stack)], io);
    }
  }
  const mainResult = await run(main);
  if (!mainResult) return stopped(outcomes, laterReplicas, io);

  let replicaStacks = [...o.replicaStacks];
  if (replicaStacks.length === 0) {
    // After an up, the outputs it just wrote; for a preview, the current ones plus any replica only the config has yet.
    const names = replicasFromOutputs(mainResult.outputs ?? (await main.outputs()));
    for (const n of configured) if (!names.includes(n)) names.push(n);
    replicaStacks = names.map(stackOf);
  }
  const waiting: FleetStack[] = [];
  for (const [i, name] of replicaStacks.entries()) {
    const s = await select(name);
    const r = s && (await run(s));
    if (!s || !r) return stopped(outcomes, replicaStacks.slice(i + 1), io);
    if (r.outputs?.awaitingMain === true) waiting.push(s);
  }
  // A new replica publishes its certificate requests on its first up, and a
  // replica on main-made keys on its first up with this version: main's next
  // up signs them, and each of those replicas' next starts its services on
  // its own keys (stacks/replica.ts). One more round does that.
  if (o.kind === "up" && waiting.length > 0) {
    io.stdout(`
${waiting.map((s) => s.name).join(", ")} published certificate requests that main has not signed yet: ${o.mainStack} again, then ${waiting.length === 1 ? "that stack" : "those stacks"}
`);
    if (!(await run(main))) return stopped(outcomes, waiting.map((s) => s.name), io);
    for (const [i, s] of waiting.entries()) {
      if (!(await run(s))) return stopped(outcomes, waiting.slice(i + 1).map((x) => x.name), io);
    }
  }
  io.stdout(`\n${o.kind === "up" ? "Updated" : "Previewed"} ${outcomes.length} stack${outcomes.length === 1 ? "" : "s"}:\n${outcomes.map((x) => `  ${x.summary}`).join("\n")}\n`);
  return outcomes;
}

/**
 * What to show of a failed stack: the CLI's error lines (the Automation API's
 * CommandError carries the whole stdout and stderr), else the last lines.
 */
export function failureLines(message: string): string[] {
  // CommandError's message opens its stdout and stderr parts with " stdout: " and " stderr: ".
  const lines = message.split(/\r?\n/).map((l) => l.trimEnd().replace(/^\s*std(out|err): /, "")).filter((l) => l.trim());
  const errors = [...new Set(lines.filter((l) => /\berror\b/i.test(l) && !/^\s*\d+ errored$/.test(l)).map((l) => l.trim()))];
  return errors.length ? errors.slice(0, 6) : lines.slice(-6).map((l) => l.trim());
}

function stopped(outcomes: StackOutcome[], rest: readonly string[], io: DeployIo): StackOutcome[] {
  const failed = outcomes.at(-1);
  io.stderr(`\nStopped at ${failed?.stack ?? "?"}${rest.length ? `; not run: ${rest.join(", ")}` : ""}.\n`);
  return outcomes;
}
