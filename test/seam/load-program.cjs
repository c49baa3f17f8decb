/*
 * Loads index.ts the way `pulumi up` does: through ts-node registered with
 * the options Pulumi's nodejs runtime uses (the tsconfig Pulumi.yaml names,
 * CommonJS, the project's TypeScript), under Pulumi's mocks. Prints a
 * JSON summary of what the program registered and exported.
 *
 * usage: node test/seam/load-program.cjs <config.json> [stack-reference-outputs.json]
 *   config.json: { "stack": "main", "config": {...}, "secretKeys": [...] }
 */
"use strict";
const path = require("node:path");
const fs = require("node:fs");

const root = path.resolve(__dirname, "..", "..");
const [configFile, refsFile] = process.argv.slice(2);
const input = JSON.parse(fs.readFileSync(configFile, "utf8"));
const refs = refsFile ? JSON.parse(fs.readFileSync(refsFile, "utf8")) : {};

// Exactly what @pulumi/pulumi/cmd/run does for a TypeScript program that is
// not an ES module.
const tsutils = require("@pulumi/pulumi/tsutils");
// The language host passes Pulumi.yaml's runtime option `tsconfig` as
// PULUMI_NODEJS_TSCONFIG_PATH (sdk/nodejs/cmd/pulumi-language-nodejs/main.go).
const runtimeOptions = require("yaml").parse(fs.readFileSync(path.join(root, "Pulumi.yaml"), "utf8")).runtime.options ?? {};
const tsConfigPath = path.join(root, runtimeOptions.tsconfig ?? "tsconfig.json");
const compilerOptions = tsutils.loadTypeScriptCompilerOptions(tsConfigPath);
const { tsnodeRequire, typescriptRequire } = tsutils.typeScriptRequireStrings();
const transpileOnly = process.env.PULUMI_NODEJS_TRANSPILE_ONLY ? process.env.PULUMI_NODEJS_TRANSPILE_ONLY === "true" : compilerOptions.noCheck;
require(tsnodeRequire).register({
  compiler: typescriptRequire,
  transpileOnly,
  project: tsConfigPath,
  skipProject: false,
  compilerOptions: { target: "ES2020", module: "nodenext", moduleResolution: "nodenext", sourceMap: "true", ...compilerOptions },
});

const pulumi = require("@pulumi/pulumi");
const catalogue = JSON.parse(fs.readFileSync(path.join(__dirname, "fixtures", "hetzner-catalogue.json"), "utf8"));
const registered = [];
// The stacks write the Docker client's SSH identity: into a folder of this process, not ~/.ssh/synaxic.
process.env.SYNAXIC_SSH_DIR = fs.mkdtempSync(path.join(require("node:os").tmpdir(), "synaxic-seam-ssh-"));
process.on("exit", () => fs.rmSync(process.env.SYNAXIC_SSH_DIR, { recursive: true, force: true }));
pulumi.runtime.setAllConfig(input.config, input.secretKeys);
pulumi.runtime.setMocks(
  {
    newResource(args) {
      registered.push(args.type);
      if (args.type === "pulumi:pulumi:StackReference") {
        // The stack's own reference (what it last deployed) has no outputs on a new stack.
        const ref = refs[args.inputs.name] ?? (args.inputs.name === `organization/synaxic/${input.stack}` || /^organization\/synaxic\/replica-\d+$/.test(args.inputs.name) ? { outputs: {}, secretOutputNames: [] } : undefined);
        if (!ref) throw new Error(`no outputs for stack ${args.inputs.name}`);
        return { id: args.inputs.name, state: { name: args.inputs.name, outputs: ref.outputs, secretOutputNames: ref.secretOutputNames } };
      }
      const state = { ...args.inputs };
      // An image build (lib/postgresImage.ts) prints the built image's ID, as `docker image inspect` does.
      if (args.type.startsWith("command:") && args.name.endsWith("-image-build")) state.stdout = "sha256:0123456789abcdef\n";
      // An app's slot step (components/SynaxicApp.ts) prints its deploy slot.
      if (args.type.startsWith("command:") && args.name.endsWith("app-slot")) state.stdout = "a\n";
      // A Hetzner host's key rotation prints the key it generated on the host (components/Host.ts, rotateHostKey).
      if (args.type.startsWith("command:") && args.name.endsWith("-host-key-rotate")) state.stdout = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRotatedSeamKey\n";
      if (args.type.startsWith("tls:index/selfSignedCert") || args.type.startsWith("tls:index/locallySignedCert")) {
        state.certPem = refs.__caPem;
        state.validityEndTime = "2027-11-26T00:00:00Z";
      }
      if (args.type === "random:index/randomPassword:RandomPassword") {
        state.result = pulumi.secret(`seam-password-${args.name}-0123456789`);
        // Shaped like the provider's bcryptHash ($2a$, cost 10, 53 characters); not a hash of anything.
        state.bcryptHash = pulumi.secret(`$2a$10$${"seam".padEnd(53, ".")}`);
      }
      if (args.type === "tls:index/privateKey:PrivateKey") {
        state.privateKeyPem = pulumi.secret("-----BEGIN PRIVATE KEY-----\nseam\n-----END PRIVATE KEY-----\n");
        state.privateKeyOpenssh = pulumi.secret("-----BEGIN OPENSSH PRIVATE KEY-----\nseam\n-----END OPENSSH PRIVATE KEY-----\n");
        state.publicKeyOpenssh = "ssh-ed25519 AAAAseam\n";
      }
      if (args.type === "hcloud:index/server:Server") state.ipv4Address = "203.0.113.50";
      return { id: `${args.name}-id`, state };
    },
    call(args) {
      if (args.token === "tls:index/getPublicKey:getPublicKey") return { publicKeyOpenssh: "ssh-ed25519 AAAAoperator\n" };
      if (args.token === "hcloud:index/getServerType:getServerType") return { name: args.inputs.name, ...catalogue.serverTypes[args.inputs.name] };
      if (args.token === "hcloud:index/getLocation:getLocation") return { name: args.inputs.name, networkZone: catalogue.locations[args.inputs.name] };
      return args.inputs;
    },
  },
  "synaxic",
  input.stack,
  false,
  "organization",
);

async function settle(v) {
  if (pulumi.Output.isInstance(v)) return settle(await v.promise());
  if (v instanceof Promise) return settle(await v);
  if (Array.isArray(v)) return Promise.all(v.map(settle));
  if (v && typeof v === "object") return Object.fromEntries(await Promise.all(Object.entries(v).map(async ([k, x]) => [k, await settle(x)])));
  return v;
}

(async () => {
  const exported = await settle(require(path.join(root, process.env.SEAM_ENTRY || "index.ts")));
  await new Promise((r) => setTimeout(r, 300));
  process.stdout.write(JSON.stringify({ ok: true, outputs: Object.keys(exported ?? {}).sort(), types: [...new Set(registered)].sort(), count: registered.length }) + "\n");
})().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }) + "\n");
  process.exitCode = 1;
});
