/**
 * The pack's policies: the checks of checks.ts wired to the policy SDK
 * (@pulumi/policy). index.ts serves them; the unit tests run them through
 * the SDK's own request handling.
 */
import * as pulumi from "@pulumi/pulumi";
import * as policySdk from "@pulumi/policy";
import type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { checkDataProtection, checkFirewall, checkPinnedImages, checkPublishedPorts, findPlainSecrets, TYPES, type CheckedResource } from "./checks";
import { stackSettings, type StackSettings } from "./settings";

export const PACK_NAME = "synaxic-security";

/** The stack's settings, from the configuration of the stack being checked (settings.ts). */
function settings(): StackSettings {
  return stackSettings(pulumi.runtime.allConfig());
}

// The SDK exports this error class at run time; its type declarations leave it out.
const UnknownValueError = (policySdk as unknown as { UnknownValueError: new (...a: never[]) => Error }).UnknownValueError;

function resource(args: ResourceValidationArgs): CheckedResource {
  return { type: args.type, name: args.name, props: args.props, opts: { protect: args.opts.protect } };
}

/**
 * A validation from a check. A value the check needs that is not known yet
 * (a preview before the resources it comes from exist) skips the check for
 * this resource: it runs on the next preview or at `pulumi up`.
 */
function validate(types: string[], check: (r: CheckedResource, s: StackSettings) => string[]) {
  return (args: ResourceValidationArgs, reportViolation: ReportViolation) => {
    if (!types.includes(args.type)) return;
    let messages: string[];
    try {
      messages = check(resource(args), settings());
    } catch (e) {
      if (e instanceof UnknownValueError) args.notApplicable(`a value it checks is not known yet: ${e.message}`);
      throw e;
    }
    for (const m of messages) reportViolation(m);
  };
}

/**
 * Secret inputs. The SDK gives a validation a resource's inputs with their
 * secrets already unwrapped, so it cannot tell a secret input from a plain
 * one; only a remediation sees which inputs are secret (as `Secret`
 * values). So this policy runs at the "remediate" level: its remediation
 * looks for plain secrets and changes nothing, and its validation, which the
 * engine runs right after for the same resource, reports what was found.
 * The SDK reports a remediate-level policy's violations as mandatory, so a
 * plain secret fails the preview.
 */
const plainSecrets = new Map<string, string[]>();

/** A resource's inputs as the SDK keeps them for a remediation, with `Secret` where the engine sent a secret. */
function inputsWithSecrets(props: Record<string, unknown>): Record<string, unknown> {
  // The SDK's proxies unwrap secrets on reading a property; the property's
  // own descriptor is the kept value (a Secret, or a plain tree that holds
  // Secrets where its parts are secret).
  return Object.fromEntries(Object.keys(props).map((k) => [k, Object.getOwnPropertyDescriptor(props, k)?.value]));
}

export const secretsPolicy: ResourceValidationPolicy = {
  name: "secrets-stay-secret",
  description: "Inputs that carry a secret (passwords, private keys, tokens, secret environment variables, the stack's secret configuration) are secret.",
  enforcementLevel: "remediate",
  severity: "critical",
  remediateResource: (args) => {
    plainSecrets.set(args.urn, findPlainSecrets({ ...resource(args), props: inputsWithSecrets(args.props) }, settings()));
    return undefined;
  },
  validateResource: (args, reportViolation) => {
    const found = plainSecrets.get(args.urn);
    plainSecrets.delete(args.urn);
    if (found === undefined) {
      reportViolation(
        `The check for plain secrets did not run on ${args.type} "${args.name}": it runs in this policy's remediation, which the engine only calls at the "remediate" enforcement level. Keep secrets-stay-secret at "remediate" (its violations are reported as mandatory).`,
      );
      return;
    }
    for (const m of found) reportViolation(m);
  },
};

export const policies: ResourceValidationPolicy[] = [
  {
    name: "no-published-ports",
    description: "Only the nginx balancer publishes Docker ports, and only the balancer's ports; private services publish none.",
    enforcementLevel: "mandatory",
    severity: "high",
    validateResource: validate([TYPES.container], checkPublishedPorts),
  },
  {
    name: "pinned-images",
    description: "Every image is pinned: a version tag other than latest, or an @sha256 digest.",
    enforcementLevel: "mandatory",
    severity: "high",
    validateResource: validate([TYPES.remoteImage, TYPES.container], (r) => checkPinnedImages(r)),
  },
  {
    name: "firewall-world-only-balancer",
    description: "The Hetzner cloud firewall admits the world only on the balancer's ports; SSH never from the world.",
    enforcementLevel: "mandatory",
    severity: "critical",
    validateResource: validate([TYPES.firewall], checkFirewall),
  },
  {
    name: "data-servers-protected",
    description: "Servers that hold data carry protect and Hetzner's delete and rebuild protection, unless the stack sets deleteDataOnDestroy.",
    enforcementLevel: "mandatory",
    severity: "high",
    validateResource: validate([TYPES.server], checkDataProtection),
  },
  secretsPolicy,
];
