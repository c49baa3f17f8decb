/**
 * Synaxic fleet: one stack per VPS (or one local stack for the whole fleet on
 * this machine's Docker engine), and optionally a control stack that decides
 * which host is primary. This file only wires: read and validate the
 * stack's configuration, build the stack for its role, export its outputs.
 */
import { loadConfig } from "./lib/config";
import { controlStack } from "./stacks/control";
import { localStack } from "./stacks/local";
import { mainStack } from "./stacks/main";
import { replicaStack } from "./stacks/replica";

const config = loadConfig();

export = config.role === "control"
  ? controlStack(config)
  : config.role === "replica"
    ? replicaStack(config)
    : config.host.provider === "local"
      ? localStack(config)
      : mainStack(config);
