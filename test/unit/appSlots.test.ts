/**
 * Gapless app deploys (templates/app.ts deploy slots, components/SynaxicApp.ts):
 * what the slot step prints decides the container's name, port, health check
 * and the balancer's write upstream; the slot script itself, against a
 * stand-in `docker` that answers `container inspect` as Docker does.
 */
import { describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMain } from "./fixtures";
import { APP_SPEC_LABEL, appSlotPort, renderAppSlotScript } from "../../templates/app";

const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";

describe("the app's deploy slot under mocks", () => {
  it("slot b: the container's name, listen port and health check are slot b's, the balancer writes to it, and the settings digest is a plain label and the step's stdin", async () => {
    const run = await runMain(1, {}, { appSlots: { "app-slot": "b" } });
    const app = run.one(CONTAINER, "app-container");
    expect(app.inputs.name).toBe("synaxic-main-app-b");
    expect(app.inputs.envs).toContain("SERVER_PORT=8081");
    expect(JSON.stringify((app.inputs.healthcheck as { tests: string[] }).tests)).toContain("/dev/tcp/10.10.0.2/8081");
    expect(app.opts.deleteBeforeReplace).toBeUndefined();
    const conf = String(run.one(COMMAND, "balancer-conf").inputs.stdin);
    const write = conf.slice(conf.indexOf("upstream synaxic_write {"), conf.indexOf("}", conf.indexOf("upstream synaxic_write {")));
    expect([...write.matchAll(/server (\S+) /g)].map((m) => m[1])).toEqual(["10.10.0.2:8081"]);
    const step = run.one(COMMAND, "app-slot");
    const spec = String(step.inputs.stdin);
    expect(spec).toMatch(/^[0-9a-f]{32}$/);
    expect((app.inputs.labels as { label: string; value: string }[]).find((l) => l.label === APP_SPEC_LABEL)?.value).toBe(spec);
    expect(step.inputs.triggers).toEqual([spec]);
    expect(run.secretValues.some((v) => v === spec)).toBe(false);
    // Pulumi never deletes an app container itself (it could before the balancer's reload is done):
    // the retire step stops the old slot after the balancer, and removes the app's containers on destroy.
    expect(app.opts.retainOnDelete).toBe(true);
    const retire = run.one(COMMAND, "app-retire");
    expect(retire.opts.dependsOn).toEqual(expect.arrayContaining(["app-container", "balancer"]));
    expect(String(retire.inputs.stdin)).toMatch(/^synaxic-main-app-b\n/);
    expect(String(retire.inputs.create)).toContain("docker stop -t 45");
    expect(String(retire.inputs.delete)).toContain("docker rm -f");
    // The exported endpoint follows the slot.
    expect(run.values.balancerConfig).toContain("server 10.10.0.2:8081 ");
  });

  it("the balancer's configuration depends on the app's container (created once healthy), not only on the slot step: it cannot name the new slot before the app answers there", async () => {
    const run = await runMain(1);
    const conf = run.outputs.balancerConfig as unknown as { allResources(): Promise<Set<{ __name?: string }>> };
    const names = [...(await conf.allResources())].map((r) => r.__name);
    expect(names).toContain("app-container");
  });

  it("the digest changes with the environment and with a secret file, and not with the replicas list", async () => {
    // (The image enters as the ID the Docker provider resolved: a new tag of the same image changes nothing.)
    const spec = async (extra: Record<string, string>) => String((await runMain(1, extra)).one(COMMAND, "app-slot").inputs.stdin);
    const base = await spec({});
    expect(await spec({ "synaxic:googleClientId": "another.apps.googleusercontent.com" })).not.toBe(base);
    expect(await spec({ "synaxic:googleClientSecret": "another-google-client-secret" })).not.toBe(base);
    const two = String((await runMain(2)).one(COMMAND, "app-slot").inputs.stdin);
    expect(two).toBe(base);
  });

  it("appPort + 1 must be free for slot b", async () => {
    await expect(runMain(0, { "synaxic:appPort": "9099" })).rejects.toThrow(/appPort: got 9099; the app's second deploy slot listens on appPort \+ 1 = 9100, which is nodeExporterPort/);
    expect(appSlotPort(8080, "a")).toBe(8080);
    expect(appSlotPort(8080, "b")).toBe(8081);
    expect(() => appSlotPort(65535, "b")).toThrow(/no room for slot b/);
  });
});

describe("the slot script (renderAppSlotScript) against a stand-in docker", () => {
  /** A docker CLI that knows the containers given: `container inspect [-f LABEL-TEMPLATE] NAME`. */
  function withDocker(containers: Record<string, string | null>, want: string) {
    const dir = mkdtempSync(join(tmpdir(), "synaxic-slot-"));
    try {
      const cases = Object.entries(containers)
        .map(([name, spec]) => `  ${name}) [ -n "$fmt" ] && printf '%s\\n' ${JSON.stringify(spec ?? "")}; exit 0 ;;`)
        .join("\n");
      writeFileSync(
        join(dir, "docker"),
        `#!/bin/sh\n[ "$1 $2" = "container inspect" ] || exit 2\nshift 2\nfmt=""\nif [ "$1" = -f ]; then fmt=$2; shift 2; fi\ncase "$1" in\n${cases}\n  *) echo "Error: No such container: $1" >&2; exit 1 ;;\nesac\n`,
      );
      chmodSync(join(dir, "docker"), 0o755);
      return spawnSync("sh", ["-c", renderAppSlotScript(), "sh", "synaxic-main-app"], { input: want, env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("a first deploy takes slot a", () => expect(withDocker({}, "s1").stdout).toBe("a\n"));
  it("the container an earlier version named without a slot holds slot a's port: slot b", () => expect(withDocker({ "synaxic-main-app": null }, "s1").stdout).toBe("b\n"));
  it("unchanged settings: the slot that runs them", () => expect(withDocker({ "synaxic-main-app-b": "s1" }, "s1").stdout).toBe("b\n"));
  it("new settings: the other slot", () => {
    expect(withDocker({ "synaxic-main-app-a": "s0" }, "s1").stdout).toBe("b\n");
    expect(withDocker({ "synaxic-main-app-b": "s0" }, "s1").stdout).toBe("a\n");
  });
  it("an interrupted deploy whose new container exists: that slot again", () => expect(withDocker({ "synaxic-main-app-a": "s0", "synaxic-main-app-b": "s1" }, "s1").stdout).toBe("b\n"));
  it("both slots taken by other settings: fails, naming both and what to do", () => {
    const r = withDocker({ "synaxic-main-app-a": "s0", "synaxic-main-app-b": "s2" }, "s1");
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("both app slots are taken (synaxic-main-app-a and synaxic-main-app-b");
    expect(r.stderr).toContain("docker rm -f");
  });
  it("is POSIX sh", () => {
    expect(() => execFileSync("sh", ["-n", "-c", renderAppSlotScript()])).not.toThrow();
  });
});
