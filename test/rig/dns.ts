/**
 * DNS names on the rig: `ip netns exec` bind-mounts /etc/netns/<namespace>/hosts
 * over /etc/hosts for the command it runs (ip-netns(8)), so a hosts file there
 * gives every process started in a host namespace the names given here.
 * Needed where a client checks certificates by DNS name only (pgBackRest).
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestNet } from "./net";

const NETNS_ETC = "/etc/netns";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Writes the same hosts file (name -> address) for every host of the net; returns a function that removes them. */
export function setRigHosts(net: TestNet, names: Record<string, string>): () => void {
  // Leftovers of runs that crashed (namespace names carry the pid of their run).
  try {
    for (const d of readdirSync(NETNS_ETC)) {
      const pid = Number(/^sxt-(\d+)-/.exec(d)?.[1]);
      if (pid && pid !== process.pid && !alive(pid)) rmSync(join(NETNS_ETC, d), { recursive: true, force: true });
    }
  } catch {
    /* no /etc/netns yet */
  }
  const text = ["127.0.0.1 localhost", ...Object.entries(names).map(([name, ip]) => `${ip} ${name}`), ""].join("\n");
  const dirs: string[] = [];
  for (const h of net.hosts.values()) {
    const dir = join(NETNS_ETC, h.ns);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "hosts"), text, { mode: 0o644 });
    dirs.push(dir);
  }
  return () => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
}
