import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { rotationKeepers } from "../lib/passwordRotation";

export interface FleetSecretsArgs {
  /** Password length; every password is letters and digits only, so it needs no quoting anywhere. */
  length?: number;
  /** passwordRotation: a counter per password; a raised one regenerates that password alone (its keepers). */
  rotation?: Readonly<Record<string, number>>;
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
  // Prometheus' basic auth to node_exporter and postgres_exporter (templates/exporter-web.ts).
  "exporterScrape",
  // Redis' backup user, which takes the snapshots (templates/redis-backup.ts: SYNC, REPLCONF and PING only).
  "redisBackup",
] as const;

/** The passwords whose bcrypt hash a service checks instead of the password itself. */
export const HASHED_PASSWORDS = ["exporterScrape"] as const satisfies readonly PasswordName[];

export type PasswordName = (typeof PASSWORDS)[number];

/** Every password the fleet uses, generated once and kept in the main stack's state. */
export class FleetSecrets extends pulumi.ComponentResource {
  public readonly passwords: Record<PasswordName, pulumi.Output<string>>;
  /**
   * bcrypt hashes of some passwords: RandomPassword's `bcryptHash` output
   * (@pulumi/random 4.21, cost 10, computed once by the provider and kept in
   * state, so it does not change between runs). The SDK asks the engine to
   * keep it secret (additionalSecretOutputs: bcryptHash and result, in
   * randomPassword.js); so does this.
   */
  public readonly bcryptHashes: Record<(typeof HASHED_PASSWORDS)[number], pulumi.Output<string>>;

  constructor(name: string, args: FleetSecretsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:FleetSecrets", name, {}, opts);
    const length = args.length ?? 40;
    const entries = PASSWORDS.map((p) => {
      const keepers = rotationKeepers(args.rotation?.[p]);
      const pw = new random.RandomPassword(`${name}-${p}`, { length, special: false, minLower: 4, minUpper: 4, minNumeric: 4, ...(keepers ? { keepers } : {}) }, { parent: this });
      // The engine marks `result` secret; saying so here as well keeps it
      // secret for anything that reads it before the engine has answered.
      return [p, { result: pulumi.secret(pw.result), bcryptHash: pulumi.secret(pw.bcryptHash) }] as const;
    });
    this.passwords = Object.fromEntries(entries.map(([p, o]) => [p, o.result])) as Record<PasswordName, pulumi.Output<string>>;
    this.bcryptHashes = Object.fromEntries(entries.filter(([p]) => (HASHED_PASSWORDS as readonly string[]).includes(p)).map(([p, o]) => [p, o.bcryptHash])) as FleetSecrets["bcryptHashes"];
    this.registerOutputs({ passwords: this.passwords, bcryptHashes: this.bcryptHashes });
  }
}
