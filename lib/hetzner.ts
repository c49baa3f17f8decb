/**
 * Hetzner's own catalogue, read before any resource is declared: the server
 * type and location named in the stack must exist, the type must be offered
 * in the location, and the type's cores and memory size PostgreSQL. No list
 * of types is kept here: Hetzner retires types (cx22 and cpx11-cpx51 were
 * deprecated for cx23 and cpx12-cpx62) and opens locations (ash, hil, sin),
 * and the catalogue says which are current.
 */
import * as pulumi from "@pulumi/pulumi";
import * as hcloud from "@pulumi/hcloud";
import { ConfigError, type HostConfig } from "./config";

export type HetznerHost = Extract<HostConfig, { provider: "hetzner" }>;

/** The two lookups, so that tests can stand in for Hetzner's API. */
export interface HetznerCatalogue {
  serverType(name: string): Promise<hcloud.GetServerTypeResult>;
  location(name: string): Promise<hcloud.GetLocationResult>;
}

export const hetznerApi: HetznerCatalogue = {
  serverType: (name) => hcloud.getServerType({ name }),
  location: (name) => hcloud.getLocation({ name }),
};

/** What the catalogue says about the host: its size, and the network zone of its location. */
export interface ResolvedHetznerHost extends HetznerHost {
  networkZone: string;
  architecture: string;
}

async function lookup<T>(key: string, value: string, what: string, get: () => Promise<T>): Promise<T> {
  try {
    return await get();
  } catch (e) {
    const reason = e instanceof Error ? e.message.split("\n")[0] : String(e);
    throw new ConfigError(key, `got ${JSON.stringify(value)}; Hetzner has no ${what} of that name (${reason}). See \`hcloud ${what === "server type" ? "server-type" : "location"} list\``);
  }
}

/**
 * Checks the host against Hetzner's catalogue and fills in its cores and
 * memory. Refuses an unknown type or location, a type not offered in the
 * location, and a networkZone that is not the location's; warns about a
 * deprecated type (no new server of it can be ordered after its date).
 */
export async function resolveHetznerHost(h: HetznerHost, api: HetznerCatalogue = hetznerApi, warn: (m: string) => void = (m) => pulumi.log.warn(m)): Promise<ResolvedHetznerHost> {
  const [type, location] = await Promise.all([
    lookup("serverType", h.serverType, "server type", () => api.serverType(h.serverType)),
    lookup("location", h.location, "location", () => api.location(h.location)),
  ]);
  const here = type.locations.find((l) => l.name === h.location);
  if (!here) {
    throw new ConfigError(
      "serverType",
      `got ${JSON.stringify(h.serverType)}; Hetzner does not offer it in ${h.location} (it does in ${type.locations.map((l) => l.name).join(", ") || "no location"}). Choose a type offered there, or another location`,
    );
  }
  if (here.isDeprecated || type.isDeprecated) {
    warn(
      `synaxic:serverType: ${h.serverType} is deprecated by Hetzner${here.unavailableAfter ? ` and cannot be ordered after ${here.unavailableAfter}` : ""}; choose a current type (\`hcloud server-type list\`) for new servers`,
    );
  }
  if (h.networkZone && h.networkZone !== location.networkZone) {
    throw new ConfigError("networkZone", `got ${JSON.stringify(h.networkZone)}; location ${h.location} is in network zone ${location.networkZone}. Leave networkZone unset to use the location's`);
  }
  return { ...h, cpus: type.cores, memoryMiB: Math.round(type.memory * 1024), networkZone: location.networkZone, architecture: type.architecture };
}
