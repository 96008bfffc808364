// Docker's client configuration (config.json) as docker/cli reads it for credentials: where it lives,
// the `auths` entries, `credHelpers` and `credsStore`, and how registry names in it are matched.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { canonicalRegistryName } from '../../reference/reference.js';

/** kiln's name for Docker Hub. */
export const DOCKER_HUB = 'docker.io';
/** The key docker/cli stores Docker Hub credentials under, for historical reasons. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

/** One `auths` entry with its `auth` field decoded. */
export interface DockerAuthEntry {
  /** The key as written in the file ("https://index.docker.io/v1/", "registry.example.com:5000", ...). */
  key: string;
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

export interface DockerConfig {
  /** The file it was read from, for messages. */
  path: string;
  /** In file order, so the first of several keys naming the same host wins. */
  auths: DockerAuthEntry[];
  credHelpers: Record<string, string>;
  credsStore?: string;
}

export class DockerConfigError extends Error {
  constructor(message: string, readonly file: string) {
    super(message);
    this.name = 'DockerConfigError';
  }
}

/**
 * A registry name reduced to what config keys are matched on: the host[:port] in lower case, without
 * scheme or path, with every Docker Hub alias mapped to "docker.io".
 */
export function registryHost(nameOrUrl: string): string {
  let rest = nameOrUrl.trim();
  const schemeEnd = rest.indexOf('://');
  if (schemeEnd >= 0) rest = rest.slice(schemeEnd + 3);
  const slash = rest.indexOf('/');
  if (slash >= 0) rest = rest.slice(0, slash);
  const at = rest.lastIndexOf('@'); // userinfo in a URL-shaped key
  if (at >= 0) rest = rest.slice(at + 1);
  const host = rest.toLowerCase();
  return canonicalRegistryName(host);
}

/** The name docker/cli hands credential helpers: Docker Hub's historical key, otherwise the host[:port]. */
export function helperServerUrl(host: string): string {
  return host === DOCKER_HUB ? DOCKER_HUB_AUTH_KEY : host;
}

/** The directory docker/cli reads: $DOCKER_CONFIG, else ~/.docker. */
export function dockerConfigDir(env: NodeJS.ProcessEnv, homeDir: string): string {
  const fromEnv = env.DOCKER_CONFIG;
  return fromEnv ? fromEnv : path.join(homeDir, '.docker');
}

/**
 * The credentials file to use, as go-containerregistry's default keychain picks it: the docker
 * config.json when it exists, otherwise podman's auth.json ($REGISTRY_AUTH_FILE,
 * $XDG_RUNTIME_DIR/containers/auth.json, $XDG_CONFIG_HOME or ~/.config /containers/auth.json).
 * Undefined when none exists (anonymous access).
 */
export async function loadDockerConfig(env: NodeJS.ProcessEnv, homeDir: string): Promise<DockerConfig | undefined> {
  const candidates = [path.join(dockerConfigDir(env, homeDir), 'config.json')];
  if (env.REGISTRY_AUTH_FILE) candidates.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) candidates.push(path.join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  candidates.push(path.join(env.XDG_CONFIG_HOME || path.join(homeDir, '.config'), 'containers', 'auth.json'));
  for (const file of candidates) {
    const config = await readDockerConfigFile(file);
    if (config) return config;
  }
  return undefined;
}

/** Reads one config file; undefined when it does not exist, DockerConfigError when it cannot be used. */
export async function readDockerConfigFile(file: string): Promise<DockerConfig | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'EISDIR') throw new DockerConfigError(`${file} is a directory, expected a docker config.json file`, file);
    throw new DockerConfigError(`cannot read docker config ${file}: ${(err as Error).message}`, file);
  }
  return parseDockerConfig(text, file);
}

