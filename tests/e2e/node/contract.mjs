// Drive hooksync with the official Nango Node client, as an app would: one client call
// (group) per run, named by the first argument, its arguments as JSON in the second.
// Prints one JSON object: what the call answered, or {error: {status, data}} when the API
// refused it. Env: HOOKSYNC_URL, API_KEY, SIGNING_KEY. tests/e2e/test_nango_clients.py
// checks every answer against the API and the database.
import * as connections from './connections.mjs';
import * as records from './records.mjs';
import * as scripts from './scripts.mjs';
import * as syncs from './syncs.mjs';
import * as webhooks from './webhooks.mjs';

const calls = { ...connections, ...records, ...scripts, ...syncs, ...webhooks };
const [name, args = '{}'] = process.argv.slice(2);
if (!Object.hasOwn(calls, name)) {
  console.error(`unknown call ${JSON.stringify(name)}; one of: ${Object.keys(calls).join(', ')}`);
  process.exit(2);
}
console.log(JSON.stringify(await calls[name](JSON.parse(args))));
