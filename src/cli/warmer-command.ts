// `kiln warmer` (and /kaniko/warmer in kiln's image): kaniko's warmer command line. It fills the
// base-image cache (--cache-dir) with the images given by --image and with every base image a
// Dockerfile's stages start FROM (--dockerfile, with --build-arg), for executors to read later.
import { readFile } from 'node:fs/promises';
import { baseImagesOf } from '../build/executor.js';
import { BaseImageCache } from '../cache/base-image-cache.js';
import { warmImage } from '../cache/warm-images.js';
import { createKeychain } from '../registry/auth/keychain.js';
import { buildRegistryMaps } from '../registry/mirrors.js';
import { RegistrySession } from '../remote/session.js';
import { reportFailure, UsageError } from './errors.js';
import { configureLogging, flagReaders, keyValues, parseGoDuration, registryOptions } from './executor-command.js';
import { registryFlags } from './executor-flags.js';
import { parseFlags, type FlagSpec } from './flag-parser.js';
import { hostPlatform, parsePlatformFlag } from './platform.js';

export const WARMER_FLAGS: readonly FlagSpec[] = [
  { name: 'image', short: 'i', kind: 'list', description: 'Image to cache (repeatable)' },
  { name: 'cache-dir', short: 'c', kind: 'string', default: '/cache', description: 'Directory of the base-image cache' },
  { name: 'force', short: 'f', kind: 'bool', default: false, description: 'Download images even when the cache has them' },
  { name: 'cache-ttl', kind: 'duration', default: '336h0m0s', description: 'Cached images older than this are downloaded again' },
  { name: 'dockerfile', short: 'd', kind: 'string', description: 'Also cache every base image this Dockerfile\'s stages start FROM' },
  { name: 'build-arg', kind: 'list', description: 'Build argument for the Dockerfile\'s FROM lines (repeatable)' },
  { name: 'custom-platform', kind: 'string', description: 'Platform os/arch[/variant] to cache (default: this machine)' },
  ...registryFlags({ insecure: 'Use plain HTTP', skipTlsVerify: 'Do not verify TLS' }),
  { name: 'image-download-retry', kind: 'int', default: 0, description: 'Retries for downloading an image' },
  { name: 'verbosity', short: 'v', kind: 'string', default: 'info', description: 'Log level: trace, debug, info, warn, error, fatal, panic' },
  { name: 'log-format', kind: 'string', default: 'color', description: 'Log format: color, text, json' },
  { name: 'log-timestamp', kind: 'bool', default: false, description: 'Timestamps in log lines' },
];

export async function runWarmer(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(warmerHelp());
    return 0;
  }
  let session: RegistrySession | undefined;
  try {
    const { values, positional } = parseFlags(argv, WARMER_FLAGS, env);
    if (positional.length) throw new UsageError(`unexpected argument "${positional[0]}": the warmer takes flags only (see kiln warmer --help)`);
    const { str, bool, list } = flagReaders(values);
    configureLogging(values);

    const platform = str('custom-platform') ? parsePlatformFlag(str('custom-platform')!) : hostPlatform();
    const images = [...list('image')];
    const dockerfile = str('dockerfile');
    if (dockerfile) {
      const text = await readFile(dockerfile, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read Dockerfile ${dockerfile}: ${e.code ?? e.message}`);
      });
      for (const name of baseImagesOf(text, { buildArgs: keyValues(list('build-arg'), '--build-arg', env, true), platform })) {
        if (!images.includes(name)) images.push(name);
      }
    }
    if (images.length === 0) throw new UsageError('you must select at least one image to cache (--image), or a --dockerfile');
    const cache = new BaseImageCache(str('cache-dir') ?? '/cache', parseGoDuration(values.get('cache-ttl') as string, '--cache-ttl'));
    const registry = registryOptions(values, env, 0);
    const retries = registry.imageDownloadRetry;
    session = new RegistrySession(registry, createKeychain({ env }));
    const maps = buildRegistryMaps(list('registry-map'), list('registry-mirror'));
    for (const image of images) {
      await warmImage(image, session, cache, { platform, maps, skipDefaultFallback: bool('skip-default-registry-fallback'), retries, force: bool('force') });
    }
    return 0;
  } catch (e) {
    return reportFailure(e);
  } finally {
    await session?.close();
  }
}

export function warmerHelp(): string {
  const lines = ['Usage: kiln warmer [flags]', '', 'Downloads base images into the base-image cache (--cache-dir); kaniko\'s warmer flags.', '', 'Flags:'];
  for (const f of WARMER_FLAGS) {
    const names = (f.short ? `-${f.short}, ` : '    ') + `--${f.name}` + (f.kind === 'bool' ? '' : ` ${f.kind}`);
    const def = f.default !== undefined && f.default !== '' && f.default !== false ? ` (default ${JSON.stringify(f.default)})` : '';
    lines.push(`  ${names.padEnd(44)} ${f.description}${def}`);
  }
  return lines.join('\n') + '\n';
}
