/**
 * passwordRotation: the config key, the RandomPassword keepers, and where a
 * rotated password goes (the roles step, the Redis users steps, the app's
 * secret files, Grafana's reset step), in which order, and that it stays secret.
 */
import { describe, expect, it } from "vitest";
import { ConfigError, loadStackConfig, parseStackConfig, type MainConfig, type StackConfig } from "../../lib/config";
import { PASSWORDS } from "../../components/FleetSecrets";
import { ROTATION_REFUSED, rotationKeepers, rotationLoweredError } from "../../lib/passwordRotation";
import { scramSaltFor, scramSha256Verifier } from "../../templates/postgres-sql";
import { redisAclPasswordHash } from "../../templates/redis";
import { mainStack } from "../../stacks/main";
import { SECRET_KEYS, mainConfig, replicaConfig, runMain, runReplica } from "./fixtures";
import { SECRET_SIG, runMocked, findLeaks, type RunResult } from "./harness";

const P = "synaxic:";
const rotation = (m: Record<string, unknown>) => ({ [`${P}passwordRotation`]: JSON.stringify(m) });
const parseMain = (extra: Record<string, string>) => parseStackConfig(mainConfig(1, extra), new Set(SECRET_KEYS)) as MainConfig;
const errorOf = (f: () => unknown): ConfigError => {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("no ConfigError");
};

describe("passwordRotation: the config key", () => {
  it("reads a counter per password name; none by default", () => {
    expect(parseMain({}).passwordRotation).toEqual({});
    expect(parseMain(rotation({ postgresApp: 1, redisApp: 3 })).passwordRotation).toEqual({ postgresApp: 1, redisApp: 3 });
  });

  it("refuses an unknown name, listing the names it can rotate", () => {
    const e = errorOf(() => parseMain(rotation({ postgresAp: 1 })));
    expect(e.key).toBe("passwordRotation[postgresAp]");
    expect(e.message).toContain('unknown password "postgresAp"');
    for (const p of PASSWORDS.filter((p) => !(p in ROTATION_REFUSED))) expect(e.message).toContain(p);
    expect(e.message).not.toMatch(/backupCipher|redisAdmin/);
  });

  it("refuses the backup cipher pass: the repository would become unreadable", () => {
    const e = errorOf(() => parseMain(rotation({ backupCipher: 1 })));
    expect(e.key).toBe("passwordRotation[backupCipher]");
    expect(e.message).toMatch(/backupCipher cannot be rotated: the backup repository is encrypted with it/);
  });

  it("refuses redisAdmin, the user that changes the others", () => {
    expect(errorOf(() => parseMain(rotation({ redisAdmin: 1 }))).message).toMatch(/redisAdmin cannot be rotated/);
  });

  it.each([[-1], [1.5], ["two"], [null]])("refuses the counter %j, naming the expected form", (v) => {
    const e = errorOf(() => parseMain(rotation({ grafanaAdmin: v })));
    expect(e.key).toBe("passwordRotation[grafanaAdmin]");
    expect(e.message).toMatch(/expected a whole number from 0 to 1000000/);
  });

  it("refuses a value that is not a map", () => {
    const e = errorOf(() => parseMain({ [`${P}passwordRotation`]: "3" }));
    expect(e.key).toBe("passwordRotation");
    expect(e.message).toMatch(/expected a map from password name to counter/);
  });

  it("is refused on a replica stack, which generates no password", () => {
    const e = errorOf(() => parseStackConfig(replicaConfig("replica-1", "10.10.0.3", rotation({ postgresApp: 1 })), new Set(SECRET_KEYS)));
    expect(e.key).toBe("passwordRotation");
    expect(e.message).toMatch(/is for the main stack/);
  });

  it("keepers: none at 0 (an existing fleet keeps its passwords), the counter from 1", () => {
    expect(rotationKeepers(undefined)).toBeUndefined();
    expect(rotationKeepers(0)).toBeUndefined();
    expect(rotationKeepers(2)).toEqual({ rotation: "2" });
  });

  it("a counter lower than the deployed one is an error naming it; equal, higher or new ones are not", () => {
    expect(rotationLoweredError({ postgresApp: 2 }, { postgresApp: 1 })).toEqual({ key: "passwordRotation[postgresApp]", message: expect.stringMatching(/got 1; this stack last deployed 2/) });
    expect(rotationLoweredError({ postgresApp: 2 }, {})?.message).toMatch(/got 0/);
    expect(rotationLoweredError({ postgresApp: 2 }, { postgresApp: 2, redisApp: 1 })).toBeNull();
    expect(rotationLoweredError({}, { postgresApp: 5 })).toBeNull();
  });
});

