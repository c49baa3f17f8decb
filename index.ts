/**
 * Synaxic fleet: one stack per VPS. This file only wires: read and validate
 * the stack's configuration, build the stack for its role, export outputs.
 */
import { loadStackConfig } from "./lib/config";
import { mainStack } from "./stacks/main";
import { replicaStack } from "./stacks/replica";

const config = loadStackConfig();

export = config.role === "main" ? mainStack(config) : replicaStack(config);
