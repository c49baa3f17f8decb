/**
 * The one quoting helper: every shell command the program or its tests build
 * is an argv array turned into text here, never string concatenation.
 */

/** Quotes one argument for a POSIX shell. */
export function shellQuote(arg: string): string {
  if (arg === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Joins an argv array into one shell command line, each word quoted. */
export function sh(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error("sh: empty argv");
  return argv.map(shellQuote).join(" ");
}

/** Joins several commands so that the first failure stops the rest. */
export function shAnd(commands: readonly (readonly string[])[]): string {
  return commands.map((c) => sh(c)).join(" && ");
}
