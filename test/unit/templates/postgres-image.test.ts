import { describe, expect, it } from "vitest";
import { PGBACKREST_DIRS, postgresImageTag, renderPostgresImageDockerfile } from "../../../templates/postgres-image";

const P = { baseImage: "postgres:15.13-bookworm", pgbackrestVersion: "2.59.1-1.pgdg12+1" };

describe("the fleet's PostgreSQL image (official image + pinned pgBackRest)", () => {
  it("renders the Dockerfile", () => {
    expect(renderPostgresImageDockerfile(P)).toMatchSnapshot();
  });

  it("builds FROM the pinned base and installs exactly the pinned version, only when the base lacks it", () => {
    const d = renderPostgresImageDockerfile(P);
    expect(d).toMatch(/^FROM postgres:15\.13-bookworm$/m);
    expect(d).toContain("want=2.59.1-1.pgdg12+1;");
    expect(d).toContain('apt-get install -y --no-install-recommends "pgbackrest=$want"');
    // The check after the install: another version than the pin fails the build.
    expect(d).toContain('[ "$(dpkg-query -W -f=\'${Version}\' pgbackrest)" = "$want" ]');
    for (const dir of [PGBACKREST_DIRS.spool, PGBACKREST_DIRS.lock, PGBACKREST_DIRS.log]) expect(d).toContain(dir);
  });

  it("refuses a version or base that could break out of the Dockerfile", () => {
    expect(() => renderPostgresImageDockerfile({ ...P, pgbackrestVersion: "2.59; rm -rf /" })).toThrow(/pgbackrestVersion .* is not a Debian package version/);
    expect(() => renderPostgresImageDockerfile({ ...P, pgbackrestVersion: "" })).toThrow(/pgbackrestVersion/);
    expect(() => renderPostgresImageDockerfile({ ...P, baseImage: "postgres\nRUN evil" })).toThrow(/baseImage .* is not a pinned image reference/);
    expect(() => renderPostgresImageDockerfile({ ...P, baseImage: "postgres" })).toThrow(/baseImage/);
  });

  it("tags the image after what it is built from: a new pin or base is a new tag, the same inputs the same tag", () => {
    const t = postgresImageTag(P);
    expect(t).toMatch(/^synaxic-local\/postgres:[a-f0-9]{16}$/);
    expect(postgresImageTag({ ...P })).toBe(t);
    expect(postgresImageTag({ ...P, pgbackrestVersion: "2.45-1" })).not.toBe(t);
    expect(postgresImageTag({ ...P, baseImage: "postgres:15.14-bookworm" })).not.toBe(t);
  });
});