type Main = RunResult<Awaited<ReturnType<typeof mainStack>>>;
const pwOf = (r: Main, name: string) => (r.values.replicaCredentials as Record<string, string>)[name]!;
const step = (r: Main, name: string) => r.one("command:remote:Command", name);
const isSecretInput = (v: unknown) => !!v && typeof v === "object" && (v as Record<string, unknown>)[SECRET_SIG] !== undefined;

describe("passwordRotation under mocks: what a raised counter changes", () => {
  it("regenerates only the named password: its keepers carry the counter, every other password has none", async () => {
    const before = await runMain(1);
    const after = await runMain(1, rotation({ redisApp: 1 }));
    const keepers = (r: Main) => Object.fromEntries(r.of("random:index/randomPassword:RandomPassword").map((p) => [p.name, p.inputs.keepers]));
    expect(Object.values(keepers(before)).every((k) => k === undefined)).toBe(true);
    const k = keepers(after);
    expect(k["fleet-redisApp"]).toEqual({ rotation: "1" });
    expect(Object.entries(k).filter(([n, v]) => n !== "fleet-redisApp" && v !== undefined)).toEqual([]);
    // Under the mocks, as with the provider, new keepers mean a new value.
    expect(pwOf(after, "redisApp")).not.toBe(pwOf(before, "redisApp"));
    for (const p of ["postgresApp", "postgresReplication", "redisAdmin", "redisReplication", "truststorePassword"]) expect(pwOf(after, p)).toBe(pwOf(before, p));
  });

  it("postgresApp: the roles step sets the new password's verifier, the app's secret file holds it, and the new app slot waits for the roles", async () => {
    const before = await runMain(1);
    const after = await runMain(1, rotation({ postgresApp: 1 }));
    const pw = pwOf(after, "postgresApp");
    expect(pw).not.toBe(pwOf(before, "postgresApp"));
    const roles = step(after, "postgres-roles");
    expect(String(roles.inputs.stdin)).toContain(scramSha256Verifier(pw, scramSaltFor("synaxic", pw)));
    expect(String(roles.inputs.stdin)).not.toContain(scramSha256Verifier(pwOf(before, "postgresApp"), scramSaltFor("synaxic", pwOf(before, "postgresApp"))));
    expect(isSecretInput(roles.raw.stdin)).toBe(true);
    const app = after.one("docker:index/container:Container", "app-container");
    const file = (app.inputs.uploads as { file: string; content?: string }[]).find((u) => u.file.endsWith("spring.datasource.password"))!;
    expect(file.content).toBe(pw);
    expect(after.resources.find((r) => r.name === "app")!.opts.dependsOn).toEqual(expect.arrayContaining(["postgres-roles", "redis"]));
  });

  it("redisApp: users.acl and both users steps carry the new hash; add runs inside the Redis component (before the app), sync after the old slot is retired", async () => {
    const before = await runMain(1);
    const after = await runMain(1, rotation({ redisApp: 1 }));
    const [oldHash, newHash] = [redisAclPasswordHash(pwOf(before, "redisApp")), redisAclPasswordHash(pwOf(after, "redisApp"))];
    const acl = step(after, "redis-acl");
    expect(String(acl.inputs.stdin)).toContain(`user synaxic reset on ${newHash} `);
    expect(String(acl.inputs.stdin)).not.toContain(oldHash);
    expect(acl.inputs.create).toContain("redis-acl/users.acl");
    const add = step(after, "redis-users-add");
    const sync = step(after, "redis-users-sync");
    for (const s of [add, sync]) {
      expect(String(s.inputs.stdin)).toContain(newHash);
      // The admin password is the first line; the commands never carry a password.
      expect(String(s.inputs.stdin).split("\n")[0]).toBe(pwOf(after, "redisAdmin"));
      expect(isSecretInput(s.raw.stdin)).toBe(true);
      expect(s.opts.additionalSecretOutputs).toEqual(expect.arrayContaining(["stdout", "stderr"]));
      expect(s.inputs.logging).toBe("none");
    }
    expect(add.inputs.create).toContain("ACL GETUSER");
    expect(sync.inputs.create).toContain("ACL DELUSER");
    expect(add.opts.parent).toBe("redis");
    expect(sync.opts.parent).not.toBe("redis");
    expect(sync.opts.dependsOn).toEqual(expect.arrayContaining(["redis-users-add", "app-retire", "exporters"]));
    // The container no longer holds the users: a new password does not re-create Redis.
    const redis = after.one("docker:index/container:Container", "redis-container");
    expect((redis.inputs.uploads as { file: string }[]).map((u) => u.file)).not.toContain("/etc/synaxic/users.acl");
    expect(redis.inputs.mounts).toEqual([expect.objectContaining({ type: "bind", target: "/etc/synaxic/acl", readOnly: true })]);
    const redisBefore = before.one("docker:index/container:Container", "redis-container");
    expect(redis.inputs).toEqual(redisBefore.inputs);
  });

  it("grafanaAdmin: the reset step gets the new password on stdin, runs on every change, and keeps it secret", async () => {
    const before = await runMain(1);
    const after = await runMain(1, rotation({ grafanaAdmin: 1 }));
    const pw = after.values.grafanaAdminPassword as string;
    expect(pw).not.toBe(before.values.grafanaAdminPassword);
    const reset = step(after, "monitoring-grafana-admin-password");
    expect(reset.inputs.stdin).toBe(`${pw}\n`);
    expect(isSecretInput(reset.raw.stdin)).toBe(true);
    expect(reset.inputs.create).toContain("admin reset-admin-password --password-from-stdin");
    expect(reset.inputs.create).not.toContain(pw);
    expect(reset.inputs.triggers).toEqual(["monitoring-grafana-id"]);
    expect(reset.opts.dependsOn).toEqual(expect.arrayContaining(["monitoring-grafana"]));
    expect(after.secretOutputs.has("grafanaAdminPassword")).toBe(true);
  });

  it("no rotated password appears outside a secret, in any resource's inputs or the outputs", async () => {
    const r = await runMain(1, rotation({ postgresApp: 1, redisApp: 1, grafanaAdmin: 1, postgresReplication: 1, exporterScrape: 1 }));
    expect(r.resources.flatMap((x) => findLeaks(x.raw, r.secretValues, x.name))).toEqual([]);
    expect(findLeaks(r.values.fleet, r.secretValues)).toEqual([]);
    expect(r.values.passwordRotation).toEqual({ postgresApp: 1, redisApp: 1, grafanaAdmin: 1, postgresReplication: 1, exporterScrape: 1 });
    expect(r.secretOutputs.has("passwordRotation")).toBe(false);
  });

  it("a replica stack takes the new passwords from main and syncs its own Redis users after its app's old slot", async () => {
    const { main, replica } = await runReplica("replica-1", "10.10.0.3", { replicas: 1, mainExtra: rotation({ postgresReplication: 1, redisApp: 1 }) });
    const creds = main.values.replicaCredentials as Record<string, string>;
    const pg = replica.one("docker:index/container:Container", "postgres-container");
    const pass = (pg.inputs.uploads as { file: string; content?: string }[]).find((u) => u.file === "/run/synaxic/pgpass")!;
    expect(pass.content).toContain(`:replicator:${creds.postgresReplication}`);
    const sync = replica.one("command:remote:Command", "redis-users-sync");
    expect(String(sync.inputs.stdin)).toContain(redisAclPasswordHash(creds.redisApp!));
    expect(sync.opts.dependsOn).toEqual(expect.arrayContaining(["app-retire"]));
  });
});

describe("passwordRotation: a counter that goes down", () => {
  const run = (deployed: Record<string, number> | undefined, set: Record<string, number>) =>
    runMocked(
      {
        config: mainConfig(1, rotation(set)),
        secretKeys: SECRET_KEYS,
        stack: "main",
        stackReferences: { "organization/synaxic/main": { outputs: deployed ? { passwordRotation: deployed } : {}, secretOutputNames: [] } },
      },
      () => mainStack(loadStackConfig() as MainConfig & StackConfig),
    );

  it("is refused against what this stack last deployed, naming the key", async () => {
    await expect(run({ postgresApp: 2 }, { postgresApp: 1 })).rejects.toThrow(/synaxic:passwordRotation\[postgresApp\]: got 1; this stack last deployed 2/);
  });

  it("raising it, or a first rotation on a stack that never exported one, goes ahead", async () => {
    const r = await run({ postgresApp: 1 }, { postgresApp: 2 });
    expect(r.values.passwordRotation).toEqual({ postgresApp: 2 });
    const first = await run(undefined, { redisApp: 1 });
    expect(first.values.passwordRotation).toEqual({ redisApp: 1 });
  });
});
