// Where to pull an image from, in kaniko's order: each --registry-map target for the image's
// registry (--registry-mirror values are maps for Docker Hub), then the registry itself unless
// --skip-default-registry-fallback. A map target may carry a repository prefix ("host/prefix").
import { canonicalRegistryName, type ImageReference, type RepositoryLocation } from '../reference/reference.js';

export interface PullSource extends RepositoryLocation {
  /** True for a mirror or mapped registry (failures there fall through to the next source). */
  mapped: boolean;
}

/** Mappings keyed by registry as users write them; Docker Hub may be spelled docker.io or index.docker.io. */
export type RegistryMaps = Map<string, string[]>;

export function buildRegistryMaps(maps: readonly string[], mirrors: readonly string[]): RegistryMaps {
  const out: RegistryMaps = new Map();
  const add = (key: string, value: string): void => {
    const k = canonicalRegistry(key);
    out.set(k, [...(out.get(k) ?? []), value]);
  };
  for (const item of maps) {
    for (const pair of item.split(';')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      if (eq <= 0 || eq === pair.length - 1) throw new Error(`invalid --registry-map "${pair}": expected original.registry=mirror.registry[/prefix]`);
      add(pair.slice(0, eq), pair.slice(eq + 1));
    }
  }
  for (const mirror of mirrors) if (mirror !== '') add('docker.io', mirror);
  return out;
}

export function pullSources(ref: ImageReference, maps: RegistryMaps, skipDefaultFallback: boolean): PullSource[] {
  const sources: PullSource[] = [];
  for (const target of maps.get(canonicalRegistry(ref.registry)) ?? []) {
    const slash = target.indexOf('/');
    const registry = slash < 0 ? target : target.slice(0, slash);
    let prefix = slash < 0 ? '' : target.slice(slash + 1);
    if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
    sources.push({ registry: canonicalRegistry(registry), repository: prefix + ref.repository, mapped: true });
  }
  if (!(skipDefaultFallback && sources.length > 0)) sources.push({ registry: ref.registry, repository: ref.repository, mapped: false });
  return sources;
}

function canonicalRegistry(registry: string): string {
  return canonicalRegistryName(registry.replace(/^https?:\/\//, '').replace(/\/+$/, ''));
}
