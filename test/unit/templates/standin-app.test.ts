import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { symlinkSync, chmodSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseImageId, STANDIN_APP_BASE_IMAGE, STANDIN_APP_FILES, standinBuildArgv, standinRemoveArgv } from "../../../templates/standin-app";
import { standinAppSource } from "../../../lib/standinApp";
import { sh } from "../../../lib/shell";

const REPO = resolve(__dirname, "../../..");
const SOURCE = join(REPO, "standin-app");

describe("the stand-in app's image build (templates/standin-app.ts)", () => {
  it("renders the build and remove commands", () => {
    expect(sh(standinBuildArgv("/src/synaxic/standin-app", "synaxic-standin-app:0123456789abcdef"))).toMatchSnapshot();
    expect(sh(standinRemoveArgv("synaxic-standin-app:0123456789abcdef"))).toMatchSnapshot();
  });

  it("standin-app/Dockerfile builds FROM the pinned base the program names, copies only, and runs as the app's uid 1001", () => {
    const d = readFileSync(join(SOURCE, "Dockerfile"), "utf8");
    expect(d.match(/^FROM .*$/gm)).toEqual([`FROM ${STANDIN_APP_BASE_IMAGE}`]);
    expect(STANDIN_APP_BASE_IMAGE).toMatch(/^node:\d+\.\d+\.\d+-bookworm-slim$/);
    // No RUN: the build needs no network and no registry but the base image's.
    expect(d).not.toMatch(/^RUN /m);
    expect(d).toMatch(/^COPY node_modules \/app\/node_modules$/m);
    expect(d).toMatch(/^USER 1001:1001$/m);
  });

  it("the engine rig has a stand-in for that base image (test/engine/images/build.sh)", () => {
    const build = readFileSync(join(REPO, "test/engine/images/build.sh"), "utf8");
    expect(build).toContain(`|${STANDIN_APP_BASE_IMAGE}|`);
  });

  it("the lockfile pins exactly the dependencies package.json names", () => {
    const pkg = JSON.parse(readFileSync(join(SOURCE, "package.json"), "utf8")) as { dependencies: Record<string, string> };
    const lock = JSON.parse(readFileSync(join(SOURCE, "package-lock.json"), "utf8")) as { packages: Record<string, { version: string; dependencies?: Record<string, string> }> };
    expect(lock.packages[""]!.dependencies).toEqual(pkg.dependencies);
    for (const [name, version] of Object.entries(pkg.dependencies)) expect(lock.packages[`node_modules/${name}`]!.version).toBe(version);
  });

  it("the tag is a digest of every source file: a changed file is a new tag, the same files the same tag", () => {
    const dir = mkdtempSync(join(tmpdir(), "standin-src-"));
    try {
      for (const f of STANDIN_APP_FILES) cpSync(join(SOURCE, f), join(dir, f));
      const a = standinAppSource(dir);
      expect(a.tag).toMatch(/^synaxic-standin-app:[0-9a-f]{16}$/);
      expect(standinAppSource(dir).tag).toBe(a.tag);
      expect(standinAppSource(dir).tag).toBe(standinAppSource(SOURCE).tag);
      appendFileSync(join(dir, "server.mjs"), "// changed\n");
      expect(standinAppSource(dir).tag).not.toBe(a.tag);
      rmSync(join(dir, "Dockerfile"));
      expect(() => standinAppSource(dir)).toThrow(/the stand-in app's source .*Dockerfile cannot be read \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("takes only an image ID from the build's output", () => {
    expect(parseImageId(`sha256:${"a".repeat(64)}\n`)).toBe(`sha256:${"a".repeat(64)}`);
    expect(() => parseImageId("Successfully built 0123abcd\n")).toThrow(/printed "Successfully built 0123abcd" where its image ID/);
    expect(() => parseImageId("")).toThrow(/image ID/);
  });

  it("run with stand-ins for npm and docker: copies the sources into a fresh context, installs from the lockfile there, builds it with the tag, prints only the ID", () => {
    const dir = mkdtempSync(join(tmpdir(), "standin-build-"));
    try {
      const bin = join(dir, "bin");
      const log = join(dir, "calls.log");
      cpSync(SOURCE, join(dir, "src"), { recursive: true, filter: (p) => !p.includes("node_modules") });
      const fake = (name: string, body: string) => {
        writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
        chmodSync(join(bin, name), 0o755);
      };
      spawnSync("mkdir", ["-p", bin]);
      // Only these tools on PATH: the machine's own npm and docker must not run.
      for (const tool of ["sh", "cp", "mktemp", "rm", "cat", "mkdir", "test"]) {
        const found = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
        if (found.startsWith("/")) symlinkSync(found, join(bin, tool));
      }
      // npm ci --prefix CTX: the context holds the sources and the lockfile when it runs.
      fake("npm", `echo "npm $*" >>"${log}"; ctx=$3; test -f "$ctx/package-lock.json" && test -f "$ctx/server.mjs" && mkdir -p "$ctx/node_modules/pg" && echo npm-progress`);
      fake("docker", `echo "docker $*" >>"${log}"; case "$1" in build) ctx=$6; test -d "$ctx/node_modules/pg" && test -f "$ctx/Dockerfile" && echo build-progress ;; image) echo sha256:${"b".repeat(64)} ;; esac`);
      const r = spawnSync(standinBuildArgv(join(dir, "src"), "synaxic-standin-app:0123456789abcdef")[0]!, standinBuildArgv(join(dir, "src"), "synaxic-standin-app:0123456789abcdef").slice(1), {
        env: { PATH: bin },
        encoding: "utf8",
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(`sha256:${"b".repeat(64)}\n`);
      expect(r.stderr).toContain("npm-progress");
      expect(r.stderr).toContain("build-progress");
      const calls = readFileSync(log, "utf8").trim().split("\n");
      expect(calls[0]).toMatch(/^npm ci --prefix \/\S+ --omit=dev --ignore-scripts --no-audit --no-fund$/);
      expect(calls[1]).toMatch(/^docker build --network none --tag synaxic-standin-app:0123456789abcdef \/\S+$/);
      expect(calls[2]).toBe("docker image inspect --format {{.Id}} synaxic-standin-app:0123456789abcdef");
      // The context was a temporary directory, gone afterwards; the sources were not touched.
      const ctx = calls[1]!.split(" ").pop()!;
      expect(ctx).not.toContain(join(dir, "src"));
      expect(spawnSync("test", ["-e", ctx]).status).not.toBe(0);
      expect(spawnSync("test", ["-e", join(dir, "src", "node_modules")]).status).not.toBe(0);

      // Without npm the build says what to install.
      rmSync(join(bin, "npm"));
      const r2 = spawnSync("sh", standinBuildArgv(join(dir, "src"), "t:1").slice(1), { env: { PATH: bin }, encoding: "utf8" });
      expect(r2.status).not.toBe(0);
      expect(r2.stderr).toContain("building the stand-in app needs npm (Node.js 20 or later");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
