import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";

export interface FleetSecretsArgs {
  /** Password length; every password is letters and digits only, so it needs no quoting anywhere. */
  length?: number;
}

/** The fleet's generated passwords, one RandomPassword each; the engine keeps every one secret. */
export const PASSWORDS = [
  "postgresApp",
  "postgresReplication",
  "postgresRewind",
  "postgresExporter",
  "redisApp",
  "redisReplication",
  "redisExporter",
  "redisAdmin",
  "grafanaAdmin",
  "truststore",
  // pgBackRest's repository encryption (repo1-cipher-pass): lose it and the backups are unreadable.
  "backupCipher",
] as const;

export type PasswordName = (typeof PASSWORDS)[number];

/** Every password the fleet uses, generated once and kept in the main stack's state. */
export class FleetSecrets extends pulumi.ComponentResource {
  public readonly passwords: Record<PasswordName, pulumi.Output<string>>;

  constructor(name: string, args: FleetSecretsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:FleetSecrets", name, {}, opts);
    const length = args.length ?? 40;
    const entries = PASSWORDS.map((p) => {
      const pw = new random.RandomPassword(`${name}-${p}`, { length, special: false, minLower: 4, minUpper: 4, minNumeric: 4 }, { parent: this });
      // The engine marks `result` secret; saying so here as well keeps it
      // secret for anything that reads it before the engine has answered.
      return [p, pulumi.secret(pw.result)] as const;
    });
    this.passwords = Object.fromEntries(entries) as Record<PasswordName, pulumi.Output<string>>;
    this.registerOutputs({ passwords: this.passwords });
  }
}
