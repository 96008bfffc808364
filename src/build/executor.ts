// The executor: Dockerfile → stages → the target stage's image, then every requested output.
// Stages run in order up to the target (kaniko's default) or only those the target needs
// (--skip-unused-stages).
import { readFile } from 'node:fs/promises';
import { BuildContext } from '../context/build-context.js';
import { parseDockerfile } from '../dockerfile/parser.js';
import { ShellLex } from '../dockerfile/shell-lex.js';
import { targetStageIndex, toStages, type DockerfileModel, type Stage } from '../dockerfile/stages.js';
import { toInstruction } from '../dockerfile/instructions.js';
import { BlobStore, DigestMismatchError } from '../image/blob-store.js';
import { assembleImage, type BuiltImage } from '../image/image.js';
import type { Descriptor, ImageConfig, Platform } from '../image/types.js';
import { platformString } from '../image/platform.js';
import { log } from '../log/logger.js';
import { BuildError } from './errors.js';
import { FsView } from './fs-view.js';
import { BaseFileLister } from './base-files.js';
import type { RegistrySession } from '../remote/session.js';
import { RegistryError } from '../registry/types.js';
import { InvalidReferenceError, type RepositoryLocation } from '../reference/reference.js';
import type { BuildOptions } from './options.js';
import { StageBuilder } from './stage-builder.js';
import { imageTime, type StageEnvironment, type StageImage } from './stage-environment.js';
import type { Isolation, RootFactory } from '../rootfs/create-root.js';
import { CopySources, sourceSubset } from './copy-sources.js';
import { CopyError } from './copy.js';
import { fetchLayers } from '../remote/pull-image.js';
import type { EarlyUploads } from '../remote/push-image.js';
import type { CacheLocation } from '../cache/layer-cache.js';
import { createLayerCache, dockerfileId, type BuildCache } from './step-cache.js';
import { BasePulls, instructionsWriteFiles, pullBase, registryBase, relayLayers } from './base-image.js';
import {
  baseIndex, expandFrom, globalArgValues, namesRegistryImage, PREDEFINED_ARGS, safeExpand, sourceDateEpoch, stageNamed, stagePlatform, stagesNeededBy,
} from './stage-graph.js';
import { runCacheRoot } from './run-mounts.js';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface BuildResult {
  image: BuiltImage;
  /** Where the final image's base layers came from (mount candidates when pushing). */
  blobSources: RepositoryLocation[];
  /** Layers of the image that are only in a registry other than blobSources[0]'s (cache hits), by digest. */
  remoteLayers: Map<string, CacheLocation>;
  /** Waits for cache entries still being pushed, then removes the temporary blob store. */
  dispose(): Promise<void>;
}

/**
 * Builds the target stage; base images come through `session` (kiln's registry connections).
 * `check` (the push-permission check) starts once the base images' pulls have, runs alongside
 * them, and must pass before the first stage starts.
 */
