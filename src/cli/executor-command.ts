// `kiln executor`: kaniko's executor command line turned into BuildOptions, the build, the outputs.
import { existsSync, mkdirSync } from 'node:fs';
import { isAbsolute, join, posix, resolve } from 'node:path';
import { buildImage } from '../build/executor.js';
import { ContextError } from '../context/build-context.js';
import { contextWorkDir, materializeContext, parseContextSource } from '../context/context-source.js';
import { downloadFile, useRemoteTrust } from '../context/remote-file.js';
import { redactUrl } from '../context/remote-source.js';
import type { BuildOptions, CacheOptions } from '../build/options.js';
import { LOG_FORMATS, LOG_LEVELS, log, type LogFormat, type LogLevel } from '../log/logger.js';
import { writeOutputs } from '../output/write-outputs.js';
import { dotenvPath, writeDotenv } from '../output/dotenv.js';
import { parseReference } from '../reference/reference.js';
import { createKeychain } from '../registry/auth/keychain.js';
import { buildRegistryMaps } from '../registry/mirrors.js';
import type { RegistryOptions } from '../registry/types.js';
import { fetchMissingLayers } from '../remote/pull-image.js';
import { checkPushPermissions, EarlyUploads, pushImage } from '../remote/push-image.js';
import { RegistrySession } from '../remote/session.js';
import { reportFailure, UsageError } from './errors.js';
import { parseSecretFlags } from './secret-flag.js';
import { EXECUTOR_FLAGS, type ExecutorFlag } from './executor-flags.js';
import { parseFlags, type FlagValue, type ParsedCommandLine } from './flag-parser.js';
import { hostPlatform, parsePlatformFlag } from './platform.js';
import { DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL } from '../layer/zstd.js';

export async function runExecutor(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(executorHelp());
    return 0;
  }
  let options: BuildOptions;
  try {
    options = await toBuildOptions(parseFlags(argv, EXECUTOR_FLAGS, env), env);
  } catch (e) {
    return reportFailure(e);
  }
  const session = new RegistrySession(options.registry, createKeychain({ env }));
  let failed = false;
  try {
    const destinations = options.destinations.map((d) => parseReference(d));
    // kaniko checks before building; kiln checks while the base images' manifests are fetched, and
    // the build waits for the answer before its first stage.
    const permission = !options.noPush && !options.skipPushPermissionCheck ? () => checkPushPermissions(destinations, session) : undefined;
    // Blobs of the final image known before the build ends go up while it runs.
    const early = options.noPush || destinations.length === 0 ? undefined : new EarlyUploads(destinations, session);
    const result = await buildImage(options, session, permission, early);
    try {
      if (options.tarPath || options.ociLayoutPath) {
        for (const layer of result.image.manifest.layers) {
          await fetchMissingLayers([layer], result.remoteLayers.get(layer.digest) ?? result.blobSources[0], session, result.image.store, options.registry.imageDownloadRetry);
        }
      }
      await writeOutputs(result.image, options);
      if (options.noPush) log.info('Skipping push to container registry due to --no-push flag');
      else {
        await pushImage(result.image, destinations, session, {
          blobSources: result.blobSources,
          remoteLayers: result.remoteLayers,
          retries: options.registry.pushRetry,
          ignoreImmutableTagErrors: options.pushIgnoreImmutableTagErrors,
          early,
        });
        const dotenv = dotenvPath(env);
        if (dotenv) await writeDotenv(dotenv, result.image.manifestDescriptor.digest, destinations);
      }
    } finally {
      await result.dispose();
    }
    return 0;
  } catch (e) {
    failed = true;
    return reportFailure(e, options.dockerfilePath);
  } finally {
    await session.close({ abandon: failed });
  }
}

