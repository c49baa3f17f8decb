/**
 * The Synaxic fleet's security checklist as a policy pack:
 *
 *   pulumi preview --policy-pack policy
 *
 * docs/policy.md describes each policy and how to make an exception.
 */
import { PolicyPack } from "@pulumi/policy";
import { PACK_NAME, policies } from "./policies";

new PolicyPack(PACK_NAME, { policies, enforcementLevel: "mandatory" });
