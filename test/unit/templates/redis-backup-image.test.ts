import { describe, expect, it } from "vitest";
import { REDIS_BACKUP_PACKAGES_DEFAULT, redisBackupImageTag, renderRedisBackupImageDockerfile } from "../../../templates/redis-backup-image";
import { localImageTag, renderPinnedDebianInstall } from "../../../templates/local-image";

const P = { baseImage: "redis:7.0.15-bookworm", packages: { curl: "7.88.1-10+deb12u15", openssl: "3.0.22-1~deb12u2", caCertificates: "20250419~deb12u2" } };

describe("the Redis snapshot image (the fleet's Redis image + pinned curl, openssl, ca-certificates)", () => {
  it("renders the Dockerfile", () => {
    expect(renderRedisBackupImageDockerfile(P)).toMatchSnapshot();
  });

  it("builds FROM the fleet's Redis image, so redis-cli and redis-check-rdb are the server's; installs the pins only when the base lacks them, and checks them after", () => {
    const d = renderRedisBackupImageDockerfile(P);
    expect(d).toMatch(/^FROM redis:7\.0\.15-bookworm$/m);
    expect(d).toContain('pins="curl=7.88.1-10+deb12u15 openssl=3.0.22-1~deb12u2 ca-certificates=20250419~deb12u2"');
    // apt-get runs only inside the "something is missing" branch: a base that holds the pins downloads nothing.
    const [before, rest] = d.split('if [ -n "$need" ]; then');
    expect(before).not.toContain("apt-get");
    expect(rest!.split("fi;")[0]).toContain("apt-get install -y --no-install-recommends $need");
    expect(d).toContain("install ok installed ${p#*=}");
    for (const tool of ["redis-cli --version", "command -v redis-check-rdb", "openssl version", "grep -q -- --aws-sigv4"]) expect(d).toContain(tool);
  });

  it("defaults to versions of the Debian form", () => {
    for (const v of Object.values(REDIS_BACKUP_PACKAGES_DEFAULT)) expect(v).toMatch(/^[0-9][A-Za-z0-9.+~-]*$/);
  });

  it("refuses a version or base that could break out of the Dockerfile", () => {
    expect(() => renderRedisBackupImageDockerfile({ ...P, packages: { ...P.packages, curl: "7.88; rm -rf /" } })).toThrow(/the version of curl, .* is not a Debian package version/);
    expect(() => renderRedisBackupImageDockerfile({ ...P, packages: { ...P.packages, openssl: "" } })).toThrow(/openssl/);
    expect(() => renderRedisBackupImageDockerfile({ ...P, baseImage: "redis\nRUN evil" })).toThrow(/baseImage .* is not a pinned image reference/);
    expect(() => renderPinnedDebianInstall("f", [{ name: "Curl$", version: "1" }])).toThrow(/not a Debian package name/);
  });

  it("tags the image after its Dockerfile: a new pin or base is a new tag", () => {
    const t = redisBackupImageTag(P);
    expect(t).toMatch(/^synaxic-local\/redis-backup:[a-f0-9]{16}$/);
    expect(t).toBe(localImageTag("synaxic-local/redis-backup", renderRedisBackupImageDockerfile(P)));
    expect(redisBackupImageTag({ ...P, packages: { ...P.packages, curl: "7.88.1-10+deb12u16" } })).not.toBe(t);
    expect(redisBackupImageTag({ ...P, baseImage: "redis:7.0.16-bookworm" })).not.toBe(t);
  });
});
