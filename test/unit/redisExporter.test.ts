/**
 * The Redis exporter's password file works with the exporter the defaults
 * pin (redis_exporter 1.86, which looks the password up under the address
 * with REDIS_USER in it since 1.69, oliver006/redis_exporter#983) and with
 * older ones (under the address alone). The engine tier shows the real 1.86
 * scraping with it (every exporter target up).
 */
import { describe, expect, it } from "vitest";
import { redisExporterPasswordMap } from "../../components/Exporters";
import { runMain } from "./fixtures";
import { findLeaks } from "./harness";

describe("the Redis exporter's password file", () => {
  it("names the password under the address alone and under the address with the user", () => {
    expect(redisExporterPasswordMap("rediss://127.0.0.1:6380", "exporter", "pw")).toEqual({
      "rediss://127.0.0.1:6380": "pw",
      "rediss://exporter@127.0.0.1:6380": "pw",
    });
  });

  it("on a host (mocks): the upload holds both entries, with the exporter user's own password, as a secret", async () => {
    const r = await runMain(1);
    const c = r.one("docker:index/container:Container", "exporters-redis");
    const uploads = c.inputs.uploads as { file: string; content: string }[];
    const file = uploads.find((u) => u.file === "/run/synaxic/redis-passwords.json")!;
    const map = JSON.parse(file.content) as Record<string, string>;
    const port = /REDIS_ADDR=rediss:\/\/127\.0\.0\.1:(\d+)/.exec((c.inputs.envs as string[]).join("\n"))![1];
    expect(Object.keys(map).sort()).toEqual([`rediss://127.0.0.1:${port}`, `rediss://exporter@127.0.0.1:${port}`]);
    expect(new Set(Object.values(map)).size).toBe(1);
    expect(r.secretValues).toContain(Object.values(map)[0]);
    expect(findLeaks(c.raw, r.secretValues)).toEqual([]);
  });
});