export async function buildImage(options: BuildOptions, session: RegistrySession, check?: () => Promise<void>, early?: EarlyUploads): Promise<BuildResult> {
  const text = await readFile(options.dockerfilePath, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new BuildError(`cannot read Dockerfile ${options.dockerfilePath}: ${e.code ?? e.message}`, 0);
  });
  const parsed = parseDockerfile(text);
  for (const w of parsed.warnings) log.warn(`${options.dockerfilePath}:${w.line}: ${w.message}`);
  const model = toStages(parsed);
  const target = targetStageIndex(model, options.target);
  const escapeToken = parsed.directives.escape;
  const globalArgs = globalArgValues(model, options, escapeToken);
  const scope = { escapeToken, globalArgs, buildArgs: options.buildArgs };
  const wanted = options.skipUnusedStages ? stagesNeededBy(model, target, scope) : undefined;
  const stages = model.stages.slice(0, target + 1).filter((s) => !wanted || wanted.has(s.index));
  const store = await BlobStore.createTemp('kiln-build-');
  // The base images' manifests are the first link of a short build's critical path: they are asked
  // for before anything else starts, the push-permission check included.
  const bases = new BasePulls(store, options, session);
  // A build of one stage that writes no files pushes its base's layers unchanged, streamed from the
  // source registry: they start as soon as the manifest names them, not after the config and the
  // push-permission check (the config can still hold ONBUILD triggers that write files; the layers
  // are then also downloaded, the one case where they are fetched twice).
  const relayAhead = early && stages.length === 1 && !instructionsWriteFiles(stages[0]!)
    ? (layers: readonly Descriptor[], source: RepositoryLocation) => relayLayers(early, session, layers, source) : undefined;
  for (const stage of stages) {
    const name = safeExpand(new ShellLex(escapeToken), stage.from.image, (k) => globalArgs.get(k));
    if (name && namesRegistryImage(model, stage, name)) {
      try {
        bases.start(name, stagePlatform(stage, scope, options), relayAhead);
      } catch {
        // a bad FROM --platform: the stage reports it when it starts
      }
    }
  }
  const permitted = check?.();
  permitted?.catch(() => undefined); // awaited before the first stage
  early?.lookAtDestinations();
  const context = await BuildContext.open(options.contextDir, options.dockerfilePath).catch(async (e: unknown) => {
    await store.dispose();
    throw e;
  });
  let roots: Promise<RootFactory> | undefined;
  const lister = new BaseFileLister();
  const copySources = new CopySources(store, (layer) => (lister.has(layer) ? lister.listing(layer) : undefined), options.isolation === 'chroot' ? 'rm-program' : 'fs');
  let current = 0;
  const built = new Map<number, StageImage>();
  const cache = createLayerCache(options, session, store);
  try {
    const env: StageEnvironment = {
      context, store,
      escapeToken,
      globalArgs,
      buildArgs: options.buildArgs,
      consumedBuildArgs: new Set(),
      reproducible: options.reproducible,
      compression: options.compression,
      compressionLevel: options.compressionLevel,
      now: new Date(),
      created: sourceDateEpoch(options.buildArgs),
      roots: () => (roots ??= makeRootFactory(options)),
      singleSnapshot: options.singleSnapshot,
      forceBuildMetadata: options.forceBuildMetadata,
      copySource: (from, sources) => copySource(from, sources, current, model, built, copySources, env, options, session),
      copySourceKey: (from) => {
        const stage = stageNamed(model, from);
        return stage ? built.get(stage.index)?.cacheKey : undefined;
      },
      ...(cache ? { cache: { layers: cache, runLayers: options.cache!.runLayers, copyLayers: options.cache!.copyLayers, dockerfileId: dockerfileId(options) } satisfies BuildCache } : {}),
      remoteLayers: new Map(),
      // Each layer of the target stage is final once written: it may go up while later steps run.
      layerWritten: early && ((stageIndex, layer) => {
        if (stageIndex === target) early.offer(layer, () => store.openVerified(layer.digest), []);
      }),
      layerGrowing: early && ((stageIndex, growth) => (stageIndex === target ? early.offerGrowing(growth) : undefined)),
      // Only where a mount can do it: a cache registry other than the destination's would have the
      // layer streamed through kiln now, and again into the store if a later step needs its files.
      layerCached: early && ((stageIndex, layer, source) => {
        if (stageIndex === target) early.offer(layer, () => session.client(source.registry, source.repository, 'pull').getBlob(layer.digest), [source], { mountableOnly: true });
      }),
      runMounts: { cacheRoot: runCacheRoot(options.baseImageCache.dir), secrets: options.secrets ?? new Map() },
      cachedLayerFiles: async (layer, source) => {
        if (source) await fetchLayers([layer], source, session, store, options.registry.imageDownloadRetry, lister.listLayer);
        else await lister.listLayer(layer, store.openVerified(layer.digest)); // a local layout's blob, read in place
        return lister.listing(layer);
      },
      ensureLocal: async (layer, source, downloading) => {
        if (await store.has(layer.digest)) return;
        const from = env.remoteLayers.get(layer.digest) ?? source;
        if (!from) throw new Error(`internal error: layer ${layer.digest} is neither in the blob store nor in a known registry`);
        await fetchLayers([layer], from, session, store, options.registry.imageDownloadRetry, undefined, undefined, downloading);
      },
    };
    await permitted;
    for (const stage of model.stages.slice(0, target + 1)) {
      if (!stages.includes(stage)) {
        log.info(`Skipping unused stage ${stage.name ?? stage.index}`);
        continue;
      }
      current = stage.index;
      built.set(stage.index, await buildStage(stage, model, built, env, options, session, bases, lister, stage.index === target ? early : undefined));
    }
    const unused = [...options.buildArgs.keys()].filter((k) => !env.consumedBuildArgs.has(k) && !env.globalArgs.has(k) && !PREDEFINED_ARGS.has(k));
    if (unused.length) log.warn(`One or more build-args [${unused.join(' ')}] were not consumed`);

    const final = built.get(target)!;
    const config = final.config;
    if (options.labels.size) {
      config.config.Labels = { ...(config.config.Labels ?? {}), ...Object.fromEntries(options.labels) };
    }
    config.created = imageTime(env);
    const image = await assembleImage(config, final.layers, store, final.family);
    // Deleting the roots' files (thousands: seconds on slow disks) overlaps the push in chroot
    // isolation. Container isolation's --cleanup wipes "/" before anything else happens, as in kaniko.
    const teardown = Promise.all([disposeRoots(roots), copySources.dispose()]);
    teardown.catch(() => undefined); // awaited, and so reported, by dispose()
    if (options.isolation === 'container') await teardown;
    const remoteLayers = new Map([...env.remoteLayers].filter(([digest]) => final.layers.some((l) => l.digest === digest)));
    return {
      image, blobSources: [...final.blobSources, ...(cache?.location ? [cache.location] : [])], remoteLayers,
      dispose: async () => {
        const failed = await teardown.then(() => undefined, (e: unknown) => e);
        await cache?.flush();
        await store.dispose();
        if (failed) throw failed;
      },
    };
  } catch (e) {
    early?.stop();
    await disposeRoots(roots);
    await copySources.dispose();
    // The steps that finished before the failure are worth keeping in the cache.
    await cache?.flush();
    await store.dispose();
    throw e;
  }
}