/** Parses config.json text; `file` only names the file in errors. */
export function parseDockerConfig(text: string, file: string): DockerConfig {
  const config: DockerConfig = { path: file, auths: [], credHelpers: {} };
  if (text.trim() === '') return config; // docker/cli accepts an empty file
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    // V8's message may quote the file's text, which can hold passwords: report only where it broke.
    const position = /at position (\d+)/.exec((err as Error).message)?.[1];
    const where = position === undefined ? '' : ` (at ${lineAndColumn(text, Number(position))})`;
    throw new DockerConfigError(`docker config ${file} is not valid JSON${where}`, file);
  }
  if (!isObject(raw)) throw new DockerConfigError(`docker config ${file} must hold a JSON object`, file);

  const auths = raw.auths;
  if (auths !== undefined && auths !== null) {
    if (!isObject(auths)) throw new DockerConfigError(`docker config ${file}: "auths" must be an object`, file);
    for (const [key, value] of Object.entries(auths)) {
      if (value !== null) config.auths.push(parseAuthEntry(key, value, file)); // null decodes to nothing in Go
    }
  }

  const helpers = raw.credHelpers;
  if (helpers !== undefined && helpers !== null) {
    if (!isObject(helpers)) throw new DockerConfigError(`docker config ${file}: "credHelpers" must be an object`, file);
    for (const [key, value] of Object.entries(helpers)) {
      if (value === null) {
        config.credHelpers[key] = ''; // as Go decodes it
        continue;
      }
      if (typeof value !== 'string') {
        throw new DockerConfigError(`docker config ${file}: credHelpers["${key}"] must be a helper name (a string)`, file);
      }
      config.credHelpers[key] = value;
    }
  }

  const store = raw.credsStore;
  if (store !== undefined && store !== null && typeof store !== 'string') {
    throw new DockerConfigError(`docker config ${file}: "credsStore" must be a helper name (a string)`, file);
  }
  if (store) config.credsStore = store;
  return config;
}

function parseAuthEntry(key: string, value: unknown, file: string): DockerAuthEntry {
  if (!isObject(value)) throw new DockerConfigError(`docker config ${file}: auths["${key}"] must be an object`, file);
  const field = (name: string): string | undefined => {
    const v = value[name];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw new DockerConfigError(`docker config ${file}: auths["${key}"].${name} must be a string`, file);
    return v;
  };
  const entry: DockerAuthEntry = { key };
  const username = field('username');
  const password = field('password');
  if (username !== undefined) entry.username = username;
  if (password !== undefined) entry.password = password;
  const auth = field('auth');
  if (auth !== undefined) {
    // As docker/cli: a non-empty `auth` replaces username/password.
    const decoded = decodeAuthField(auth);
    if (!decoded) {
      throw new DockerConfigError(
        `docker config ${file}: auths["${key}"].auth is not base64 of "username:password"`, file);
    }
    entry.username = decoded.username;
    if (decoded.password !== '') entry.password = decoded.password;
    else delete entry.password;
  }
  const identityToken = field('identitytoken');
  const registryToken = field('registrytoken');
  if (identityToken !== undefined) entry.identityToken = identityToken;
  if (registryToken !== undefined) entry.registryToken = registryToken;
  return entry;
}

/** base64("user:pass"), padded or not; docker/cli rejects an empty username. */
function decodeAuthField(auth: string): { username: string; password: string } | undefined {
  const trimmed = auth.trim();
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(trimmed)) return undefined;
  const decoded = Buffer.from(trimmed, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1).replace(/\0+$/, '') };
}

/**
 * The `auths` entry for a host: the key exactly as docker/cli would store it first, then any key that
 * reduces to the same host (legacy keys with scheme and path, Docker Hub aliases).
 */
export function findAuthEntry(config: DockerConfig, host: string): DockerAuthEntry | undefined {
  const exactKey = helperServerUrl(host);
  return config.auths.find((e) => e.key === exactKey) ?? config.auths.find((e) => registryHost(e.key) === host);
}

/** True when the entry carries anything usable (an entry with only an email is ignored, as in docker). */
export function hasCredentials(entry: DockerAuthEntry): boolean {
  return Boolean(entry.username || entry.password || entry.identityToken || entry.registryToken);
}

/** The helper docker/cli would run for a host: its `credHelpers` entry, else `credsStore`; undefined = read `auths`. */
export function helperFor(config: DockerConfig, host: string): string | undefined {
  const exactKey = helperServerUrl(host);
  const keys = Object.keys(config.credHelpers);
  const key = keys.find((k) => k === exactKey) ?? keys.find((k) => registryHost(k) === host);
  // A credHelpers entry wins even when empty: docker/cli then reads `auths`, which is how a registry
  // is exempted from credsStore.
  if (key !== undefined) return config.credHelpers[key] || undefined;
  return config.credsStore || undefined;
}

function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return `line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
