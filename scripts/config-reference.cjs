#!/usr/bin/env node
// Prints the configuration reference table from Pulumi.yaml, the one place
// every key is declared: `node scripts/config-reference.cjs`. A unit test
// checks that the documented table matches the declarations.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");
const { parse } = require("yaml");

const project = parse(readFileSync(join(__dirname, "..", "Pulumi.yaml"), "utf8"));
const rows = ["| key | type | default | description |", "|---|---|---|---|"];
for (const [key, d] of Object.entries(project.config)) {
  const type = d.type === "array" ? `array of ${(d.items && d.items.type) || "string"}` : d.type;
  const def = d.secret ? "*(secret, required)*" : d.default === undefined ? "*(required)*" : `\`${JSON.stringify(d.default)}\``;
  rows.push(`| \`${key}\` | ${type} | ${def} | ${String(d.description || "").replace(/\|/g, "\\|")} |`);
}
console.log(rows.join("\n"));
