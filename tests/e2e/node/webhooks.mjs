// verifyIncomingWebhookRequest: each delivery checked by a client holding each key.
import { nango } from './client.mjs';

// deliveries: [{body, hmac}] (the raw body and its X-Nango-Hmac-Sha256); keys: the signing
// keys clients hold. Answers verified[d][k]: does delivery d verify for a client holding
// key k. The client reads the header case-insensitively, so it is passed as the app's web
// framework hands it over (lower case) and as Nango documents it.
export async function verifyIncomingWebhookRequest({ deliveries, keys }) {
  const verified = deliveries.map(({ body, hmac }) =>
    keys.map((key) => {
      const client = nango({ webhookSigningKey: key });
      const lower = client.verifyIncomingWebhookRequest(body, { 'x-nango-hmac-sha256': hmac });
      const documented = client.verifyIncomingWebhookRequest(body, { 'X-Nango-Hmac-Sha256': hmac });
      return lower === documented ? lower : `header case changed the answer (${lower}, ${documented})`;
    }),
  );
  return { verified };
}
