/**
 * Prints what the engine tier needs and this machine lacks, one path a line;
 * exits 0 when the engine is installed, 3 when it is not.
 */
import { locateEngine } from "./engine";

const { missing } = locateEngine();
for (const m of missing) console.log(m);
process.exit(missing.length === 0 ? 0 : 3);
