// The official Nango Node client pointed at hooksync, and how a call's outcome is reported.
import { Nango } from '@nangohq/node';

// A client as an app builds it: the API key, and the webhook signing key it holds.
export function nango({ secretKey = process.env.API_KEY, webhookSigningKey = process.env.SIGNING_KEY } = {}) {
  return new Nango({ host: process.env.HOOKSYNC_URL, secretKey, webhookSigningKey });
}

// Some client methods return the parsed body, others the whole axios response: keep what
// the Python side checks (the status and the body), never the axios object itself.
export function reply(response) {
  return { status: response.status, data: response.data ?? null };
}

// A refused call is a result too (the Python side asserts the status and the error body):
// an HTTP error becomes {error: {status, data}}; anything else is thrown on.
export async function outcome(call) {
  try {
    return await call();
  } catch (error) {
    if (!error.response) {
      throw error;
    }
    return { error: { status: error.response.status, data: error.response.data ?? null } };
  }
}
