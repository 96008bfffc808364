// kaniko's executor flags (v1.24 names, short forms, defaults, environment variables), each marked
// as built or not yet. A flag that is not built yet is accepted by name and refused with a clear
// message as soon as it would change anything, so an existing kaniko job never silently misbehaves.
import type { FlagSpec } from './flag-parser.js';

export interface ExecutorFlag extends FlagSpec {
  /** Where the flag is not built yet: the issue that builds it. */
  notYet?: string;
  /** Old spelling kaniko still accepts, mapped to this flag's name. */
  aliasOf?: string;
}

/**
 * How kiln reaches registries: plain HTTP, TLS trust and verification, mirrors. The executor and the
 * warmer share them; only what --insecure and --skip-tls-verify cover differs (the warmer only pulls).
 */
export function registryFlags(describe: { insecure: string; skipTlsVerify: string }): FlagSpec[] {
  return [
    { name: 'insecure', kind: 'bool', default: false, description: describe.insecure },
    { name: 'insecure-pull', kind: 'bool', default: false, description: 'Pull over plain HTTP' },
    { name: 'insecure-registry', kind: 'list', description: 'Registry to use over plain HTTP (repeatable)' },
    { name: 'skip-tls-verify', kind: 'bool', default: false, description: describe.skipTlsVerify },
    { name: 'skip-tls-verify-pull', kind: 'bool', default: false, description: 'Pull without verifying TLS' },
    { name: 'skip-tls-verify-registry', kind: 'list', description: 'Registry to use without TLS verification (repeatable)' },
    { name: 'registry-certificate', kind: 'list', description: 'registry=path of a CA certificate (repeatable)' },
    { name: 'registry-client-cert', kind: 'list', description: 'registry=cert,key for mutual TLS (repeatable)' },
    { name: 'registry-mirror', kind: 'list', env: 'KANIKO_REGISTRY_MIRROR', description: 'Mirror for docker.io (repeatable)' },
    { name: 'registry-map', kind: 'list', env: 'KANIKO_REGISTRY_MAP', description: 'original=mirror;... registry mapping' },
    { name: 'skip-default-registry-fallback', kind: 'bool', default: false, description: 'Fail instead of falling back from mirrors' },
  ];
}

