// Runs graphql-http's server audit (GraphQL over HTTP conformance) against a live server and prints its results as
// one JSON array. Usage: node graphql_http_audit.cjs <npm prefix holding graphql-http> <url> <headers as JSON>
// The headers (the service's credentials) are added to every request the audits make.
'use strict';
const path = require('path');

async function main() {
  const [prefix, url, headersJson] = process.argv.slice(2);
  const { auditServer } = require(path.join(prefix, 'node_modules', 'graphql-http'));
  const credentials = JSON.parse(headersJson);
  const fetchFn = (input, init = {}) => fetch(input, { ...init, headers: { ...credentials, ...(init.headers || {}) } });
  const results = await auditServer({ url, fetchFn });
  const shown = await Promise.all(
    results.map(async (result) => ({
      id: result.id,
      name: result.name,
      status: result.status,
      reason: result.reason,
      status_code: result.response ? result.response.status : undefined,
      body: result.response ? await result.response.text().catch(() => '(read by the audit)') : undefined,
    })),
  );
  process.stdout.write(JSON.stringify(shown));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
