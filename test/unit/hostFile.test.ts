/**
 * The command hostFile() declares is run here for real, through a shell,
 * exactly as the command provider runs it on a host: the file appears
 * atomically with its mode, its content arrives on standard input, and the
 * delete command removes it.
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, existsSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMocked } from "./harness";
import { hostFile } from "../../lib/containers";

const root = mkdtempSync(join(tmpdir(), "synaxic-files-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function declared(path: string, content: string, mode: string) {
  const run = await runMocked({ config: {} }, () => {
    hostFile("f", { kind: "local", filesRoot: root }, { path, content, mode, owner: `${process.getuid!()}:${process.getgid!()}`, timeoutSeconds: 30 }, {});
    return {};
  });
  return run.one("command:local:Command", "f").inputs as { create: string; delete: string; stdin: string };
}

describe("host files", () => {
  it("writes the content from stdin, with its mode, creating folders", async () => {
    const cmd = await declared("main/postgres-hba/pg_hba.conf", "hostssl all all 10.0.0.1/32 scram-sha-256\n", "0640");
    expect(cmd.create).not.toContain("scram-sha-256");
    const r = spawnSync("sh", ["-c", cmd.create], { input: cmd.stdin, encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    const file = join(root, "main/postgres-hba/pg_hba.conf");
    expect(readFileSync(file, "utf8")).toBe(cmd.stdin);
    expect((statSync(file).mode & 0o777).toString(8)).toBe("640");
    // No temporary file is left next to it.
    expect(spawnSync("sh", ["-c", `ls ${join(root, "main/postgres-hba")}`], { encoding: "utf8" }).stdout.trim()).toBe("pg_hba.conf");
  });

  it("replaces the file in one rename (a reader never sees half a file), and delete removes it", async () => {
    const first = await declared("main/nginx/nginx.conf", "a\n".repeat(1000), "0644");
    spawnSync("sh", ["-c", first.create], { input: first.stdin });
    const file = join(root, "main/nginx/nginx.conf");
    const inodeBefore = statSync(file).ino;
    const second = await declared("main/nginx/nginx.conf", "b\n".repeat(1000), "0644");
    expect(spawnSync("sh", ["-c", second.create], { input: second.stdin }).status).toBe(0);
    expect(readFileSync(file, "utf8")).toBe(second.stdin);
    expect(statSync(file).ino).not.toBe(inodeBefore);
    expect(spawnSync("sh", ["-c", second.delete]).status).toBe(0);
    expect(existsSync(file)).toBe(false);
  });

  it("leaves a file that already has this content, mode and owner untouched (its modification time too); rewrites it when any differs", async () => {
    const cmd = await declared("main/postgres-conf/postgresql.conf", "max_connections = 100\n", "0640");
    const file = join(root, "main/postgres-conf/postgresql.conf");
    const write = (c: typeof cmd) => {
      const r = spawnSync("sh", ["-c", c.create], { input: c.stdin, encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
    };
    write(cmd);
    const old = new Date("2020-01-01T00:00:00Z");
    utimesSync(file, old, old);
    write(cmd);
    expect(statSync(file).mtimeMs).toBe(old.getTime());
    expect(readdirSync(join(root, "main/postgres-conf"))).toEqual(["postgresql.conf"]);
    // Another mode: rewritten.
    write(await declared("main/postgres-conf/postgresql.conf", "max_connections = 100\n", "0600"));
    expect((statSync(file).mode & 0o777).toString(8)).toBe("600");
    expect(statSync(file).mtimeMs).toBeGreaterThan(old.getTime());
    // Other content: rewritten.
    utimesSync(file, old, old);
    write(await declared("main/postgres-conf/postgresql.conf", "max_connections = 200\n", "0600"));
    expect(readFileSync(file, "utf8")).toBe("max_connections = 200\n");
    expect(statSync(file).mtimeMs).toBeGreaterThan(old.getTime());
  });

  it("refuses paths outside the host's files root and bad modes", async () => {
    await expect(declared("../etc/passwd", "x", "0644")).rejects.toThrow(/relative to the host's files root/);
    await expect(declared("/etc/passwd", "x", "0644")).rejects.toThrow(/relative to the host's files root/);
    await expect(declared("a/b", "x", "644")).rejects.toThrow(/not an octal mode/);
  });
});
