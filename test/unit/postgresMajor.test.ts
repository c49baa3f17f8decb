/**
 * A stack never moves PostgreSQL to another major by itself (lib/postgresMajor.ts):
 * PostgreSQL does not start on a data directory of another major, and a
 * release whose default image is a newer major must not take an existing
 * fleet there on its next `up`.
 */
import { describe, expect, it } from "vitest";
import { loadStackConfig, DEFAULT_IMAGES, type MainConfig, type StackConfig } from "../../lib/config";
import { postgresMajorChangeError, postgresMajorOf } from "../../lib/postgresMajor";
import { mainStack } from "../../stacks/main";
import { SECRET_KEYS, mainConfig } from "./fixtures";
import { runMocked } from "./harness";

describe("postgresMajorOf: the major an image's tag names", () => {
  it.each([
    ["postgres:17.12-trixie", 17],
    ["postgres:15.13-bookworm", 15],
    ["postgres:16", 16],
    ["postgres:18-alpine", 18],
    ["registry.example.com:5000/team/postgres:17.2", 17],
    ["postgres:17.12-trixie@sha256:" + "a".repeat(64), 17],
  ])("%s → %s", (image, major) => {
    expect(postgresMajorOf(image)).toBe(major);
  });

  it.each(["postgres:latest-ish", "registry.example.com:5000/postgres", "postgres:9.6.24", "mycorp/pg:stable"])("%s says nothing", (image) => {
    expect(postgresMajorOf(image)).toBeUndefined();
  });
});

describe("postgresMajorChangeError", () => {
  it("refuses another major, naming the key, what was deployed and how to keep it", () => {
    const e = postgresMajorChangeError("postgres:15.13-bookworm", "postgres:17.12-trixie");
    expect(e?.key).toBe("postgresImage");
    expect(e?.message).toContain("PostgreSQL 15");
    expect(e?.message).toContain("`pulumi config set postgresImage postgres:15.13-bookworm`");
    expect(e?.message).toContain("docs/runbook.md#upgrading-postgresql-to-a-new-major-version");
  });

  it("lets a patch release, a new stack, or a tag that names no major through", () => {
    expect(postgresMajorChangeError("postgres:17.6-trixie", "postgres:17.12-trixie")).toBeNull();
    expect(postgresMajorChangeError(undefined, "postgres:17.12-trixie")).toBeNull();
    expect(postgresMajorChangeError("mycorp/pg:stable", "postgres:17.12-trixie")).toBeNull();
  });
});

describe("the main stack against what it last deployed (mocks, its own outputs through a StackReference)", () => {
  const run = (deployedPostgres: string | undefined, extra: Record<string, string> = {}) =>
    runMocked(
      {
        config: mainConfig(1, extra),
        secretKeys: SECRET_KEYS,
        stack: "main",
        stackReferences: { "organization/synaxic/main": { outputs: deployedPostgres ? { fleet: { images: { postgres: deployedPostgres } } } : {}, secretOutputNames: [] } },
      },
      () => mainStack(loadStackConfig() as MainConfig & StackConfig),
    );

  it("a fleet deployed at the former default (PostgreSQL 15) is refused the new default before anything is declared", async () => {
    expect(DEFAULT_IMAGES.postgresImage).toMatch(/^postgres:17\./);
    await expect(run("postgres:15.13-bookworm")).rejects.toThrow(/synaxic:postgresImage: is "postgres:17\.12-trixie" \(PostgreSQL 17\), but this fleet's data was written by PostgreSQL 15/);
  });

  it("the same fleet with its image pinned goes ahead and keeps it", async () => {
    const r = await run("postgres:15.13-bookworm", { "synaxic:postgresImage": "postgres:15.20-bookworm" });
    expect((r.values.fleet as { images: { postgres: string } }).images.postgres).toBe("postgres:15.20-bookworm");
    expect(r.of("docker:index/remoteImage:RemoteImage").map((i) => i.inputs.name)).toContain("postgres:15.20-bookworm");
  });

  it("a new stack, or one already at the default's major, takes the default", async () => {
    for (const deployed of [undefined, "postgres:17.6-trixie"]) {
      const r = await run(deployed);
      expect((r.values.fleet as { images: { postgres: string } }).images.postgres).toBe(DEFAULT_IMAGES.postgresImage);
    }
  });
});
