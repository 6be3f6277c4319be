// Connections: listConnections (all, one id, search), getConnection, setMetadata,
// updateMetadata and deleteConnection.
import { nango, outcome, reply } from './client.mjs';

const KEY = 'tasktracker';

export async function listConnections({ connectionId, search }) {
  return outcome(() => nango().listConnections(connectionId, search));
}

export async function getConnection({ connectionId }) {
  return outcome(() => nango().getConnection(KEY, connectionId));
}

export async function setMetadata({ connectionId, metadata }) {
  return outcome(async () => reply(await nango().setMetadata(KEY, connectionId, metadata)));
}

export async function updateMetadata({ connectionId, metadata }) {
  return outcome(async () => reply(await nango().updateMetadata(KEY, connectionId, metadata)));
}

export async function deleteConnection({ connectionId }) {
  return outcome(async () => reply(await nango().deleteConnection(KEY, connectionId)));
}
