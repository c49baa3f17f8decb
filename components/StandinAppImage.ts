import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { withTimeout } from "../lib/remote";
import type { StandinAppSource } from "../lib/standinApp";
import { parseImageId, standinBuildArgv, standinRemoveArgv } from "../templates/standin-app";

export interface StandinAppImageArgs {
  source: StandinAppSource;
  timeoutSeconds: number;
}

/**
 * The stand-in app's image, built on this machine's Docker engine from the
 * repository's standin-app/ (templates/standin-app.ts): what the local fleet
 * runs when its stack names no appImage. The build runs again when a source
 * file changes (its digest is the trigger and the tag); `imageId` is the
 * built image's ID, which the app containers run as is (nothing is pulled).
 * Removing it removes the tag.
 */
export class StandinAppImage extends pulumi.ComponentResource {
  /** synaxic-standin-app:<digest of the sources>. */
  public readonly tag: string;
  /** sha256:... of the built image. */
  public readonly imageId: pulumi.Output<string>;

  constructor(name: string, args: StandinAppImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("synaxic:components:StandinAppImage", name, {}, opts);
    this.tag = args.source.tag;
    const create = withTimeout(args.timeoutSeconds, standinBuildArgv(args.source.dir, this.tag));
    const timeout = `${args.timeoutSeconds + 60}s`;
    const build = new command.local.Command(
      `${name}-image-build`,
      {
        create,
        update: create,
        delete: withTimeout(120, standinRemoveArgv(this.tag)),
        triggers: [args.source.digest],
        // npm's and docker's progress (stderr) are shown; stdout is only the image ID.
        logging: "stdoutAndStderr",
        addPreviousOutputInEnv: false,
      },
      { parent: this, customTimeouts: { create: timeout, update: timeout, delete: "180s" } },
    );
    this.imageId = build.stdout.apply(parseImageId);
    this.registerOutputs({ tag: this.tag, imageId: this.imageId });
  }
}
