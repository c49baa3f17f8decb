/**
 * The stand-in app's sources on this machine (standin-app/): read once per
 * program run, to tag its image with a digest of what goes into it, so that a
 * change to any of them builds the image again.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { STANDIN_APP_FILES, STANDIN_APP_REPOSITORY } from "../templates/standin-app";

/** Where the stand-in's sources are, from the project's directory (where Pulumi runs the program). */
export const STANDIN_APP_DIR = "standin-app";

export interface StandinAppSource {
  /** Absolute path of the sources. */
  dir: string;
  /** sha256 over every source file's name and content (first 16 hex digits). */
  digest: string;
  /** The image's tag: the repository and the digest. */
  tag: string;
}

export function standinAppSource(dir = resolve(STANDIN_APP_DIR)): StandinAppSource {
  const h = createHash("sha256");
  for (const f of STANDIN_APP_FILES) {
    let content: Buffer;
    try {
      content = readFileSync(join(dir, f));
    } catch (e) {
      throw new Error(`the stand-in app's source ${join(dir, f)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); it is part of this repository`);
    }
    h.update(`${f}\0${content.length}\0`).update(content);
  }
  const digest = h.digest("hex").slice(0, 16);
  return { dir, digest, tag: `${STANDIN_APP_REPOSITORY}:${digest}` };
}
