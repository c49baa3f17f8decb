/**
 * What the policies need to know about the stack being checked, read from
 * that stack's own configuration: the same keys, schemas and defaults the
 * program reads (lib/config.ts KEYS).
 *
 * The Pulumi CLI hands a policy pack the stack's configuration (decrypted)
 * in the PULUMI_CONFIG environment variable, which the SDK's
 * `pulumi.runtime.allConfig()` reads; under the unit tests' mocks the same
 * call returns the configuration the test runs the program with.
 */
import { KEYS, PROJECT } from "../lib/config";

export interface StackSettings {
  /** synaxic:deleteDataOnDestroy: the stack explicitly lets `pulumi destroy` delete its data. */
  deleteDataOnDestroy: boolean;
  /** The balancer's public ports (synaxic:httpPort and synaxic:httpsPort). */
  balancerPorts: number[];
  /** Values of the stack's secret configuration (at least 8 characters), to find them in plain inputs. */
  secretValues: string[];
}

/** Config keys of other packages whose values are secrets (provider credentials). */
const PROVIDER_SECRET_KEY = /(?:^|:)(token|password|secret|privateKey|apiKey)$/i;

function read<T>(raw: Readonly<Record<string, string>>, key: string): T {
  const spec = KEYS[key];
  if (!spec) throw new Error(`policy settings: ${key} is not a key of the program`);
  const value = raw[`${PROJECT}:${key}`];
  if (value === undefined) return spec.default as T;
  const parsed = spec.schema.safeParse(spec.json ? JSON.parse(value) : value);
  // A value the program refuses stops the program anyway; the policies fall back to the default.
  return (parsed.success ? parsed.data : spec.default) as T;
}

/** The settings of a stack from its raw configuration map (keys like "synaxic:httpPort"). Pure. */
export function stackSettings(raw: Readonly<Record<string, string>>): StackSettings {
  const secretValues = Object.entries(raw)
    .filter(([k]) => {
      if (k.startsWith(`${PROJECT}:`)) {
        const spec = KEYS[k.slice(PROJECT.length + 1)];
        return !!spec && (spec.secret === true || spec.optionalSecret === true);
      }
      return PROVIDER_SECRET_KEY.test(k);
    })
    .map(([, v]) => v.trim())
    .filter((v) => v.length >= 8);
  return {
    deleteDataOnDestroy: read<boolean>(raw, "deleteDataOnDestroy") === true,
    balancerPorts: [read<number>(raw, "httpPort"), read<number>(raw, "httpsPort")],
    secretValues,
  };
}
