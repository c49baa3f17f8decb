import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { parse } from "yaml";

const wf = parse(readFileSync(".github/workflows/pulumi.yml", "utf8")) as {
  on: Record<string, unknown>;
  jobs: Record<string, { if?: string; needs?: string[]; environment?: string; env?: Record<string, string>; steps: { uses?: string; run?: string; with?: Record<string, unknown> }[]; strategy?: { "max-parallel"?: number; matrix: Record<string, unknown> } }>;
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
  const secretsOf = (env: Record<string, string> | undefined) =>
    Object.values(env ?? {})
      .map((v) => /secrets\.([A-Z_]+)/.exec(v)?.[1])
      .filter((s): s is string => !!s);
  it("gives deploy secrets only to the jobs that run trusted code, each in a protected environment; each documented", () => {
    expect(secretsOf(wf.env), "no secret for every job").toEqual([]);
    for (const [name, job] of Object.entries(wf.jobs)) {
      const used = [...secretsOf(job.env), ...JSON.stringify(job.steps).matchAll(/secrets\.([A-Z_]+)/g)].map((m) => (typeof m === "string" ? m : m[1]!)).filter((s) => s !== "GITHUB_TOKEN");
      if (name === "preview" || name === "deploy") {
        expect(used.length, name).toBeGreaterThanOrEqual(4);
        expect(job.environment, name).toBe(name === "deploy" ? "production" : "preview");
        for (const s of used) expect(readme, `docs/operations.md documents ${s}`).toContain(s);
      } else {
        expect(used, `${name} runs a pull request's code: no secret`).toEqual([]);
      }
    }
    // A fork's pull request gets no preview job at all.
    expect(wf.jobs.preview!.if).toContain("github.event.pull_request.head.repo.full_name == github.repository");
  });
  it("installs the Pulumi CLI version the program is tested with: the `pulumi` npm package's, which the engine tier runs", () => {
    const pinned = (JSON.parse(readFileSync("package.json", "utf8")) as { devDependencies: Record<string, string> }).devDependencies["pulumi"];
    expect(pinned).toMatch(/^\d+\.\d+\.\d+$/);
    for (const job of ["preview", "deploy"]) {
      const v = String(wf.jobs[job]!.steps.find((s) => s.uses?.startsWith("pulumi/actions@"))!.with!["pulumi-version"]);
      expect(v, job).toBe(pinned);
    }
  });
});
