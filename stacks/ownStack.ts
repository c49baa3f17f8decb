import * as pulumi from "@pulumi/pulumi";

/** This stack as its last `up` left it, read through a StackReference to itself (no outputs on a new stack). */
export function ownStack(name: string): pulumi.StackReference {
  return new pulumi.StackReference(name, { name: `${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}` });
}
