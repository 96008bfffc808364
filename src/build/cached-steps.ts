// A stage's instructions dispatched with the layer cache (--cache): RUN (and COPY/ADD with
// --cache-copy-layers, and WORKDIR) are looked up by key and reused when found; every other
// instruction runs as usual and feeds the key chain by its history text. StageCache keeps the chain
// and talks to the cache; this module decides what each instruction contributes and applies a hit.
import type { Instruction, CopyInstruction } from '../dockerfile/instructions.js';
import type { Descriptor } from '../image/types.js';
import { hashText, type ChainItem } from '../cache/cache-key.js';
import type { CacheLocation, CachedStep } from '../cache/layer-cache.js';
import type { LayerListing } from '../cache/layer-listing.js';
import { sourceFiles } from '../context/source-digest.js';
import { storedLayer, type BuildRoot } from '../rootfs/build-root.js';
import { isoSeconds } from '../util/iso-seconds.js';
import { applyWorkdir } from './metadata-steps.js';
import { parseRunFlags } from './run-mount-spec.js';
import { runMountKey } from './run-mounts.js';
import { runArgv, runHistory } from './run-step.js';
import type { StageEnvironment, StageImage } from './stage-environment.js';
import type { CacheableKind, StageCache } from './step-cache.js';

/** The layer a step wrote, and its files (what a cache save stores). */
export interface StepLayer {
  descriptor: Descriptor;
  diffId: string;
  listing: LayerListing;
}

/** What the cached path uses of the stage it dispatches for; the stage builder supplies it. */
export interface CachedStage {
  /** The stage's image so far: a hit's layer and history entry join it. */
  image: StageImage;
  env: Pick<StageEnvironment, 'context' | 'copySourceKey' | 'now' | 'store' | 'remoteLayers' | 'cachedLayerFiles' | 'ensureLocal'>;
  /** Layers a root must hold: a hit's layer joins them. */
  rootLayers: Descriptor[];
  /** The stage's ARGs with values, which a RUN's history text (and so its key) includes. */
  stageArgs: readonly [string, string][];
  /** The root RUN steps execute in, if the stage has made one yet. */
  root: () => BuildRoot | undefined;
  /** A word expanded with the stage's variables as they stand. */
  word: (text: string) => string;
  /** Runs an instruction as without the cache; returns the layer it wrote, if any. */
  run: (ins: Instruction) => Promise<StepLayer | undefined>;
  /** Adds a history entry without a layer. */
  history: (createdBy: string) => void;
  /** A hit's layer from a cache registry joined the image. */
  layerCached: (layer: Descriptor, source: CacheLocation) => void;
  /** The `created` time of a history entry. */
  created: () => string;
}

/** What the cache may look an instruction up as (RUN; COPY and ADD; WORKDIR), if anything. */
export function cacheableKind(ins: Instruction): CacheableKind | undefined {
  return ins.kind === 'run' ? 'run' : ins.kind === 'copy' || ins.kind === 'add' ? 'copy' : ins.kind === 'workdir' ? 'workdir' : undefined;
}