/** COPY --from: an earlier stage by name or index, else an image reference (BuildKit's order). */
async function copySource(
  from: string, paths: readonly string[] | undefined, current: number, model: DockerfileModel, built: Map<number, StageImage>, sources: CopySources,
  env: StageEnvironment, options: BuildOptions, session: RegistrySession,
): Promise<{ files: BuildContext; name: string }> {
  const stage = stageNamed(model, from);
  if (stage) {
    if (stage.index >= current) throw new CopyError(`COPY --from=${from}: stage ${from} is not defined before this one; a stage can copy only from earlier stages`);
    const image = built.get(stage.index);
    if (!image) throw new CopyError(`COPY --from=${from}: stage ${from} was skipped (--skip-unused-stages) but this stage needs it`);
    await image.files.ready();
    const files = await sources.files(`stage:${stage.index}`, {
      layers: async () => image.layers,
      // Layers never downloaded (a base read lazily, cache hits) are downloaded when needed.
      ensure: (layer) => env.ensureLocal(layer, image.blobSources[0]),
    }, paths && sourceSubset(paths, image.files));
    return { files, name: `stage ${from}` };
  }
  if (/^\d+$/.test(from)) throw new CopyError(`COPY --from=${from}: there is no stage ${from}`);
  const files = await sources.files(`image:${from}`, { layers: async () => {
    try {
      const pulled = await pullBase(from, env.store, options, session);
      await fetchLayers(pulled.layers, pulled.source, session, env.store, options.registry.imageDownloadRetry);
      return pulled.layers;
    } catch (e) {
      if (e instanceof RegistryError || e instanceof InvalidReferenceError || e instanceof DigestMismatchError) {
        // A bare name is most often a mistyped stage: say so before the registry's answer.
        const hint = /^[a-z0-9][a-z0-9_.-]*$/.test(from) ? `no stage is named "${from}", and as an image: ` : '';
        throw new CopyError(`COPY --from=${from}: ${hint}${e.message}`);
      }
      throw e;
    }
  } });
  return { files, name: `image ${from}` };
}