export async function toBuildOptions(parsed: ParsedCommandLine, env: NodeJS.ProcessEnv): Promise<BuildOptions> {
  const { values, given, positional } = parsed;
  if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}": the executor takes flags only (see kiln executor --help)`);
  // A deprecated spelling sets the flag it stands for.
  for (const flag of EXECUTOR_FLAGS) {
    if (flag.aliasOf && given.has(flag.name)) {
      log.warn(`Flag --${flag.name} is deprecated. Use: --${flag.aliasOf}`);
      values.set(flag.aliasOf, values.get(flag.name)!);
      given.add(flag.aliasOf);
    }
  }
  const { str, bool, list } = flagReaders(values);
  configureLogging(values);

  for (const flag of EXECUTOR_FLAGS) {
    if (flag.notYet && given.has(flag.name) && changesBehaviour(flag, values.get(flag.name)!)) {
      throw new UsageError(`--${flag.name} is not supported yet (planned in ${flag.notYet}); remove it to build with kiln today`);
    }
  }

  const destinations = list('destination');
  for (const d of destinations) parseReference(d); // reject bad names before building
  const noPush = bool('no-push');
  if (!noPush && destinations.length === 0) throw new UsageError('you must provide --destination, or use --no-push');
  if (destinations.length === 0 && str('image-name-with-digest-file')) throw new UsageError('you must provide --destination if setting --image-name-with-digest-file');
  if (destinations.length === 0 && str('image-name-tag-with-digest-file')) throw new UsageError('you must provide --destination if setting --image-name-tag-with-digest-file');
  for (const name of ['digest-file', 'image-name-with-digest-file', 'image-name-tag-with-digest-file']) {
    if (str(name)?.startsWith('https://')) throw new UsageError(`--${name} with an https:// URL (HTTP PUT) is not supported yet; give a file path`);
  }

  const compression = str('compression') ?? 'gzip';
  if (compression !== 'gzip' && compression !== 'zstd') throw new UsageError(`invalid --compression "${compression}": use gzip or zstd`);
  const level = values.get('compression-level') as number;
  const maxLevel = compression === 'zstd' ? MAX_ZSTD_LEVEL : 9;
  if (level !== -1 && (level < 0 || level > maxLevel)) throw new UsageError(`invalid --compression-level ${level} for ${compression}: use 0-${maxLevel}, or -1 for the default`);

  const registry = registryOptions(values, env, nonNegative(values.get('push-retry') as number, 'push-retry'));
  const isolation = isolationFlag(given.has('isolation') ? str('isolation') ?? 'chroot' : env.KILN_ISOLATION || 'chroot');
  const kanikoDir = absolute(str('kaniko-dir')) ?? '/kaniko';
  useRemoteTrust(registry); // ADD <url>, https:// and git contexts trust kiln's extra CAs too
  const dockerfile = str('dockerfile') ?? 'Dockerfile';
  const options: BuildOptions = {
    contextDir: '', // set last: fetching a remote context waits until every flag is known to be valid
    dockerfilePath: '',
    destinations,
    noPush,
    tarPath: absolute(str('tar-path')),
    ociLayoutPath: absolute(str('oci-layout-path')),
    digestFile: absolute(str('digest-file')),
    imageNameWithDigestFile: absolute(str('image-name-with-digest-file')),
    imageNameTagWithDigestFile: absolute(str('image-name-tag-with-digest-file')),
    buildArgs: withSourceDateEpoch(keyValues(list('build-arg'), '--build-arg', env, true), env),
    labels: keyValues(list('label'), '--label', env, false),
    target: str('target'),
    skipUnusedStages: bool('skip-unused-stages'),
    // The flag wins; kiln's own image sets KILN_ISOLATION=container as its default.
    isolation,
    force: bool('force'),
    kanikoDir,
    ignorePaths: list('ignore-path'),
    ignoreVarRun: bool('ignore-var-run'),
    snapshotMode: snapshotModeFlag(str('snapshot-mode') ?? 'full'),
    singleSnapshot: bool('single-snapshot'),
    forceBuildMetadata: bool('force-build-metadata'),
    cleanup: bool('cleanup'),
    extractRetries: nonNegative(values.get('image-fs-extract-retry') as number, 'image-fs-extract-retry'),
    reproducible: bool('reproducible'),
    platform: str('custom-platform') ? parsePlatformFlag(str('custom-platform')!) : hostPlatform(),
    compression,
    // kaniko's -1 leaves the level to go-containerregistry: gzip.BestSpeed, zstd's SpeedDefault (level 3).
    // zstd has no level 0: there, as in zstd's own API, 0 means the default.
    compressionLevel: level === -1 || (compression === 'zstd' && level === 0) ? (compression === 'zstd' ? DEFAULT_ZSTD_LEVEL : 1) : level,
    registry,
    registryMaps: buildRegistryMaps(list('registry-map'), list('registry-mirror')),
    skipDefaultRegistryFallback: bool('skip-default-registry-fallback'),
    skipPushPermissionCheck: bool('skip-push-permission-check'),
    pushIgnoreImmutableTagErrors: bool('push-ignore-immutable-tag-errors'),
    secrets: parseSecretFlags(list('secret'), env),
    baseImageCache: { dir: absolute(str('cache-dir')) ?? '/cache', ttlMs: parseGoDuration(values.get('cache-ttl') as string, '--cache-ttl') },
    cache: bool('cache') ? cacheOptions(str('cache-repo'), destinations, values.get('cache-ttl') as string, bool('single-snapshot'), {
      runLayers: bool('cache-run-layers'), copyLayers: bool('cache-copy-layers'), push: !bool('no-push-cache'),
    }) : undefined,
  };
  // Before anything is fetched or written: a remote context (and the CA bundle git gets) goes to the temp dir.
  if (isolation === 'container') await prepareContainerIsolation(kanikoDir, options.force);
  options.contextDir = await resolveContext(str('context') ?? '/workspace/', list('git'), str('context-sub-path'), contextWorkDir(isolation, kanikoDir), env);
  // kaniko's --dockerfile URL: downloaded with kiln's CAs, as ADD <url> is.
  options.dockerfilePath = /^https?:\/\//i.test(dockerfile) ? (await downloadFile(dockerfile)).path : resolveDockerfile(dockerfile, options.contextDir);
  return options;
}

