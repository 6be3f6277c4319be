// Sync control: triggerSync (incremental, reset, reset with an emptied cache), pauseSync,
// startSync, syncStatus and updateSyncConnectionFrequency.
import { nango, outcome, reply } from './client.mjs';

const KEY = 'tasktracker';

export async function triggerSync({ syncs, connectionId, opts }) {
  return outcome(async () => reply(await nango().triggerSync(KEY, syncs, connectionId, opts)));
}

export async function pauseSync({ syncs, connectionId }) {
  return outcome(async () => reply(await nango().pauseSync(KEY, syncs, connectionId)));
}

export async function startSync({ syncs, connectionId }) {
  return outcome(async () => reply(await nango().startSync(KEY, syncs, connectionId)));
}

export async function syncStatus({ syncs, connectionId }) {
  return outcome(() => nango().syncStatus(KEY, syncs, connectionId));
}

export async function updateSyncConnectionFrequency({ sync, connectionId, frequency }) {
  return outcome(() => nango().updateSyncConnectionFrequency(KEY, sync, connectionId, frequency));
}
