// Image references ("busybox", "ghcr.io/me/app:1.0", "localhost:5000/a/b@sha256:…"): parsing with
// Docker's grammar and normalisation, and the string forms kiln prints and sends to registries.
import { BlockList, isIPv4, isIPv6 } from 'node:net';

export class InvalidReferenceError extends Error {
  override name = 'InvalidReferenceError';
}

export interface ImageReference {
  /** Registry host as users write it, normalised: "docker.io" for Docker Hub (also for input "index.docker.io"), "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "ghcr.io". */
  readonly registry: string;
  /** Repository path in the registry: "library/busybox", "group/sub/app". */
  readonly repository: string;
  /** Tag, if the reference has one (after defaulting: see parseReference). */
  readonly tag?: string;
  /** "sha256:<64 hex>" if the reference has a digest. */
  readonly digest?: string;
}

const dockerHub = 'docker.io';
const dockerHubLegacy = 'index.docker.io';
const dockerHubApiHost = 'registry-1.docker.io';
const officialNamespace = 'library/';
const defaultTag = 'latest';
const maxNameLength = 255;

const domainLabel = '[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?';
// IPv6 only in brackets, hex and colons: zones ("%eth0") and embedded IPv4 are not part of Docker's grammar.
const registryPattern = new RegExp(`^(?:${domainLabel}(?:\\.${domainLabel})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const pathComponentPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const digestAlgorithmPattern = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*$/;
const digestHexPattern = /^[0-9a-fA-F]{32,}$/;
// Algorithms whose encoded length is fixed; go-digest rejects other lengths and uppercase for these.
const fixedDigestHexLength: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };
// A bare image ID; Docker refuses it as a name so that it is never mistaken for one.
const imageIdPattern = /^[a-f0-9]{64}$/;
const schemePattern = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

const validExample = '"busybox", "busybox:1.36", "registry.example.com:5000/team/app:1.0" or "app@sha256:<64 hex digits>"';

function invalid(input: string, problem: string): never {
  throw new InvalidReferenceError(`invalid image reference ${JSON.stringify(input)}: ${problem}`);
}

interface ParsedReference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/** Docker's grammar (distribution/reference + Docker's normalisation, as go-containerregistry's name.ParseReference does it with default options): no registry → docker.io; one-part name on docker.io → library/NAME; no tag and no digest → tag "latest"; "name:tag@digest" keeps both. */
export function parseReference(input: string): ImageReference {
  const parsed = parseParts(input);
  if (parsed.tag === undefined && parsed.digest === undefined) parsed.tag = defaultTag;
  return makeReference(parsed);
}

/** A repository on a registry: where blobs are read, pushed or mounted from, and a cache lives. */
export interface RepositoryLocation {
  /** "host:port" as written; "docker.io" for Docker Hub. */
  registry: string;
  repository: string;
}

/** Same, but without adding the default tag (used where a bare repository is meant, e.g. --cache-repo). */
export function parseRepository(input: string): RepositoryLocation {
  const parsed = parseParts(input);
  if (parsed.tag !== undefined || parsed.digest !== undefined) {
    const suffix = identifierSuffix(parsed);
    let problem = `a repository is expected here, without a tag or digest; remove ${JSON.stringify(suffix)}`;
    // "localhost:5000" alone reads as repository "localhost" with tag "5000" (Docker's rule).
    if (parsed.digest === undefined && /^[0-9]+$/.test(parsed.tag ?? '') && !input.includes('/')) {
      problem += `, or if ${JSON.stringify(input)} is a registry, add a repository path: ${JSON.stringify(input + '/cache')}`;
    }
    invalid(input, problem);
  }
  return { registry: parsed.registry, repository: parsed.repository };
}

function parseParts(input: string): ParsedReference {
  if (input === '') invalid(input, `it is empty; expected something like ${validExample}`);
  if (/\s/.test(input)) invalid(input, `it contains whitespace; expected a single word like ${validExample}`);
  const scheme = schemePattern.exec(input);
  if (scheme) {
    invalid(input, `remove the scheme "${scheme[0]}": a reference starts with the registry host, e.g. ${JSON.stringify(input.slice(scheme[0].length))}`);
  }
  if (imageIdPattern.test(input)) {
    invalid(input, `a 64-character hex string is an image ID, not a repository name; to pin a digest write "name@sha256:${input}"`);
  }

  let name = input;
  let digest: string | undefined;
  const at = input.indexOf('@');
  if (at !== -1) {
    name = input.slice(0, at);
    digest = input.slice(at + 1);
    if (digest === '') invalid(input, 'it ends with "@"; put a digest after it (e.g. "busybox@sha256:<64 hex digits>") or remove the "@"');
    if (digest.includes('@')) invalid(input, 'it contains more than one "@"; a reference has at most one digest, e.g. "busybox@sha256:<64 hex digits>"');
    const problem = digestProblem(digest);
    if (problem) invalid(input, problem);
  }

  if (name.startsWith('[') && !name.includes('/')) {
    invalid(input, `an IPv6 registry needs a repository path after it, e.g. "[::1]:5000/app"`);
  }

  let tag: string | undefined;
  // A ":" after the last "/" starts the tag; one before it belongs to the registry's port or IPv6 address.
  const colon = name.lastIndexOf(':');
  if (colon !== -1 && colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (tag === '') {
      invalid(input, at === -1
        ? 'it ends with ":"; put a tag after it (e.g. "busybox:latest") or remove the ":"'
        : 'the tag between ":" and "@" is empty; put a tag there or remove the ":"');
    }
    const problem = tagProblem(tag);
    if (problem) invalid(input, problem);
  }

  if (name === '') {
    invalid(input, `there is no repository name before ${JSON.stringify(tag === undefined ? '@' : ':')}; expected something like ${validExample}`);
  }
  const { registry, repository } = splitRegistry(name);
  if (registry !== dockerHub && !registryPattern.test(registry)) {
    invalid(input, `registry ${JSON.stringify(registry)} is not valid; expected a host name, IPv4 address or [IPv6] address with an optional :port, e.g. "registry.example.com:5000" or "[::1]:5000"`);
  }
  const problem = repositoryProblem(repository);
  if (problem) invalid(input, problem);

  const fullName = `${registry}/${repository}`;
  if (fullName.length > maxNameLength) {
    invalid(input, `the repository name ${JSON.stringify(fullName)} is ${fullName.length} characters; it must be at most ${maxNameLength}`);
  }
  return { registry, repository, ...(tag === undefined ? {} : { tag }), ...(digest === undefined ? {} : { digest }) };
}

/** Docker's split: the first component names a registry only if it looks like a host (has "." or ":", or is "localhost"). */
function splitRegistry(name: string): RepositoryLocation {
  const slash = name.indexOf('/');
  let registry = dockerHub;
  let repository = name;
  if (slash !== -1) {
    const first = name.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      registry = first === dockerHubLegacy ? dockerHub : first;
      repository = name.slice(slash + 1);
    }
  }
  if (registry === dockerHub && repository !== '' && !repository.includes('/')) repository = officialNamespace + repository;
  return { registry, repository };
}

function repositoryProblem(repository: string): string | undefined {
  if (repository === '') return 'there is no repository path after the registry; expected e.g. "registry.example.com/team/app"';
  for (const component of repository.split('/')) {
    if (component === '') return `the repository path ${JSON.stringify(repository)} has an empty component (a leading, trailing or doubled "/")`;
    if (pathComponentPattern.test(component)) continue;
    if (component.includes(':')) {
      return `repository path component ${JSON.stringify(component)} contains ":"; a reference has one ":" before its tag, plus a ":port" only in the registry host, e.g. "registry.example.com:5000/app:1.0"`;
    }
    const lower = component.toLowerCase();
    if (lower !== component && pathComponentPattern.test(lower)) {
      return `repository name must be lowercase: ${JSON.stringify(component)} has uppercase letters (write ${JSON.stringify(lower)}; only the registry host and the tag may have uppercase)`;
    }
    return `repository path component ${JSON.stringify(component)} is not valid; components are lowercase letters and digits separated by ".", "_", "__" or "-" (not at either end), e.g. "my-team/my_app"`;
  }
  return undefined;
}

function tagProblem(tag: string): string | undefined {
  if (tagPattern.test(tag)) return undefined;
  if (tag.length > 128) return `tag ${JSON.stringify(tag)} is ${tag.length} characters; a tag is at most 128`;
  return `tag ${JSON.stringify(tag)} is not valid; a tag is up to 128 letters, digits, "_", "." and "-", not starting with "." or "-", e.g. "1.0" or "v2_rc-1"`;
}

function digestProblem(digest: string): string | undefined {
  const colon = digest.indexOf(':');
  const algorithm = colon === -1 ? digest : digest.slice(0, colon);
  const hex = colon === -1 ? '' : digest.slice(colon + 1);
  const fixedLength = fixedDigestHexLength[algorithm];
  if (fixedLength !== undefined && colon !== -1) {
    if (new RegExp(`^[a-f0-9]{${fixedLength}}$`).test(hex)) return undefined;
    return `${algorithm} digest ${JSON.stringify(digest)} must have exactly ${fixedLength} lowercase hex digits after "${algorithm}:" (it has ${hex.length} characters)`;
  }
  if (colon !== -1 && digestAlgorithmPattern.test(algorithm) && digestHexPattern.test(hex)) return undefined;
  return `digest ${JSON.stringify(digest)} is not valid; expected "algorithm:hex", e.g. "sha256:" followed by 64 lowercase hex digits`;
}

function makeReference(parts: ParsedReference): ImageReference {
  return {
    registry: parts.registry,
    repository: parts.repository,
    ...(parts.tag === undefined ? {} : { tag: parts.tag }),
    ...(parts.digest === undefined ? {} : { digest: parts.digest }),
  };
}

/** "docker.io/library/busybox:latest", "reg:5000/a/b@sha256:..." — the fully-qualified form. */
export function referenceString(ref: ImageReference): string {
  return repositoryName(ref) + identifierSuffix(ref);
}

/** "docker.io/library/busybox" */
export function repositoryName(ref: RepositoryLocation): string {
  return `${ref.registry}/${ref.repository}`;
}

function identifierSuffix(ref: ImageReference): string {
  return (ref.tag === undefined ? '' : `:${ref.tag}`) + (ref.digest === undefined ? '' : `@${ref.digest}`);
}

/** "docker.io" for any of Docker Hub's host names (index.docker.io, registry-1.docker.io), else the name unchanged. */
export function canonicalRegistryName(registry: string): string {
  return registry === dockerHubLegacy || registry === dockerHubApiHost ? dockerHub : registry;
}

/** Host to talk HTTP(S) to: "registry-1.docker.io" for docker.io, else the registry as is. */
export function registryApiHost(registry: string): string {
  return registry === dockerHub || registry === dockerHubLegacy ? dockerHubApiHost : registry;
}

/** Docker's short form for display: "busybox:latest", "me/app:1", "ghcr.io/x/y:z". */
export function familiarString(ref: ImageReference): string {
  let name = repositoryName(ref);
  if (ref.registry === dockerHub) {
    name = ref.repository;
    // Only a one-part official name shortens: "library/a/b" as "a/b" would read back as docker.io/a/b.
    const official = name.startsWith(officialNamespace) ? name.slice(officialNamespace.length) : undefined;
    if (official !== undefined && !official.includes('/')) name = official;
  }
  return name + identifierSuffix(ref);
}

/** The same reference with a different tag; a digest it has is kept ("name:tag@digest"). */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  const problem = tagProblem(tag);
  if (problem) invalid(`${repositoryName(ref)}:${tag}`, problem);
  return makeReference({ registry: ref.registry, repository: ref.repository, tag, digest: ref.digest });
}

/** The same repository pinned to a digest, without the tag ("name@sha256:...", as written to digest files). */
export function withDigest(ref: ImageReference, digest: string): ImageReference {
  const problem = digestProblem(digest);
  if (problem) invalid(`${repositoryName(ref)}@${digest}`, problem);
  return makeReference({ registry: ref.registry, repository: ref.repository, digest });
}

const loopbackAddresses = new BlockList();
loopbackAddresses.addSubnet('127.0.0.0', 8, 'ipv4');
loopbackAddresses.addAddress('::1', 'ipv6');

/** True when the registry is a loopback/localhost address (kiln may default to plain HTTP there, as go-containerregistry does). */
export function isLocalRegistry(registry: string): boolean {
  const host = registryHostname(registry).toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIPv4(host)) return loopbackAddresses.check(host, 'ipv4');
  if (isIPv6(host)) return loopbackAddresses.check(host, 'ipv6');
  return false;
}

/** The registry without its port and IPv6 brackets. */
function registryHostname(registry: string): string {
  if (registry.startsWith('[')) {
    const close = registry.indexOf(']');
    return close === -1 ? registry : registry.slice(1, close);
  }
  const colon = registry.indexOf(':');
  // More than one ":" without brackets is a bare IPv6 address ("::1"), which has no port.
  if (colon === -1 || registry.indexOf(':', colon + 1) !== -1) return registry;
  return registry.slice(0, colon);
}
