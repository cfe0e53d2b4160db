// Composes subgraphs into a supergraph with Apollo's composition library (what `rover supergraph compose` and
// GraphOS run) and prints the outcome as one JSON object: {"errors": [...], "hints": [...], "supergraph": "..."}.
// Usage: node compose_supergraph.cjs <npm prefix holding @apollo/composition>; the subgraphs come on stdin as a
// JSON array of {"name", "url", "sdl"}.
'use strict';
const path = require('path');

function main() {
  const [prefix] = process.argv.slice(2);
  const modules = path.join(prefix, 'node_modules');
  const { composeServices } = require(path.join(modules, '@apollo', 'composition'));
  const { parse } = require(path.join(modules, 'graphql'));
  const subgraphs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const result = composeServices(subgraphs.map((s) => ({ name: s.name, url: s.url, typeDefs: parse(s.sdl) })));
  process.stdout.write(
    JSON.stringify({
      errors: (result.errors || []).map((e) => `${e.extensions && e.extensions.code}: ${e.message}`),
      hints: (result.hints || []).map((h) => `${h.definition.code}: ${h.message}`),
      supergraph: result.supergraphSdl || null,
    }),
  );
}

main();
