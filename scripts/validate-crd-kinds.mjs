// Validates Gateway API and cert-manager objects (a JSON array of
// documents, as check-k8s.sh renders the chart) against the schemas of
// their CRDs, offline: the @kubernetes-models packages (pinned in
// scripts/k8s-tools.sh) carry validators generated from those CRDs.
// Types, enums, bounds, patterns and required fields are checked (fields
// the CRDs do not know are not). A kind with no validator here is an
// error, so nothing passes unchecked. Exits 1 listing every problem.
//
// usage: node validate-crd-kinds.mjs TOOLS_DIR DOCS.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [tools, file] = process.argv.slice(2);
const models = join(tools, "node", "node_modules", "@kubernetes-models");
const modules = {
  "gateway.networking.k8s.io/v1": join(models, "gateway-api", "gateway.networking.k8s.io", "v1", "index.js"),
  "cert-manager.io/v1": join(models, "cert-manager", "cert-manager.io", "v1", "index.js"),
};
const problems = [];
let checked = 0;
for (const doc of JSON.parse(readFileSync(file, "utf8"))) {
  const what = `${doc.kind}/${doc.metadata?.name} (${doc.apiVersion})`;
  const path = modules[doc.apiVersion];
  const Model = path && (await import(pathToFileURL(path).href))[doc.kind];
  if (!Model) {
    problems.push(`${what}: no schema to validate it against`);
    continue;
  }
  try {
    new Model(doc).validate();
    checked += 1;
  } catch (e) {
    problems.push(`${what}: ${e.message}`);
  }
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`${checked} objects valid against their CRDs' schemas`);
