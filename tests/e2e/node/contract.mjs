// Drive hooksync with the official Nango Node client, as an app would.
// Input (env): HOOKSYNC_URL, API_KEY, SIGNING_KEY, WEBHOOK_BODY (raw notification body),
// WEBHOOK_HMAC (its X-Nango-Hmac-Sha256 header). Prints one JSON object.
import { Nango } from '@nangohq/node';

const nango = new Nango({
  host: process.env.HOOKSYNC_URL,
  secretKey: process.env.API_KEY,
  webhookSigningKey: process.env.SIGNING_KEY,
});

const pages = [];
let cursor = null;
do {
  const page = await nango.listRecords({
    providerConfigKey: 'tasktracker',
    connectionId: 'acme',
    model: 'Task',
    limit: 2,
    ...(cursor ? { cursor } : {}),
  });
  pages.push(page.records.map((r) => ({ id: r.id, meta: r._nango_metadata })));
  cursor = page.next_cursor;
} while (cursor && pages.length < 50);

const body = process.env.WEBHOOK_BODY;
const verified = nango.verifyIncomingWebhookRequest(body, {
  'X-Nango-Hmac-Sha256': process.env.WEBHOOK_HMAC,
});
const tampered = nango.verifyIncomingWebhookRequest(body + ' ', {
  'X-Nango-Hmac-Sha256': process.env.WEBHOOK_HMAC,
});

let unauthorized = null;
try {
  await new Nango({ host: process.env.HOOKSYNC_URL, secretKey: 'wrong-key' }).listRecords({
    providerConfigKey: 'tasktracker', connectionId: 'acme', model: 'Task',
  });
} catch (error) {
  unauthorized = error.response ? error.response.status : String(error);
}

console.log(JSON.stringify({ pages, verified, tampered, unauthorized }));