/** --cache and its flags; the repository defaults to the first destination's, as kaniko's does. */
function cacheOptions(
  repo: string | undefined, destinations: string[], ttl: string, singleSnapshot: boolean,
  flags: { runLayers: boolean; copyLayers: boolean; push: boolean },
): CacheOptions | undefined {
  if (singleSnapshot) {
    log.warn('--cache is not used with --single-snapshot: a stage has one layer, made at its end');
    return undefined;
  }
  if (repo?.startsWith('oci:')) {
    if (repo === 'oci:') throw new UsageError('--cache-repo oci: needs a directory: oci:/path/to/layout');
    return { repo: `oci:${resolve(repo.slice(4))}`, ttlMs: parseGoDuration(ttl, '--cache-ttl'), ...flags };
  }
  let chosen = repo;
  if (!chosen) {
    if (destinations.length === 0) throw new UsageError('--cache needs --cache-repo, or a --destination whose repository + "/cache" holds the cache');
    const first = parseReference(destinations[0]!);
    chosen = `${first.registry}/${first.repository}/cache`;
  }
  parseReference(chosen);
  return { repo: chosen, ttlMs: parseGoDuration(ttl, '--cache-ttl'), ...flags };
}

/** Go's time.ParseDuration, as kaniko's duration flags take it: "336h0m0s", "90m", "1.5h", "2h45m". */
export function parseGoDuration(text: string, flag: string): number {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let at = 0;
  while (at < text.length) {
    re.lastIndex = at;
    const m = re.exec(text);
    if (!m) throw new UsageError(`invalid ${flag} "${text}": use a duration such as 336h, 90m or 2h45m`);
    total += Number(m[1]) * units[m[2]!]!;
    at = re.lastIndex;
  }
  if (text === '') throw new UsageError(`invalid ${flag} "": use a duration such as 336h`);
  return total;
}

/** Typed reads of parsed flag values: an empty string reads as unset. */
export function flagReaders(values: ParsedCommandLine['values']): { str(name: string): string | undefined; bool(name: string): boolean; list(name: string): string[] } {
  return {
    str: (name) => {
      const v = values.get(name);
      return typeof v === 'string' && v !== '' ? v : undefined;
    },
    bool: (name) => values.get(name) === true,
    list: (name) => (values.get(name) as string[] | undefined) ?? [],
  };
}

/** --verbosity, --log-format and --log-timestamp, as kaniko's commands take them. */
export function configureLogging(values: ParsedCommandLine['values']): void {
  const { str, bool } = flagReaders(values);
  const level = str('verbosity') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`not a valid log level: "${level}"; use one of ${LOG_LEVELS.join(', ')}`);
  const format = str('log-format') ?? 'color';
  if (!(LOG_FORMATS as readonly string[]).includes(format)) throw new UsageError(`not a valid log format: "${format}". Please specify one of (text, color, json)`);
  log.configure({ level: level as LogLevel, format: format as LogFormat, timestamp: bool('log-timestamp') });
}

