/** The secrecy checks the stack tests rely on must themselves be able to fail. */
import { describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as command from "@pulumi/command";
import { findLeaks, runMocked, SECRET_SIG, SECRET_VALUE } from "./harness";

describe("the mock harness", () => {
  it("finds a secret in a plain input, and not inside a secret", () => {
    const secret = "SuperSecretValue123";
    expect(findLeaks({ envs: [`PASSWORD=${secret}`] }, [secret])).toEqual(["envs[0]"]);
    expect(findLeaks({ stdin: { [SECRET_SIG]: SECRET_VALUE, value: secret } }, [secret])).toEqual([]);
  });

  it("marks RandomPassword.result secret as the engine does, and catches a program that leaks it", async () => {
    const run = await runMocked({ config: {} }, () => {
      const pw = new random.RandomPassword("pw", { length: 20 });
      // A deliberate leak: the password unwrapped into a command line.
      new command.remote.Command("leaky", { connection: { host: "h" }, create: pulumi.unsecret(pw.result).apply((p) => `echo ${p}`) });
      return { out: pw.result };
    });
    expect(run.secretOutputs).toContain("out");
    const leaks = run.resources.flatMap((r) => findLeaks(r.raw, run.secretValues).map((p) => `${r.name}:${p}`));
    expect(leaks).toEqual(["leaky:create"]);
  });
});
