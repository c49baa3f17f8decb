/**
 * Password rotation (`passwordRotation`): a counter per generated password.
 * Raising a password's counter regenerates that password alone (the counter
 * is its RandomPassword's `keepers`) and `pulumi up` rolls it through every
 * consumer in the order docs/operations.md#rotating-a-password gives. Pure.
 */

/** Passwords that cannot be rotated this way, and why (the config error says so). */
export const ROTATION_REFUSED: Readonly<Record<string, string>> = {
  backupCipher:
    "the backup repository is encrypted with it: a new cipher pass cannot read the backups and WAL already there (pgBackRest keeps one repo1-cipher-pass per repository); to change it, start a new repository (backupRepository.path) and take a full backup",
  redisAdmin:
    "the Redis users are changed at run time as admin (ACL SETUSER), and a new admin password cannot log in to apply itself: rotating it is not supported yet",
};

/** The error for a passwordRotation entry, or null when it is acceptable. */
export function rotationEntryError(name: string, counter: unknown, known: readonly string[]): string | null {
  if (!known.includes(name)) return `unknown password ${JSON.stringify(name)}; expected one of ${known.filter((p) => !(p in ROTATION_REFUSED)).join(", ")}`;
  const refused = ROTATION_REFUSED[name];
  if (refused !== undefined) return `${name} cannot be rotated: ${refused}`;
  if (typeof counter !== "number" || !Number.isInteger(counter) || counter < 0 || counter > 1_000_000) {
    return `expected a whole number from 0 to 1000000 (raise it by one to rotate ${name})`;
  }
  return null;
}

/**
 * The RandomPassword keepers for a counter: none at 0, so that a fleet that
 * never rotated keeps the passwords it has (adding keepers replaces a
 * RandomPassword), and the counter from 1 on.
 */
export function rotationKeepers(counter: number | undefined): Record<string, string> | undefined {
  if (counter === undefined || counter === 0) return undefined;
  if (!Number.isInteger(counter) || counter < 0) throw new Error(`rotationKeepers: counter ${counter} is not a whole number from 0`);
  return { rotation: String(counter) };
}

/**
 * A counter that went down (compared with what the stack last deployed, its
 * `passwordRotation` output): the error naming it, or null. Lowering would
 * regenerate the password too, but it reads as undoing a rotation, which
 * cannot bring the old password back.
 */
export function rotationLoweredError(previous: Readonly<Record<string, number>>, next: Readonly<Record<string, number>>): { key: string; message: string } | null {
  for (const [name, was] of Object.entries(previous)) {
    const now = next[name] ?? 0;
    if (now < was) {
      return {
        key: `passwordRotation[${name}]`,
        message: `got ${now}; this stack last deployed ${was} and the counter never goes down (an old password cannot come back; raise it to ${was + 1} to rotate again)`,
      };
    }
  }
  return null;
}
