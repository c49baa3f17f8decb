/**
 * PostgreSQL refuses to start on a data directory another major version
 * wrote ("database files are incompatible with server": PG_VERSION is
 * checked at start, src/backend/utils/init/miscinit.c ValidatePgVersion), and
 * a streaming standby needs the primary's major. A stack therefore never
 * moves its PostgreSQL image to another major by itself: the change is
 * refused before anything is declared, naming postgresImage, whether it came
 * from the config or from a new release's default.
 */

/** The major version an image's tag names (`postgres:17.12-trixie` → 17, `postgres:15` → 15), or undefined when the tag does not say. */
export function postgresMajorOf(image: string): number | undefined {
  const at = image.indexOf("@");
  const ref = at >= 0 ? image.slice(0, at) : image;
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  if (colon <= slash) return undefined;
  const m = /^(\d+)(?:[.-]|$)/.exec(ref.slice(colon + 1));
  if (!m) return undefined;
  const major = Number(m[1]);
  // 9.6 and older were two-part majors; the fleet's templates start at 15.
  return major >= 10 ? major : undefined;
}

/**
 * The error for moving from the deployed image to the next one across a major
 * version, or null when both name the same major, either does not say, or
 * nothing was deployed yet.
 */
export function postgresMajorChangeError(deployedImage: string | undefined, nextImage: string): { key: string; message: string } | null {
  if (!deployedImage) return null;
  const was = postgresMajorOf(deployedImage);
  const next = postgresMajorOf(nextImage);
  if (was === undefined || next === undefined || was === next) return null;
  return {
    key: "postgresImage",
    message:
      `is ${JSON.stringify(nextImage)} (PostgreSQL ${next}), but this fleet's data was written by PostgreSQL ${was} (${JSON.stringify(deployedImage)}), ` +
      `and PostgreSQL does not start on another major's data directory. To keep PostgreSQL ${was}, pin it (a newer ${was}.x patch of the same image is fine): ` +
      `\`pulumi config set postgresImage ${deployedImage}\`. Moving to PostgreSQL ${next} is a migration: docs/runbook.md#upgrading-postgresql-to-a-new-major-version`,
  };
}
