/**
 * Pieces every service component uses: pulling a pinned image, a file placed
 * on the host (for configuration a service re-reads without a restart), and
 * the settings every container shares.
 */
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { createHash } from "node:crypto";
import { remoteStep, type Connection } from "./remote";

/** Root of the files the program places on each host. */
export const HOST_FILES_ROOT = "/etc/synaxic";

export interface HostFileArgs {
  connection: pulumi.Input<Connection>;
  /** Absolute path on the host, under HOST_FILES_ROOT. */
  path: string;
  content: pulumi.Input<string>;
  /** Octal mode such as "0644" or "0600". */
  mode: string;
  /** uid:gid that owns the file (the container user that reads it). */
  owner: string;
  timeoutSeconds: number;
  /** Use sudo for a non-root SSH user. */
  sudo: boolean;
}

/**
 * Writes a file on the host atomically (temporary file, then rename into
 * place), with its mode and owner set before it becomes visible. The content
 * travels on standard input, never on a command line. Removed on delete.
 */
export function hostFile(name: string, args: HostFileArgs, opts: pulumi.CustomResourceOptions) {
  if (!args.path.startsWith(`${HOST_FILES_ROOT}/`)) throw new Error(`hostFile: ${args.path} is outside ${HOST_FILES_ROOT}`);
  if (!/^0[0-7]{3}$/.test(args.mode)) throw new Error(`hostFile: mode ${args.mode} is not an octal mode like 0640`);
  if (!/^\d+:\d+$/.test(args.owner)) throw new Error(`hostFile: owner ${args.owner} is not uid:gid`);
  const script = 'set -eu; d=$(dirname "$1"); mkdir -p "$d"; t="$1.tmp.$$"; (umask 077 && cat > "$t"); chown "$3" "$t"; chmod "$2" "$t"; mv -f "$t" "$1"';
  const prefix = args.sudo ? ["sudo", "-n"] : [];
  return remoteStep(
    name,
    {
      connection: args.connection,
      argv: [...prefix, "sh", "-c", script, "sh", args.path, args.mode, args.owner],
      stdin: args.content,
      deleteArgv: [...prefix, "rm", "-f", args.path],
      timeoutSeconds: args.timeoutSeconds,
    },
    opts,
  );
}

/** A short, stable digest of some content, for triggers. Not for secrets. */
export function digest(content: string): string {
  return createHash("sha256").update(content).digest("hex").slice(0, 16);
}

export function pullImage(name: string, image: pulumi.Input<string>, opts: pulumi.CustomResourceOptions): docker.RemoteImage {
  return new docker.RemoteImage(name, { name: image, keepLocally: true }, opts);
}

/** Settings shared by every service container. */
export function baseContainer(networkName: pulumi.Input<string>, ipv4Address: string, aliases: string[]) {
  return {
    restart: "unless-stopped",
    mustRun: true,
    logDriver: "json-file",
    logOpts: { "max-size": "20m", "max-file": "5" },
    networksAdvanced: [{ name: networkName, ipv4Address, aliases }],
    labels: [{ label: "app", value: "synaxic" }],
  };
}

/** Containers have fixed names: replace them by deleting the old one first. */
export const replaceInPlace: pulumi.CustomResourceOptions = { deleteBeforeReplace: true };

export interface Upload {
  file: string;
  content?: pulumi.Input<string>;
  contentBase64?: pulumi.Input<string>;
  /** Octal permissions, e.g. "0600". */
  permissions: string;
  owner?: string;
  group?: string;
  executable?: boolean;
}

/** An upload into a container before it starts; secret content stays secret. */
export function upload(file: string, content: pulumi.Input<string>, permissions: string, uid: number, gid = uid): Upload {
  return { file, content, permissions, owner: String(uid), group: String(gid) };
}