/** The TLS, trust and retry flags both the executor and the warmer take. */
export function registryOptions(values: ParsedCommandLine['values'], env: NodeJS.ProcessEnv, pushRetry: number): RegistryOptions {
  const { bool, list } = flagReaders(values);
  return {
    insecure: bool('insecure'),
    insecurePull: bool('insecure-pull'),
    insecureRegistries: list('insecure-registry'),
    skipTlsVerify: bool('skip-tls-verify'),
    skipTlsVerifyPull: bool('skip-tls-verify-pull'),
    skipTlsVerifyRegistries: list('skip-tls-verify-registry'),
    registryCertificates: registryCertificates(list('registry-certificate')),
    registryClientCertificates: registryClientCertificates(list('registry-client-cert')),
    certificateDirectories: certificateDirectories(env),
    certificateFiles: certificateFiles(env),
    pushRetry,
    imageDownloadRetry: nonNegative(values.get('image-download-retry') as number, 'image-download-retry'),
  };
}

export function nonNegative(value: number, flag: string): number {
  if (value < 0) throw new UsageError(`--${flag} must be 0 or more`);
  return value;
}

/**
 * CA bundles trusted besides the directories: SSL_CERT_FILE, and Node's NODE_EXTRA_CA_CERTS, which
 * bin/kiln and kiln's image hand over as KILN_NODE_EXTRA_CA_CERTS so Node does not parse it at start-up.
 */
function certificateFiles(env: NodeJS.ProcessEnv): string[] {
  return [env.SSL_CERT_FILE, env.KILN_NODE_EXTRA_CA_CERTS ?? env.NODE_EXTRA_CA_CERTS].filter((f): f is string => !!f);
}

/** kaniko's image trusts /kaniko/ssl/certs (SSL_CERT_DIR there); elsewhere SSL_CERT_DIR when set. */
export function certificateDirectories(env: NodeJS.ProcessEnv): string[] {
  const dirs = (env.SSL_CERT_DIR ?? '').split(':').filter((d) => d !== '');
  if (!dirs.includes('/kaniko/ssl/certs') && existsSync('/kaniko/ssl/certs')) dirs.push('/kaniko/ssl/certs');
  return dirs;
}

export function registryCertificates(items: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw new UsageError(`invalid --registry-certificate "${item}": expected my.registry.url=/path/to/the/server/certificate`);
    out.set(item.slice(0, eq), item.slice(eq + 1));
  }
  return out;
}

export function registryClientCertificates(items: string[]): Map<string, { cert: string; key: string }> {
  const out = new Map<string, { cert: string; key: string }>();
  for (const item of items) {
    const eq = item.indexOf('=');
    const files = eq > 0 ? item.slice(eq + 1).split(',') : [];
    if (files.length !== 2 || !files[0] || !files[1]) {
      throw new UsageError(`invalid --registry-client-cert "${item}": expected my.registry.url=/path/to/client/cert,/path/to/client/key`);
    }
    out.set(item.slice(0, eq), { cert: files[0], key: files[1] });
  }
  return out;
}

function changesBehaviour(flag: ExecutorFlag, value: FlagValue): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (flag.kind === 'duration') return value !== flag.default && value !== '336h' && value !== '2w';
  return value !== (flag.default ?? '');
}

function absolute(path: string | undefined): string | undefined {
  return path === undefined ? undefined : resolve(path);
}

/**
 * The context directory: a directory as given, or a tar, https:// or git:// context fetched and
 * unpacked under `workDir` (context/context-source.ts). --context-sub-path applies only to contexts
 * written with "://", as in kaniko, which ignores it for a plain path; kiln says so.
 */
async function resolveContext(context: string, gitFlags: string[], subPath: string | undefined, workDir: string, env: NodeJS.ProcessEnv): Promise<string> {
  const source = wrapContextError(() => parseContextSource(context, gitFlags, env));
  if (source.kind !== 'git' && gitFlags.length > 0) log.warn('--git is used only with a git:// context; ignoring it');
  const viaScheme = context.includes('://');
  if (subPath && !viaScheme) log.warn(`--context-sub-path is ignored for a plain directory context, as kaniko ignores it; use --context ${context.replace(/\/+$/, '')}/${subPath} or dir://${context}`);
  if (source.kind === 'dir') {
    const abs = viaScheme && subPath ? join(resolve(source.path), posix.normalize('/' + subPath)) : resolve(source.path);
    if (!existsSync(abs)) throw new UsageError(`build context ${abs} does not exist; pass an existing directory with --context`);
    return abs;
  }
  if (source.kind !== 'tar') log.info(`Retrieving the build context from ${redactUrl(context)}`);
  try {
    return await materializeContext(source, subPath, workDir, env);
  } catch (e) {
    if (e instanceof ContextError) throw new UsageError(`build context ${redactUrl(context)}: ${e.message}`);
    throw e;
  }
}

