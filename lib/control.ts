/**
 * The fleet's primary as one decision: the control stack (a stack with no
 * hosts) says which host is primary, under a generation number that rises
 * with every change, and records how each former primary was fenced. Every
 * host stack that names the control stack (`controlStack`) reads it through a
 * StackReference and takes its role from it: it promotes only when the
 * control stack names it, follows whoever it names otherwise, and a host
 * recorded as fenced comes back only as a replica (through pg_rewind).
 *
 * Pure: the rules of a change, and what a host does under a given state.
 */
import { ConfigError, type FenceMethod } from "./config";
import { INITIAL_CONTROL, controlInfoSchema, type ControlInfo } from "./controlInfo";

export { INITIAL_CONTROL, controlInfoSchema, type ControlInfo };

export interface ControlSettings {
  primary: string;
  primaryGeneration: number;
  fence: Readonly<Record<string, FenceMethod>>;
}

/** A change of primary this `pulumi up` makes: who is fenced, and how. */
export interface Demotion {
  host: string;
  method: FenceMethod;
}

/**
 * The next state from the last deployed one and the stack's settings, with
 * the demotion it needs. Throws a ConfigError naming the key when the change
 * is not allowed: the generation never goes down, rises exactly when the
 * primary changes, and a primary changes only with its predecessor fenced.
 */
export function nextControl(previous: ControlInfo, settings: ControlSettings): { next: ControlInfo; demotion: Demotion | null } {
  const { primary, primaryGeneration: generation } = settings;
  if (generation < previous.generation) {
    throw new ConfigError("primaryGeneration", `got ${generation}; the control stack is at generation ${previous.generation} and it never goes down`);
  }
  if (primary === previous.primary) {
    if (generation !== previous.generation) {
      throw new ConfigError(
        "primaryGeneration",
        `got ${generation} while the primary stays ${previous.primary}; it changes only together with primary (set it back to ${previous.generation})`,
      );
    }
    return { next: previous, demotion: null };
  }
  if (generation !== previous.generation + 1) {
    throw new ConfigError(
      "primaryGeneration",
      `got ${generation}; the primary changes from ${previous.primary} to ${primary}, so the generation must become ${previous.generation + 1}`,
    );
  }
  const method = settings.fence[previous.primary];
  if (!method) {
    throw new ConfigError(
      `fence.${previous.primary}`,
      `missing; ${previous.primary} is the primary now and must be fenced before ${primary} takes writes: ` +
        `\`pulumi config set --path 'fence.${previous.primary}' stop\` if it is reachable, poweroff for a Hetzner server, ` +
        `or acknowledged for an existing host you cannot reach and have made sure is off`,
    );
  }
  const fenced = Object.fromEntries(Object.entries(previous.fenced).filter(([h]) => h !== primary));
  fenced[previous.primary] = { method, generation };
  return {
    next: { version: 1, primary, generation, previousPrimary: previous.primary, fenced },
    demotion: { host: previous.primary, method },
  };
}

/** What one host stack does under the control stack's state. */
export interface HostRole {
  /** Promote this host's standby (a replica), or take the primary role back (main). */
  promote: boolean;
  /** The promoted replica this host follows; empty to follow the main host (or to be primary). */
  followPrimary: string;
  /** This replica's data may hold a former primary's timeline: rewind it onto the primary's. */
  rejoin: boolean;
}

/**
 * The role of `hostName` in a fleet whose control stack says `control`.
 * `fleetHosts` are the main host and the replicas the main stack lists: the
 * control stack must name one of them as primary.
 */
export function hostRole(control: ControlInfo, hostName: string, fleetHosts: readonly string[]): HostRole {
  if (!fleetHosts.includes(control.primary)) {
    throw new ConfigError("controlStack", `names ${JSON.stringify(control.primary)} as primary, which is not a host of this fleet (${fleetHosts.join(", ")})`);
  }
  const previous = control.previousPrimary;
  if (previous !== null && control.fenced[previous]?.generation !== control.generation) {
    throw new ConfigError("controlStack", `has primary ${control.primary} at generation ${control.generation} without a record that ${previous} was fenced; run \`pulumi up\` on the control stack`);
  }
  if (hostName === "main") {
    // Main takes the role back by promoting the standby it became; before any
    // change it is simply the primary.
    return { promote: control.primary === "main" && control.generation > 0, followPrimary: control.primary === "main" ? "" : control.primary, rejoin: false };
  }
  const promote = control.primary === hostName;
  return {
    promote,
    followPrimary: promote || control.primary === "main" ? "" : control.primary,
    // A former primary's data has its own timeline past the fork: it rewinds.
    rejoin: !promote && hostName in control.fenced,
  };
}

/** A control stack output checked against its schema; the error names the stack and what to do. */
export function checkControlOutput(stack: string, value: unknown): ControlInfo {
  if (value === undefined || value === null) {
    throw new ConfigError("controlStack", `stack ${stack} has no "control" output; run \`pulumi up\` on the control stack first`);
  }
  const r = controlInfoSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError("controlStack", `stack ${stack}: output "control${issue.path.length ? `.${issue.path.join(".")}` : ""}" is malformed (${issue.message}); run \`pulumi up\` on the control stack with this version of the program`);
  }
  return r.data;
}