async function makeRootFactory(options: BuildOptions): Promise<RootFactory> {
  const isolation: Isolation = options.isolation;
  // Loaded on first use: a build without RUN never needs roots, layer extraction or the native helpers.
  const { createRootFactory } = await import('../rootfs/create-root.js');
  const factory = await createRootFactory({
    isolation, kanikoDir: options.kanikoDir,
    // Container isolation: RUN --mount caches kept under --cache-dir are never part of the image.
    ignorePaths: isolation === 'container' ? [...options.ignorePaths, runCacheRoot(options.baseImageCache.dir)] : options.ignorePaths, ignoreVarRun: options.ignoreVarRun, snapshotMode: options.snapshotMode,
    cleanup: options.cleanup, extractRetries: options.extractRetries,
  });
  log.info(`RUN steps use ${factory.description}`);
  return factory;
}

async function disposeRoots(roots: Promise<RootFactory> | undefined): Promise<void> {
  const factory = await roots?.catch(() => undefined);
  await factory?.dispose();
}

async function buildStage(
  stage: Stage, model: DockerfileModel, built: Map<number, StageImage>, env: StageEnvironment, options: BuildOptions, session: RegistrySession,
  bases: BasePulls, lister: BaseFileLister, early?: EarlyUploads,
): Promise<StageImage> {
  const baseName = expandFrom(stage, env);
  log.info(`Building stage '${baseName}' [idx: '${stage.index}', base-idx: '${baseIndex(model, stage, baseName)}']`);
  const base = await startingImage(baseName, stage, model, built, env, options, session, bases, lister, early);
  const builder = new StageBuilder(base, env, stage.index, {
    platform: platformString(options.platform), reproducible: String(options.reproducible),
  });
  const triggers = base.config.config.OnBuild ?? [];
  log.info(`Executing ${triggers.length} build triggers`);
  base.config.config.OnBuild = null;
  for (const trigger of triggers) {
    const parsed = parseDockerfile(trigger);
    for (const node of parsed.instructions) {
      log.info(`${node.original} (ONBUILD trigger)`);
      await builder.dispatch(toInstruction({ ...node, startLine: stage.from.node.startLine, endLine: stage.from.node.startLine }));
    }
  }
  try {
    builder.lookAhead(stage.instructions);
    for (const instruction of stage.instructions) {
      log.info(instruction.node.original.trim());
      await builder.dispatch(instruction);
    }
    await builder.complete();
  } finally {
    await builder.finish();
  }
  return builder.result;
}

/** The stage's base: scratch, a copy of an earlier stage's image, or an image pulled from a registry. */
async function startingImage(
  baseName: string, stage: Stage, model: DockerfileModel, built: Map<number, StageImage>,
  env: StageEnvironment, options: BuildOptions, session: RegistrySession, bases: BasePulls, lister: BaseFileLister, early?: EarlyUploads,
): Promise<StageImage> {
  const line = stage.from.node.startLine;
  const index = baseIndex(model, stage, baseName);
  if (index >= 0) {
    const earlier = built.get(index);
    if (!earlier) throw new BuildError(`stage ${baseName} was skipped but stage ${stage.index} needs it`, line);
    return { ...earlier, config: structuredClone(earlier.config), layers: [...earlier.layers], files: earlier.files.clone() };
  }
  if (baseName.toLowerCase() === 'scratch') {
    log.info('No base image, nothing to extract');
    const platform = stagePlatform(stage, env, options);
    // The cache chain already holds the target platform; a FROM --platform scratch stage adds its own.
    const cacheKey = stage.from.platform === undefined ? 'scratch' : `scratch@${platformString(platform)}`;
    return { config: emptyConfig(platform), layers: [], files: new FsView(), family: 'oci', blobSources: [], cacheKey };
  }
  return registryBase(baseName, stage, env, options, session, bases, lister, early);
}

/** The registry images a Dockerfile's stages start FROM (what `kiln warmer --dockerfile` warms). */
export function baseImagesOf(dockerfileText: string, options: Pick<BuildOptions, 'buildArgs' | 'platform'>): string[] {
  const parsed = parseDockerfile(dockerfileText);
  const model = toStages(parsed);
  const env = { escapeToken: parsed.directives.escape, globalArgs: globalArgValues(model, options, parsed.directives.escape) } as StageEnvironment;
  const names = new Set<string>();
  for (const stage of model.stages) {
    const name = expandFrom(stage, env);
    if (namesRegistryImage(model, stage, name)) names.add(name);
  }
  return [...names];
}

function emptyConfig(platform: Platform): ImageConfig {
  return {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: [`PATH=${DEFAULT_PATH}`] },
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
}


