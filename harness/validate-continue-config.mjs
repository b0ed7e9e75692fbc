#!/usr/bin/env node
// Validates a Continue config.yaml with Continue's own schema package, @continuedev/config-yaml
// (installed by harness/setup-node-tools.sh; its directory in O3_NODE_TOOLS):
//
//   O3_NODE_TOOLS=$(bash harness/setup-node-tools.sh) node harness/validate-continue-config.mjs FILE
//
// Three checks, strictest first to last, each with Continue's own code:
//   1. parseConfigYaml: YAML parse + the configYamlSchema zod schema (what Continue runs when it
//      loads the file);
//   2. validateConfigYaml: the package's extra checks; its non-fatal warnings count as errors here;
//   3. no key of the file is dropped by the schema (zod strips unknown keys silently, so a
//      misspelt key such as `apibase` would otherwise pass and be ignored).
// Exit status: 0 valid, 1 rejected (Continue's messages on stderr), 2 usage or setup error.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function fail(code, msg) {
  console.error(msg);
  process.exit(code);
}

const file = process.argv[2];
const tools = process.env.O3_NODE_TOOLS;
if (!file) fail(2, "usage: validate-continue-config.mjs FILE (with O3_NODE_TOOLS set)");
if (!tools) fail(2, "O3_NODE_TOOLS is not set: run harness/setup-node-tools.sh and export its output");

let pkg, YAML;
try {
  const req = createRequire(join(tools, "package.json"));
  pkg = await import(pathToFileURL(req.resolve("@continuedev/config-yaml")).href);
  const pkgReq = createRequire(req.resolve("@continuedev/config-yaml"));
  YAML = await import(pathToFileURL(pkgReq.resolve("yaml")).href);
} catch (e) {
  fail(2, `cannot load @continuedev/config-yaml from ${tools}: ${e.message}`);
}

const text = readFileSync(file, "utf-8");
let parsed;
try {
  parsed = pkg.parseConfigYaml(text);
} catch (e) {
  fail(1, `${file}: Continue rejects the config: ${e.message}`);
}

const errors = pkg.validateConfigYaml(parsed);
if (errors.length > 0) {
  fail(
    1,
    `${file}: Continue's validation reports:\n` +
      errors.map((e) => `- ${e.fatal ? "error" : "warning"}: ${e.message}`).join("\n"),
  );
}

// Keys of the raw YAML that the schema's output lacks: unknown to Continue.
function dropped(raw, kept, path, out) {
  if (Array.isArray(raw) && Array.isArray(kept)) {
    raw.forEach((x, i) => dropped(x, kept[i], `${path}[${i}]`, out));
  } else if (raw && typeof raw === "object" && kept && typeof kept === "object") {
    for (const k of Object.keys(raw)) {
      if (!(k in kept)) out.push(`${path}.${k}`);
      else dropped(raw[k], kept[k], `${path}.${k}`, out);
    }
  }
  return out;
}
const unknown = dropped(YAML.parse(text), parsed, "$", []);
if (unknown.length > 0) {
  fail(1, `${file}: keys not in Continue's config schema (Continue ignores them): ${unknown.join(", ")}`);
}
console.log(`${file}: valid Continue config (@continuedev/config-yaml)`);
