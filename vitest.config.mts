import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The JSON report lets CI print a plain "N passed, N failed" line.
    reporters: ["default", "json"],
    outputFile: { json: ".state/vitest-report.json" },
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          // Real servers in network namespaces: one file at a time, so that
          // scenarios do not compete for the machine's two cores.
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          // The real engine (Pulumi CLI, language host, providers) against
          // hosts with their own sshd and dockerd: scripts/test.sh runs it
          // when the engine is installed (test/engine/README.md).
          name: "engine",
          include: ["test/engine/**/*.test.ts"],
          environment: "node",
          // Each file has rigs of its own (hosts, namespaces, a /24); with
          // two workers (scripts/test.sh passes --maxWorkers=2) they run side
          // by side, as the tier mostly waits on the CLI and the hosts.
          fileParallelism: true,
          testTimeout: 1_800_000,
          hookTimeout: 3_600_000,
        },
      },
    ],
  },
});
