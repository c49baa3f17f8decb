/**
 * Synaxic fleet: one stack per VPS (or one local stack for the whole fleet on
 * this machine's Docker engine). This file only wires: read and validate the
 * stack's configuration, build the stack for its role, export its outputs.
 */
import { loadStackConfig } from "./lib/config";
import { localStack } from "./stacks/local";
import { mainStack } from "./stacks/main";
import { replicaStack } from "./stacks/replica";

const config = loadStackConfig();

export = config.role === "replica" ? replicaStack(config) : config.host.provider === "local" ? localStack(config) : mainStack(config);
