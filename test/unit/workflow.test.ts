import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { parse } from "yaml";

const wf = parse(readFileSync(".github/workflows/pulumi.yml", "utf8")) as {
  on: Record<string, unknown>;
  jobs: Record<string, { if?: string; needs?: string[]; steps: { uses?: string; run?: string; with?: Record<string, unknown> }[]; strategy?: { "max-parallel"?: number; matrix: Record<string, unknown> } }>;
  env: Record<string, string>;
};
const readme = readFileSync("docs/operations.md", "utf8");

describe("the CI workflow", () => {
  it("runs on pull requests and on pushes to main", () => {
    expect(Object.keys(wf.on)).toEqual(expect.arrayContaining(["pull_request", "push"]));
  });
  it("tests with the same script CI runs here", () => {
    expect(wf.jobs.test!.steps.some((s) => s.run?.includes("bash .ci/run"))).toBe(true);
  });
  it("previews every stack on pull requests with the official action, posting the diff", () => {
    const job = wf.jobs.preview!;
    expect(job.if).toContain("pull_request");
    expect(job.needs).toContain("test");
    const step = job.steps.find((s) => s.uses?.startsWith("pulumi/actions@"))!;
    expect(step.with).toMatchObject({ command: "preview", "comment-on-pr": true });
  });
  it("deploys the chosen stacks one at a time on main", () => {
    const job = wf.jobs.deploy!;
    expect(job.if).toContain("refs/heads/main");
    expect(job.strategy!["max-parallel"]).toBe(1);
    expect(job.steps.find((s) => s.uses?.startsWith("pulumi/actions@"))!.with).toMatchObject({ command: "up" });
  });
  it("takes secrets from the CI secret store, each documented in docs/operations.md", () => {
    const secrets = Object.values(wf.env)
      .map((v) => /secrets\.([A-Z_]+)/.exec(v)?.[1])
      .filter((s): s is string => !!s);
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    for (const s of secrets) expect(readme, `docs/operations.md documents ${s}`).toContain(s);
  });
});
