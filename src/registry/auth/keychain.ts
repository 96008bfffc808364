// kaniko's keychain: the docker config (credHelpers, credsStore, auths, as docker/cli resolves them;
// podman's auth.json when there is no docker config), then GitLab CI's predefined registry variables.
import os from 'node:os';
import { log } from '../../log/logger.js';
import { RegistryError, type Credential, type Keychain } from '../types.js';
import { registerSecrets } from './authenticator.js';
import { DEFAULT_HELPER_TIMEOUT_MS, getHelperCredential } from './credential-helper.js';
import {
  DockerConfigError, findAuthEntry, hasCredentials, helperFor, helperServerUrl, loadDockerConfig, registryHost,
  type DockerConfig,
} from './docker-config.js';

// The lead wires authenticators from here.
export { authenticatorFactory, createAuthenticator } from './authenticator.js';

export interface KeychainOptions {
  /** Environment for DOCKER_CONFIG, CI_REGISTRY* and the credential helpers' PATH (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Home directory for ~/.docker (default os.homedir()). */
  homeDir?: string;
  /** How long a credential helper may take (default 30 s). */
  helperTimeoutMs?: number;
}

export function createKeychain(options: KeychainOptions = {}): Keychain {
  const env = options.env ?? process.env;
  const homeDir = options.homeDir ?? os.homedir();
  const helperTimeoutMs = options.helperTimeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS;
  let config: Promise<DockerConfig | undefined> | undefined;
  // One lookup per registry per build: helpers are slow and may prompt services for fresh tokens.
  const resolved = new Map<string, Promise<Credential | undefined>>();

  async function fromDockerConfig(registry: string, host: string): Promise<Credential | undefined> {
    config ??= loadDockerConfig(env, homeDir);
    let cf: DockerConfig | undefined;
    try {
      cf = await config;
    } catch (err) {
      if (err instanceof DockerConfigError) throw new RegistryError(err.message, registry);
      throw err;
    }
    if (!cf) return undefined;

    const helper = helperFor(cf, host);
    if (helper) {
      // As docker/cli: with a helper configured, `auths` is not consulted, and "not found" means none.
      const credential = await getHelperCredential(helper, helperServerUrl(host), {
        registry, env, timeoutMs: helperTimeoutMs, configFile: cf.path,
      });
      if (credential) log.debug(`Using credentials for ${registry} from docker-credential-${helper}`);
      return credential;
    }
    const entry = findAuthEntry(cf, host);
    if (!entry || !hasCredentials(entry)) return undefined;
    log.debug(`Using credentials for ${registry} from ${cf.path} (auths["${entry.key}"])`);
    const { key: _key, ...credential } = entry;
    return credential;
  }

  function fromGitLab(registry: string, host: string): Credential | undefined {
    const { CI_REGISTRY: ciRegistry, CI_REGISTRY_USER: username, CI_REGISTRY_PASSWORD: password } = env;
    if (!ciRegistry || !username || !password || registryHost(ciRegistry) !== host) return undefined;
    log.debug(`Using CI_REGISTRY_USER/CI_REGISTRY_PASSWORD for ${registry}`);
    return { username, password };
  }

  async function lookup(registry: string): Promise<Credential | undefined> {
    const host = registryHost(registry);
    const credential = (await fromDockerConfig(registry, host)) ?? fromGitLab(registry, host);
    if (credential) registerSecrets(credential);
    return credential;
  }

  return {
    resolve(registry: string): Promise<Credential | undefined> {
      const host = registryHost(registry);
      let result = resolved.get(host);
      if (!result) {
        result = lookup(registry);
        resolved.set(host, result);
      }
      return result;
    },
  };
}
