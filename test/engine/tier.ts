/**
 * One engine-tier session: hosts booted with the rig's images loaded, the
 * engine with its plugins, and a checkout of the program in a work folder.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, requireEngine, rigImages, type Checkout } from "./engine";
import { EngineRig } from "./hosts";

export interface Tier {
  rig: EngineRig;
  engine: Engine;
  work: string;
  co: Checkout;
}

export async function startTier(label: string, hosts: string[], checkoutExtra: string[] = [], rigOpts: { plainHosts?: string[]; dnsNames?: Record<string, string> } = {}): Promise<Tier> {
  const paths = requireEngine();
  const images = rigImages();
  // Short: the Docker client's SSH control socket lives below it, and a Unix socket's path has at most 107 bytes.
  const work = mkdtempSync(join(tmpdir(), `sxe-${label.slice(0, 5)}-`));
  const rig = await EngineRig.create(hosts, images, rigOpts);
  const engine = new Engine(paths, join(work, "backend"));
  await engine.installPlugins();
  return { rig, engine, work, co: engine.checkout(join(work, "checkout-a"), checkoutExtra) };
}

/** Powers the hosts off and removes the work folder (kept with SYNAXIC_KEEP_RIG). */
export async function stopTier(t: Tier | undefined): Promise<void> {
  if (!t) return;
  console.log(`pulumi CLI time in this tier:\n${t.engine.timingSummary()}`);
  await t.rig.destroy();
  if (!process.env.SYNAXIC_KEEP_RIG) rmSync(t.work, { recursive: true, force: true });
}
