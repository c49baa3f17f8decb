/**
 * The scripts a password rotation runs: the Redis users script
 * (templates/redis-users.ts, run on real Redis by
 * test/integration/password-rotation.test.ts) and Grafana's admin password
 * reset (templates/grafana.ts), here against a stand-in docker CLI.
 */
import { describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REDIS_ACL_FILE, renderRedisUsersScript } from "../../../templates/redis-users";
import { renderGrafanaAdminPasswordScript } from "../../../templates/grafana";

const target = { port: 6380, caFile: "/etc/synaxic/tls/ca.crt", adminUser: "admin" };

describe("renderRedisUsersScript", () => {
  it("add: snapshot", () => expect(renderRedisUsersScript("add", target)).toMatchSnapshot());
  it("sync: snapshot", () => expect(renderRedisUsersScript("sync", target)).toMatchSnapshot());

  it("add only adds password hashes to users that exist, and creates the others whole; sync resets every user to its line and deletes the rest", () => {
    const add = renderRedisUsersScript("add", target);
    expect(add).toContain('then echo "ACL SETUSER $user$h"; fi');
    expect(add).not.toContain("DELUSER");
    const sync = renderRedisUsersScript("sync", target);
    expect(sync).toContain('echo "ACL SETUSER $user $rules"');
    expect(sync).toContain("ACL DELUSER $u");
    // Never ACL LOAD: it disconnects every client of every user (Redis 7.0).
    for (const s of [add, sync]) expect(s).not.toMatch(/ACL LOAD/);
  });

  it("the password is read from stdin into REDISCLI_AUTH; no command line holds a password or hash; globbing is off (rules contain ~* and &*)", () => {
    const s = renderRedisUsersScript("add", target);
    expect(s).toContain("IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH");
    expect(s).toMatch(/^set -euf$/m);
    expect(s).toContain(`printf '%s\\n' "$cmds" | cli`);
    expect(s).not.toMatch(/-a |--pass/);
  });

  it("is POSIX sh", () => {
    for (const mode of ["add", "sync"] as const) expect(() => execFileSync("sh", ["-n", "-c", renderRedisUsersScript(mode, target)])).not.toThrow();
  });

  it("refuses bad parameters, naming them", () => {
    expect(() => renderRedisUsersScript("load" as "add", target)).toThrow(/mode must be add or sync, got "load"/);
    expect(() => renderRedisUsersScript("add", { ...target, port: 0 })).toThrow(/port 0 is not a TCP port/);
    expect(() => renderRedisUsersScript("add", { ...target, caFile: "ca.crt; reboot" })).toThrow(/caFile "ca.crt; reboot" is not an absolute path/);
    expect(() => renderRedisUsersScript("add", { ...target, adminUser: "a b" })).toThrow(/adminUser "a b" is not a Redis user name/);
  });

  it("the ACL file lives in the mounted directory", () => expect(REDIS_ACL_FILE).toBe("/etc/synaxic/acl/users.acl"));
});

describe("renderGrafanaAdminPasswordScript against a stand-in docker", () => {
  /** A docker CLI that fails its first `failures` calls, then records its argv and stdin. */
  function run(failures: number, timeoutSeconds: number, password = "N3wGrafanaPassw0rd") {
    const dir = mkdtempSync(join(tmpdir(), "synaxic-grafana-"));
    try {
      writeFileSync(
        join(dir, "docker"),
        [
          "#!/bin/sh",
          `n=$(cat "${dir}/calls" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "${dir}/calls"`,
          `printf '%s\\n' "$*" > "${dir}/argv"`,
          `cat > "${dir}/stdin"`,
          `if [ "$n" -le ${failures} ]; then echo "Error: could not read user (id: 1) from database" >&2; exit 1; fi`,
          'echo "Admin password changed successfully"',
        ].join("\n"),
      );
      chmodSync(join(dir, "docker"), 0o755);
      const r = spawnSync("sh", ["-c", renderGrafanaAdminPasswordScript(timeoutSeconds), "sh", "synaxic-main-grafana"], { input: `${password}\n`, env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8" });
      const read = (f: string) => {
        try {
          return readFileSync(join(dir, f), "utf8");
        } catch {
          return "";
        }
      };
      return { ...r, calls: Number(read("calls")), argv: read("argv"), stdin: read("stdin") };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("snapshot", () => expect(renderGrafanaAdminPasswordScript(120)).toMatchSnapshot());

  it("runs Grafana's reset in the container with the password on stdin only", () => {
    const r = run(0, 30);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("the Grafana admin password is set\n");
    expect(r.argv).toBe("exec -i synaxic-main-grafana grafana cli --homepath=/usr/share/grafana --config=/etc/grafana/grafana.ini admin reset-admin-password --password-from-stdin\n");
    expect(r.stdin).toBe("N3wGrafanaPassw0rd\n");
    expect(`${r.stdout}${r.stderr}${r.argv}`).not.toContain("N3wGrafanaPassw0rd");
  });

  it("retries while a new container has no admin user yet", () => {
    const r = run(1, 30);
    expect(r.status).toBe(0);
    expect(r.calls).toBe(2);
  }, 20_000);

  it("gives up after its timeout with Grafana's message, not the password", () => {
    const r = run(1000, 1);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("grafana cli admin reset-admin-password failed: Error: could not read user (id: 1) from database");
    expect(r.stderr).not.toContain("N3wGrafanaPassw0rd");
  }, 20_000);

  it("refuses empty input and a bad timeout", () => {
    const r = spawnSync("sh", ["-c", renderGrafanaAdminPasswordScript(5), "sh", "c"], { input: "\n", encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("no password on standard input");
    expect(() => renderGrafanaAdminPasswordScript(0)).toThrow(/timeoutSeconds 0 is not a whole number of seconds/);
  });
});
