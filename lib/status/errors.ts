/** The status command's errors; each says what went wrong and where, never a secret. */

/** A server answered, but not with what the status command expects. */
export class StatusParseError extends Error {
  constructor(what: string, detail: string) {
    super(`unexpected ${what} output: ${detail}`);
    this.name = "StatusParseError";
  }
}

/** The host itself could not be reached (SSH failed, timed out). */
export class ConnectionError extends Error {
  constructor(
    readonly host: string,
    detail: string,
  ) {
    super(`cannot reach ${host}: ${detail}`);
    this.name = "ConnectionError";
  }
}

/** The host was reached, but the command on it failed (container stopped, server down, refused). */
export class CommandError extends Error {
  constructor(
    readonly host: string,
    what: string,
    detail: string,
  ) {
    super(`${what} on ${host} failed: ${detail}`);
    this.name = "CommandError";
  }
}

/** Wrong command line. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A stack's outputs are missing, malformed or cannot be read. */
export class StackOutputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StackOutputError";
  }
}