export async function dispatchCached(ins: Instruction, cache: StageCache, stage: CachedStage): Promise<void> {
  const line = ins.node.startLine;
  const config = stage.image.config;
  let item: ChainItem;
  let kind: CacheableKind;
  if (ins.kind === 'run') {
    kind = 'run';
    item = { line, text: runHistory(runArgv(ins, config.config.Shell ?? undefined), stage.stageArgs) };
    const mounts = await runMountKey(parseRunFlags(ins.flags, stage.word), stage.env.context, stage.env.copySourceKey);
    if (Object.keys(mounts.files).length) item.files = mounts.files;
    if (Object.keys(mounts.extra).length) item.extra = mounts.extra;
    if (!mounts.cacheable) {
      // A bind from an image by tag: what it reads is known only once read, so the chain takes the result.
      await stage.run(ins);
      cache.note({ ...item, extra: { ...item.extra, result: config.rootfs.diff_ids.at(-1) ?? '' } });
      return;
    }
  } else if (ins.kind === 'copy' || ins.kind === 'add') {
    kind = 'copy';
    const copy = await copyKeyItem(ins, stage);
    if (!copy.cacheable) {
      // A COPY --from an image by tag: its content is known only once read, so the chain takes the result.
      await stage.run(ins);
      cache.note({ ...copy.item, extra: { ...copy.item.extra, result: config.rootfs.diff_ids.at(-1) ?? '' } });
      return;
    }
    item = copy.item;
  } else if (ins.kind === 'workdir') {
    kind = 'workdir';
    item = { line, text: `WORKDIR ${stage.word(ins.path)}` };
  } else {
    const history = config.history.length;
    await stage.run(ins);
    const text = config.history.length > history ? config.history.at(-1)!.created_by! : ins.node.original;
    cache.note({ line, text });
    return;
  }
  if (!cache.caches(kind)) {
    await stage.run(ins);
    cache.note(item);
    return;
  }
  const found = await cache.lookup(item);
  if ('hit' in found) {
    if (ins.kind === 'workdir') applyWorkdir(config.config, stage.word(ins.path));
    return useCached(found.hit, stage);
  }
  const layer = await stage.run(ins);
  cache.store(found.miss, {
    // The entry's own age (for --cache-ttl) is the real time, even when history says 1970.
    createdBy: config.history.at(-1)?.created_by ?? item.text, created: isoSeconds(stage.env.now),
    ...(layer ? { layer: { descriptor: layer.descriptor, diffId: layer.diffId }, listing: layer.listing } : {}),
  });
}

/** A COPY/ADD as a key input: its text (variables are in the chain already) and what it reads. */
async function copyKeyItem(ins: CopyInstruction, stage: CachedStage): Promise<{ item: ChainItem; cacheable: boolean }> {
  const extra: Record<string, string> = {};
  for (const s of ins.inlineSources) extra[`heredoc:${s.name}`] = hashText(s.content);
  const item: ChainItem = { line: ins.node.startLine, text: ins.node.original.trim(), extra };
  const sources = ins.sources.map((s) => stage.word(s));
  if (ins.from === undefined) return { item: { ...item, files: await sourceFiles(stage.env.context, sources, false) }, cacheable: true };
  const from = stage.word(ins.from);
  const stageKey = stage.env.copySourceKey(from);
  if (stageKey !== undefined) return { item: { ...item, extra: { ...extra, 'from-stage': stageKey } }, cacheable: true };
  // An image pinned by digest is content-addressed; a tag may move.
  return { item: { ...item, extra: { ...extra, 'from-image': from } }, cacheable: /@sha256:[0-9a-f]{64}$/.test(from) };
}

/** A step the cache supplied: its layer joins the image; its files are listed only if a later step needs them. */
async function useCached(hit: CachedStep, stage: CachedStage): Promise<void> {
  if (!hit.layer) return stage.history(hit.createdBy);
  const { image, env } = stage;
  const { descriptor, diffId } = hit.layer;
  image.layers.push(descriptor);
  image.config.rootfs.diff_ids.push(diffId);
  image.config.history.push({ created: stage.created(), created_by: hit.createdBy });
  stage.rootLayers.push(descriptor);
  if (hit.source) {
    env.remoteLayers.set(descriptor.digest, hit.source);
    stage.layerCached(descriptor, hit.source);
  }
  const listing = hit.listing;
  // A listing the entry records that cannot be read now is read from the layer itself.
  image.files.deferLayer(async () => (await listing?.().catch(() => undefined)) ?? env.cachedLayerFiles(descriptor, hit.source));
  const root = stage.root();
  if (root) {
    // A root made for an earlier step that missed gets the layer too.
    await image.files.ready();
    await env.ensureLocal(descriptor, hit.source);
    await root.addLayer(storedLayer(env.store, descriptor.digest));
  }
}
