// getScriptsConfig: the integrations' syncs as Nango's StandardNangoConfig[].
import { nango, outcome } from './client.mjs';

export async function getScriptsConfig() {
  return outcome(() => nango().getScriptsConfig());
}