export const EXECUTOR_FLAGS: readonly ExecutorFlag[] = [
  // Built.
  { name: 'context', short: 'c', kind: 'string', default: '/workspace/', description: 'The build context: a directory (or dir://path), tar://path.tar[.gz], tar://stdin, https://host/context.tar.gz, or git://host/repo[#ref[#commit]]' },
  { name: 'context-sub-path', kind: 'string', description: 'Directory within a "://" context to use as the context (ignored for a plain directory, as in kaniko)' },
  { name: 'git', kind: 'list', description: 'git:// context options: branch=NAME,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL (repeatable)' },
  { name: 'dockerfile', short: 'f', kind: 'string', default: 'Dockerfile', description: 'Path to the Dockerfile (relative paths: the working directory, then the context), or an http(s) URL' },
  { name: 'destination', short: 'd', kind: 'list', description: 'Image reference to push to (repeatable)' },
  { name: 'no-push', kind: 'bool', default: false, env: 'KANIKO_NO_PUSH', description: 'Do not push the image to the registry' },
  { name: 'tar-path', kind: 'string', description: 'Write the image as a docker-archive tarball to this path' },
  { name: 'oci-layout-path', kind: 'string', description: 'Write the image as an OCI image layout to this directory' },
  { name: 'digest-file', kind: 'string', description: 'Write the image digest to this file' },
  { name: 'image-name-with-digest-file', kind: 'string', description: 'Write <repository>@<digest> for each destination to this file' },
  { name: 'image-name-tag-with-digest-file', kind: 'string', description: 'Write <repository>:<tag>@<digest> for each destination to this file' },
  { name: 'build-arg', kind: 'list', description: 'Build argument KEY=VALUE, or KEY to read it from the environment (repeatable)' },
  { name: 'label', kind: 'list', description: 'Label KEY=VALUE added to the image (repeatable)' },
  { name: 'target', kind: 'string', description: 'Build stage to build (name or index)' },
  { name: 'skip-unused-stages', kind: 'bool', default: false, description: 'Build only the stages the target needs' },
  { name: 'reproducible', kind: 'bool', default: false, description: 'Strip timestamps so that the same inputs give the same digest' },
  { name: 'custom-platform', kind: 'string', description: 'Platform os/arch[/variant] of the image (default: this machine)' },
  { name: 'compression', kind: 'string', default: 'gzip', description: 'Layer compression: gzip or zstd (zstd for OCI images; Docker-format images keep gzip, as in kaniko)' },
  { name: 'compression-level', kind: 'int', default: -1, description: 'Compression level (gzip 0-9, zstd 1-19; -1 = default: gzip 1, zstd 3)' },
  { name: 'verbosity', short: 'v', kind: 'string', default: 'info', description: 'Log level: trace, debug, info, warn, error, fatal, panic' },
  { name: 'log-format', kind: 'string', default: 'color', description: 'Log format: color, text, json' },
  { name: 'log-timestamp', kind: 'bool', default: false, description: 'Timestamps in log lines' },
  { name: 'force', kind: 'bool', default: false, description: 'Allow container isolation outside a container' },
  { name: 'isolation', kind: 'string', default: 'chroot', description: 'How RUN is isolated: chroot (namespaces + chroot into a directory kiln owns) or container (kaniko\'s: the build root is "/"; kiln\'s image sets KILN_ISOLATION=container)' },
  // Deprecated spellings kaniko still takes.
  { name: 'tarPath', kind: 'string', aliasOf: 'tar-path', description: 'Deprecated: use --tar-path' },
  { name: 'customPlatform', kind: 'string', aliasOf: 'custom-platform', description: 'Deprecated: use --custom-platform' },
  // Not built yet.
  { name: 'bucket', short: 'b', kind: 'string', notYet: 'no issue yet (cloud-storage contexts)', description: 'Cloud storage bucket holding the context' },
  ...registryFlags({ insecure: 'Push over plain HTTP', skipTlsVerify: 'Push without verifying TLS' }),
  { name: 'push-retry', kind: 'int', default: 0, description: 'Retries for pushing' },
  { name: 'push-ignore-immutable-tag-errors', kind: 'bool', default: false, description: 'Ignore immutable-tag errors on push' },
  { name: 'image-download-retry', kind: 'int', default: 0, description: 'Retries for pulling the base image' },
  { name: 'skip-push-permission-check', kind: 'bool', default: false, description: 'Skip the push-permission check' },
  { name: 'image-fs-extract-retry', kind: 'int', default: 0, description: 'Retries for extracting a base image layer' },
  { name: 'kaniko-dir', kind: 'string', default: '/kaniko', env: 'KANIKO_DIR', description: 'kiln\'s own directory in container isolation' },
  { name: 'snapshot-mode', kind: 'string', default: 'full', description: 'full, redo or time' },
  { name: 'snapshotMode', kind: 'string', aliasOf: 'snapshot-mode', description: 'Deprecated: use --snapshot-mode' },
  { name: 'single-snapshot', kind: 'bool', default: false, description: 'One layer per stage, taken at its end' },
  { name: 'use-new-run', kind: 'bool', default: false, description: 'kaniko\'s experimental RUN change detection' },
  { name: 'ignore-path', kind: 'list', description: 'Path to leave out of snapshots (repeatable)' },
  { name: 'ignore-var-run', kind: 'bool', default: true, description: 'Leave /var/run out of snapshots' },
  { name: 'whitelist-var-run', kind: 'bool', default: true, aliasOf: 'ignore-var-run', description: 'Deprecated: use --ignore-var-run' },
  { name: 'cleanup', kind: 'bool', default: false, description: 'Container isolation: empty the build root at the end, so the container can build again' },
  { name: 'force-build-metadata', kind: 'bool', default: false, description: 'An empty layer for every instruction that changes no files (ENV, LABEL, a RUN that writes nothing ...), as kaniko adds' },
  { name: 'cache', kind: 'bool', default: false, description: 'Use the layer cache: RUN (and with --cache-copy-layers, COPY/ADD) layers are stored in --cache-repo by key and reused' },
  { name: 'cache-repo', kind: 'string', description: 'Registry repository of the layer cache (default: the first --destination\'s repository + "/cache")' },
  { name: 'cache-dir', kind: 'string', default: '/cache', description: 'Base-image cache filled by `kiln warmer` (an OCI layout); base images found there are not downloaded' },
  { name: 'cache-ttl', kind: 'duration', default: '336h0m0s', description: 'Cache entries older than this are not used' },
  { name: 'cache-copy-layers', kind: 'bool', default: false, description: 'Look COPY/ADD layers up in the cache too' },
  { name: 'cache-run-layers', kind: 'bool', default: true, description: 'Look RUN layers up in the cache' },
  { name: 'compressed-caching', kind: 'bool', default: true, description: 'Accepted for kaniko compatibility: kiln caches the compressed layer it pushes, and never holds it in memory' },
  { name: 'no-push-cache', kind: 'bool', default: false, description: 'Read the cache but push no new entries' },
  { name: 'secret', kind: 'list', description: 'Secret for RUN --mount=type=secret, as BuildKit takes it: id=ID,src=PATH or id=ID,env=VARIABLE (repeatable; never stored in the image, its cache key or the log)' },
];
