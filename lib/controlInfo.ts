/**
 * What the control stack records (its `control` output), without Pulumi:
 * the host stacks (lib/control.ts) and the status command (lib/status) both
 * read it.
 */
import { z } from "zod";

/**
 * How a former primary was made harmless before another host took writes
 * (the `fence` key):
 * - stop: it is reachable; the control stack stops its writing app, Redis and
 *   PostgreSQL over SSH (in that order: no write is acknowledged after the app
 *   stops, and PostgreSQL's clean shutdown sends its last WAL to the connected
 *   standbys) and keeps them from restarting (templates/fence.ts);
 * - poweroff: a Hetzner server, reachable or not (during a network partition
 *   the operator's side still reaches Hetzner's API): powered off through the
 *   API, and the control stack waits until Hetzner reports the action done;
 * - acknowledged: an existing host that cannot be reached; the operator has
 *   made sure it is off (or cut off from every client) and says so.
 */
export const FENCE_METHODS = ["stop", "poweroff", "acknowledged"] as const;
export type FenceMethod = (typeof FENCE_METHODS)[number];

export const controlInfoSchema = z.object({
  version: z.literal(1),
  /** The host whose PostgreSQL is the primary: "main" or a replica's name. */
  primary: z.string().min(1),
  generation: z.number().int().nonnegative(),
  /** The primary before the last change (null before any change). */
  previousPrimary: z.string().min(1).nullable(),
  /** Former primaries, how and in which generation each was fenced. */
  fenced: z.record(z.string(), z.object({ method: z.enum(FENCE_METHODS), generation: z.number().int().nonnegative() })),
});
export type ControlInfo = z.infer<typeof controlInfoSchema>;

/** What a control stack holds before its first `pulumi up`: the main host is primary. */
export const INITIAL_CONTROL: ControlInfo = { version: 1, primary: "main", generation: 0, previousPrimary: null, fenced: {} };
