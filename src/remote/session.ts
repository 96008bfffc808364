// One build's connections to registries: a transport per (registry, purpose), shared by every
// client of that registry so tokens and connections are reused, and closed together at the end.
import { authenticatorFactory, createKeychain } from '../registry/auth/keychain.js';
import { RegistryClient } from '../registry/client.js';
import { createTransport, type RegistryTransport } from '../registry/transport.js';
import type { Keychain, RegistryOptions, RegistryPurpose } from '../registry/types.js';

export class RegistrySession {
  private readonly transports = new Map<string, RegistryTransport>();
  private readonly plainHttpHosts = new Map<string, Promise<boolean>>();
  private readonly keychain: Keychain;

  constructor(
    readonly options: RegistryOptions,
    keychain?: Keychain,
  ) {
    this.keychain = keychain ?? createKeychain({});
  }

  client(registry: string, repository: string, purpose: RegistryPurpose): RegistryClient {
    const key = `${purpose} ${registry}`;
    let transport = this.transports.get(key);
    if (!transport) {
      transport = createTransport(registry, purpose, this.options, authenticatorFactory(this.keychain), { plainHttpHosts: this.plainHttpHosts });
      this.transports.set(key, transport);
    }
    return new RegistryClient(transport, repository);
  }

  /** `abandon`: the build failed, so uploads still running are cut rather than waited for. */
  async close(options: { abandon?: boolean } = {}): Promise<void> {
    await Promise.all([...this.transports.values()].map((t) => t.close(options)));
    this.transports.clear();
  }
}