function wrapContextError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ContextError) throw new UsageError(e.message);
    throw e;
  }
}

/** kaniko's order: the path as given (relative to the working directory), then relative to the context. */
function resolveDockerfile(dockerfile: string, contextDir: string): string {
  if (existsSync(dockerfile)) return resolve(dockerfile);
  const inContext = isAbsolute(dockerfile) ? dockerfile : join(contextDir, dockerfile);
  if (existsSync(inContext)) return inContext;
  throw new UsageError(`Dockerfile ${dockerfile} not found (looked in ${process.cwd()} and in the context ${contextDir}); please provide a valid path to a Dockerfile within the build context with --dockerfile`);
}

/** KEY=VALUE pairs; for build args a bare KEY takes the environment's value (empty when unset), as kaniko does. */
export function keyValues(items: string[], flag: string, env: NodeJS.ProcessEnv, bareFromEnv: boolean): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq === 0) throw new UsageError(`invalid ${flag} "${item}": the key is empty`);
    if (eq < 0) {
      if (!bareFromEnv) throw new UsageError(`invalid ${flag} "${item}": use KEY=VALUE`);
      out.set(item, env[item] ?? '');
    } else out.set(item.slice(0, eq), item.slice(eq + 1));
  }
  for (const [k, v] of out) if (flag === '--build-arg' && /SECRET|PASSWORD|TOKEN/i.test(k)) log.addSecret(v);
  return out;
}

export function executorHelp(): string {
  const lines = ['Usage: kiln executor [flags]', '', 'Builds an image from a Dockerfile; kaniko\'s executor flags.', '', 'Flags:'];
  for (const f of EXECUTOR_FLAGS) {
    if (f.aliasOf) continue;
    const names = (f.short ? `-${f.short}, ` : '    ') + `--${f.name}` + (f.kind === 'bool' ? '' : ` ${f.kind}`);
    const def = f.default !== undefined && f.default !== '' && f.default !== false ? ` (default ${JSON.stringify(f.default)})` : '';
    const env = f.env ? ` [env ${f.env}]` : '';
    const status = f.notYet ? ` — not supported yet: ${f.notYet}` : '';
    lines.push(`  ${names.padEnd(44)} ${f.description}${def}${env}${status}`);
  }
  return lines.join('\n') + '\n';
}

/** kaniko's guard, made stricter (container isolation writes the base image over "/"), and kiln's temp dir. */
async function prepareContainerIsolation(kanikoDir: string, force: boolean): Promise<void> {
  const { containerIsolationProblem } = await import('../rootfs/create-root.js');
  const problem = await containerIsolationProblem(kanikoDir);
  if (problem && !force) {
    throw new UsageError(`container isolation makes "/" the build root, but ${problem}; use --isolation=chroot, or --force if you are sure`);
  }
  // Temporary files live under kiln's own directory: everything else is the build root.
  const tmp = join(kanikoDir, 'tmp');
  mkdirSync(tmp, { recursive: true });
  process.env['TMPDIR'] = tmp;
}

function isolationFlag(value: string): 'chroot' | 'container' {
  if (value === 'chroot' || value === 'container') return value;
  throw new UsageError(`invalid --isolation "${value}": use chroot or container`);
}

function snapshotModeFlag(value: string): 'full' | 'redo' | 'time' {
  if (value === 'full' || value === 'redo' || value === 'time') return value;
  throw new UsageError(`invalid --snapshot-mode "${value}": use full, redo or time`);
}

/** As Docker Buildx does, SOURCE_DATE_EPOCH in the environment is the build arg unless one is given. */
function withSourceDateEpoch(buildArgs: Map<string, string>, env: NodeJS.ProcessEnv): Map<string, string> {
  const epoch = env['SOURCE_DATE_EPOCH'];
  if (epoch !== undefined && !buildArgs.has('SOURCE_DATE_EPOCH')) buildArgs.set('SOURCE_DATE_EPOCH', epoch);
  return buildArgs;
}
