/**
 * Backups as the status command reports them: `pgbackrest info
 * --output=json` run as postgres in a host's PostgreSQL container (the
 * fleet's one stanza, the container's config path; templates/pgbackrest.ts),
 * reduced to the stanza's status and its newest backup.
 */
import { infoArgv, parsePgbackrestInfo } from "../../templates/pgbackrest";
import { StatusParseError } from "./errors";
import type { BackupFacts } from "./types";

/** The fleet's stanza (lib/backup.ts STANZA; a test keeps the two equal without loading Pulumi here). */
export const FLEET_STANZA = "synaxic";

/** Argv, inside the PostgreSQL container, that prints the repository's contents as JSON. */
export function backupInfoArgv(): string[] {
  return infoArgv({ stanza: FLEET_STANZA });
}

/** Parses `pgbackrest info --output=json`; `now` is Unix seconds, for the newest backup's age. */
export function parseBackupInfo(stdout: string, now: number): BackupFacts {
  let stanzas;
  try {
    stanzas = parsePgbackrestInfo(stdout.trim());
  } catch (e) {
    throw new StatusParseError("pgbackrest info", e instanceof Error ? e.message : String(e));
  }
  const s = stanzas.find((x) => x.name === FLEET_STANZA);
  if (!s) throw new StatusParseError("pgbackrest info", `no stanza ${FLEET_STANZA} (stanzas: ${stanzas.map((x) => x.name).join(", ") || "none"})`);
  const newest = [...s.backup].sort((a, b) => b.timestamp.stop - a.timestamp.stop)[0];
  const archiveMax = s.archive.map((a) => a.max).filter((m): m is string => typeof m === "string").sort().at(-1) ?? null;
  return {
    stanza: s.name,
    status: { code: s.status.code, message: s.status.message },
    backupCount: s.backup.length,
    newest: newest ? { label: newest.label, type: newest.type, stoppedAt: newest.timestamp.stop, ageSeconds: Math.max(0, now - newest.timestamp.stop) } : null,
    archiveMax,
  };
}

/** "45 s", "12 min", "3 h 20 min", "2 d 4 h". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
