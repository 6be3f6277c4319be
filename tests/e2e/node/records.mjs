// listRecords: paging, modifiedAfter, filter and ids, each as the client sends them.
import { nango, outcome } from './client.mjs';

// Every page of one query, followed through next_cursor: [{id, meta}] per page.
export async function listRecords({ connectionId, model = 'Task', limit, modifiedAfter, filter, ids }) {
  return outcome(async () => {
    const client = nango();
    const pages = [];
    let cursor = null;
    do {
      const page = await client.listRecords({
        providerConfigKey: 'tasktracker',
        connectionId,
        model,
        ...(limit ? { limit } : {}),
        ...(modifiedAfter ? { modifiedAfter } : {}),
        ...(filter ? { filter } : {}),
        ...(ids ? { ids } : {}),
        ...(cursor ? { cursor } : {}),
      });
      pages.push(page.records.map((r) => ({ id: r.id, meta: r._nango_metadata })));
      cursor = page.next_cursor;
    } while (cursor && pages.length < 50);
    return { pages };
  });
}

// The same query with a key the deployment does not know.
export async function listRecordsWithWrongKey({ connectionId }) {
  return outcome(() =>
    nango({ secretKey: 'wrong-key' }).listRecords({ providerConfigKey: 'tasktracker', connectionId, model: 'Task' }),
  );
}
