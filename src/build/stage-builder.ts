// Builds one stage: dispatches each instruction onto the stage's image state (config, layers,
// history, file view), expanding words with the environment as it stood before the instruction.
import { posix } from 'node:path';
import type { Instruction, CopyInstruction } from '../dockerfile/instructions.js';
import { ShellLex, ShellExpansionError, type EnvLookup } from '../dockerfile/shell-lex.js';
import type { BlobGrowth } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';
import { writeLayer, type LayerEntry } from '../layer/layer-writer.js';
import { layerMediaType } from '../image/image.js';
import { log } from '../log/logger.js';
import { CopyError, parseChmod, planCopy } from './copy.js';
import { BuildError } from './errors.js';
import { relative } from './fs-view.js';
import { goList } from './go-format.js';
import { resolveChown, UserLookupError, type Identity } from './users.js';
import { ContextError } from '../context/build-context.js';
import type { CommandLineInstruction as RunInstruction } from '../dockerfile/instructions.js';
import { applyWhileDownloading, storedLayer, unpackWhileDownloading, type BuildRoot } from '../rootfs/build-root.js';
import { Slots } from '../util/slots.js';
import { SandboxSetupError } from '../isolation/step-process.js';
import { snapshotLayerEntries } from '../snapshot/snapshot.js';
import { resolveUser, runArgv, runEnv, runHistory, runScript } from './run-step.js';
import { SquashedChanges } from './single-snapshot.js';
import { StageCache } from './step-cache.js';
import { cacheableKind, dispatchCached, type CachedStage, type StepLayer } from './cached-steps.js';
import { imageTime, type StageEnvironment, type StageImage } from './stage-environment.js';
import { listingOf, withAncestors } from './layer-files.js';
import {
  applyArg, applyCmd, applyEntrypoint, applyEnv, applyExpose, applyHealthcheck, applyLabel, applyMaintainer, applyOnbuild,
  applyShell, applyStopSignal, applyUser, applyVolume, applyWorkdir, type StageVariables,
} from './metadata-steps.js';
import { parseRunFlags, RunFlagError } from './run-mount-spec.js';
import { prepareRunMounts, RunMountError } from './run-mounts.js';
import { MountSetupError } from '../isolation/step-mounts.js';

// executor.ts imports these from here; they live in stage-environment.ts.

/** Layers of a RUN root downloaded at once when they are not in the store yet (cache hits), as fetchLayers does for a base. */
const ROOT_DOWNLOADS_AT_ONCE = 3;

export class StageBuilder {
  /** What `$VAR` sees (ENV and ARG values), and the lexer that expands words with it. */
  private readonly scope: StageVariables;
  /** Whether this stage has set CMD (an ENTRYPOINT then keeps it). */
  private cmdSet = false;
  /** The stage's ARGs with values, in declaration order (BuildKit's d.buildArgs). */
  private readonly stageArgs: [string, string][] = [];
  /** The root RUN steps execute in, once the stage has needed one. */
  private root?: BuildRoot;
  /** Layers a root must hold: the image's, plus (with --single-snapshot) those kept out of it. */
  private readonly rootLayers: Descriptor[];
  /** VOLUME paths declared so far (container isolation leaves them out of snapshots). */
  private readonly volumes: string[] = [];
  /** With --single-snapshot, the stage's changes so far. */
  private readonly squashed?: SquashedChanges;
  /** The stage's key chain, with --cache. */
  private readonly cache?: StageCache;
  /** The layer the last step wrote, and its files (what a cache save stores). */
  private lastLayer?: StepLayer;

  constructor(
    private readonly image: StageImage,
    private readonly env: StageEnvironment,
    private readonly stageIndex: number,
    /** Build-wide inputs of every cache key (platform, --reproducible). */
    cacheSettings: Record<string, string> = {},
  ) {
    this.scope = { lex: new ShellLex(env.escapeToken), vars: new Map() };
    this.rootLayers = [...image.layers];
    if (env.singleSnapshot) this.squashed = new SquashedChanges(() => image.files.clone());
    if (env.cache) this.cache = new StageCache(env.cache, image.cacheKey, stageIndex, cacheSettings);
    for (const kv of image.config.config.Env ?? []) {
      const eq = kv.indexOf('=');
      if (eq > 0) this.scope.vars.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
  }

  get result(): StageImage {
    if (this.cache) this.image.cacheKey = this.cache.key;
    return this.image;
  }

  /** With --cache: the stage's coming instructions, whose cache entries are then asked for ahead. */
  lookAhead(instructions: readonly Instruction[]): void {
    this.cache?.prefetch(instructions.map(cacheableKind));
  }

  async dispatch(instruction: Instruction): Promise<void> {
    const history = this.image.config.history.length;
    try {
      if (this.cache) await dispatchCached(instruction, this.cache, this.cachedStage());
      else await this.dispatchUnchecked(instruction);
      if (this.env.forceBuildMetadata && !this.squashed) await this.forceLayer(history);
    } catch (e) {
      if (e instanceof ShellExpansionError || e instanceof CopyError || e instanceof UserLookupError || e instanceof ContextError
        || e instanceof RunFlagError || e instanceof RunMountError || e instanceof MountSetupError) {
        throw new BuildError(e.message, instruction.node.startLine);
      }
      throw e;
    }
  }

  private lookup: EnvLookup = (name) => this.scope.vars.get(name);

  /** --force-build-metadata: the instruction's history-only entry gets an empty layer, as kaniko adds one. */
  private async forceLayer(historyBefore: number): Promise<void> {
    const last = this.image.config.history.at(-1);
    if (this.image.config.history.length === historyBefore || !last?.empty_layer) return;
    const written = await this.writeLayer([]);
    this.rootLayers.push(written.descriptor);
    delete last.empty_layer;
  }

  /** What the cached path (cached-steps.ts) may use of this stage. */
  private cachedStage(): CachedStage {
    return {
      image: this.image, env: this.env, rootLayers: this.rootLayers, stageArgs: this.stageArgs,
      root: () => this.root,
      word: (text) => this.word(text),
      run: (ins) => this.runUncached(ins),
      history: (createdBy) => this.history(createdBy),
      layerCached: (layer, source) => this.env.layerCached?.(this.stageIndex, layer, source),
      created: () => this.created(),
    };
  }

  /** Runs an instruction without the cache; returns the layer it wrote, if any (what a cache save stores). */
  private async runUncached(ins: Instruction): Promise<StepLayer | undefined> {
    this.lastLayer = undefined;
    await this.dispatchUnchecked(ins);
    return this.lastLayer as StepLayer | undefined; // set by the dispatch (TypeScript keeps the narrowing across it)
  }

  private word(text: string): string {
    return this.scope.lex.processWord(text, this.lookup);
  }

  private async dispatchUnchecked(ins: Instruction): Promise<void> {
    const cfg = this.image.config.config;
    switch (ins.kind) {
      case 'from':
        throw new BuildError('FROM inside a stage', ins.node.startLine);
      case 'env':
        return this.history(applyEnv(ins, cfg, this.scope));
      case 'label':
        return this.history(applyLabel(ins, cfg, this.scope));
      case 'arg':
        return this.history(applyArg(ins, this.scope, this.stageArgs, this.env));
      case 'expose':
        return this.history(applyExpose(ins, cfg, this.scope));
      case 'volume': {
        const { paths, createdBy } = applyVolume(ins, cfg, this.scope);
        for (const p of paths) {
          this.volumes.push(p);
          this.root?.ignoreVolume(p);
        }
        return this.history(createdBy);
      }
      case 'user':
        return this.history(applyUser(ins, cfg, this.scope));
      case 'workdir':
        return this.workdir(this.word(ins.path));
      case 'stopsignal':
        return this.history(applyStopSignal(ins, cfg, this.scope));
      case 'maintainer':
        return this.history(applyMaintainer(ins, this.image.config));
      case 'onbuild':
        return applyOnbuild(ins, cfg); // BuildKit records no history for ONBUILD
      case 'shell':
        return this.history(applyShell(ins, cfg));
      case 'cmd':
        this.cmdSet = true;
        return this.history(applyCmd(ins, cfg));
      case 'entrypoint':
        return this.history(applyEntrypoint(ins, cfg, this.cmdSet));
      case 'healthcheck':
        return this.history(applyHealthcheck(ins, cfg));
      case 'run':
        return this.run(ins);
      case 'copy':
      case 'add':
        return this.copy(ins);
    }
  }

  private async run(ins: RunInstruction): Promise<void> {
    const flags = parseRunFlags(ins.flags, (w) => this.word(w));
    const cfg = this.image.config.config;
    const argv = runArgv(ins, cfg.Shell ?? undefined);
    await this.image.files.ready();
    const user = resolveUser(cfg.User || '0', {
      passwd: await this.image.files.readText('/etc/passwd'),
      group: await this.image.files.readText('/etc/group'),
    });
    const env = runEnv(cfg.Env ?? [], this.stageArgs, user.home);
    const root = await this.buildRoot();
    const mounts = await prepareRunMounts(flags, {
      context: this.env.context, source: this.env.copySource, ...this.env.runMounts,
      workdir: cfg.WorkingDir || '/', resolve: (p) => this.image.files.resolveParents(p, true),
    });
    log.info(`Running: ${goList(argv)}`);
    let outcome;
    try {
      const script = runScript(ins);
      outcome = await root.run({
        argv, env: [...env, ...mounts.env], cwd: cfg.WorkingDir || '/', uid: user.uid, gid: user.gid, groups: user.groups, ...(script ? { files: [script] } : {}),
        mounts: mounts.mounts, noNetwork: mounts.noNetwork, locks: mounts.locks,
      }, (p) => this.image.files.get(p));
    } catch (e) {
      if (e instanceof SandboxSetupError) throw new BuildError(`RUN could not start: ${e.message}`, ins.node.startLine);
      throw e;
    } finally {
      await mounts.dispose();
    }
    if (outcome.exitCode !== 0 || !outcome.snapshot) {
      throw new BuildError(`The command ${goList(argv)} returned a non-zero code: ${outcome.exitCode}`, ins.node.startLine);
    }
    const createdBy = runHistory(argv, this.stageArgs) + ' # buildkit';
    const snapshot = outcome.snapshot;
    const sample = [...snapshot.entries.map((e) => e.path), ...snapshot.whiteouts.map((p) => `-${p}`)].slice(0, 5).join(' ');
    log.debug(`Snapshot took ${(outcome.snapshotMs ?? 0).toFixed(1)} ms: ${snapshot.entries.length} entries, ${snapshot.whiteouts.length} whiteouts${sample ? ` (${sample}${snapshot.entries.length + snapshot.whiteouts.length > 5 ? ' ...' : ''})` : ''}`);
    if (snapshot.entries.length === 0 && snapshot.whiteouts.length === 0 && snapshot.opaque.length === 0) {
      log.info('No files changed in this command, skipping snapshotting.');
      return this.history(createdBy);
    }
    if (this.squashed) {
      this.squashed.add(snapshot);
      this.image.files.applyLayer(snapshot.entries, snapshot.whiteouts, snapshot.opaque);
      return this.history(createdBy);
    }
    log.info('Taking snapshot of files...');
    const written = await this.writeLayer(snapshotLayerEntries(snapshot));
    this.lastLayer = { descriptor: written.descriptor, diffId: written.diffId, listing: listingOf(snapshot.entries, snapshot.whiteouts, snapshot.opaque) };
    this.rootLayers.push(written.descriptor);
    root.committed(written.descriptor.digest);
    this.image.files.applyLayer(snapshot.entries, snapshot.whiteouts, snapshot.opaque);
    this.image.config.history.push({ created: this.created(), created_by: createdBy });
  }

  /** The stage's root, with every layer of the image so far extracted into it. */
  private async buildRoot(): Promise<BuildRoot> {
    if (this.root) return this.root;
    const factory = await this.env.roots();
    const root = await factory.create();
    for (const v of this.volumes) root.ignoreVolume(v);
    await this.image.files.ready();
    // With the cache, the files may be known from listings while the layers are still remote. They
    // download a few at once and, on overlayfs, unpack as they arrive, side by side (each into a
    // directory of its own); the root then stacks them in order.
    // A plain directory (container isolation's "/") takes the layers in order, each as it becomes
    // readable (LayersAhead), unless the stage's base was already given to it as it downloaded.
    const store = this.env.store;
    const ahead = root.applyAhead?.(this.rootLayers, (digest) => storedLayer(store, digest));
    const downloading = unpackWhileDownloading(factory, store) ?? (ahead && applyWhileDownloading(ahead));
    const downloads = new Slots(ROOT_DOWNLOADS_AT_ONCE);
    const local = this.rootLayers.map((layer) => downloads.run(async () => {
      await this.env.ensureLocal(layer, this.image.blobSources[0], downloading);
      ahead?.stored(layer.digest);
      factory.unpack?.(storedLayer(store, layer.digest)).catch(() => undefined); // addLayer() reports a failure
    }));
    for (const ready of local) ready.catch((e: unknown) => ahead?.abandon(e)); // awaited in order below
    for (const [i, layer] of this.rootLayers.entries()) {
      await local[i];
      await root.addLayer(storedLayer(store, layer.digest));
    }
    this.root = root;
    return root;
  }

  /** Ends the stage: with --single-snapshot, writes its one layer. */
  async complete(): Promise<void> {
    if (!this.squashed || this.squashed.empty) return;
    log.info('Taking snapshot of full filesystem...');
    await this.writeLayer(snapshotLayerEntries(this.squashed.result()));
    this.image.config.history.push({ created: this.created(), created_by: 'kiln --single-snapshot: the changes of every step of the stage' });
  }

  /** Releases the stage's root (its layers stay in the blob store for later stages). */
  async finish(): Promise<void> {
    await this.root?.dispose();
    this.root = undefined;
  }

  private async workdir(path: string): Promise<void> {
    const cfg = this.image.config.config;
    const workdir = applyWorkdir(cfg, path);
    if (workdir === '/') return this.history('WORKDIR /');
    await this.image.files.ready();
    if (this.image.files.isDirectory(workdir)) {
      return this.history(`WORKDIR ${workdir}`);
    }
    // BuildKit creates a missing WORKDIR (and its parents) owned by the current USER.
    const owner = await this.identity(cfg.User || '0');
    const entries: LayerEntry[] = [];
    const parts = relative(workdir).split('/');
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (this.image.files.isDirectory(dir)) continue;
      entries.push({ path: dir, type: 'dir', mode: 0o755, uid: owner.uid, gid: owner.gid, mtime: new Date(0) });
    }
    await this.addLayer(entries, `WORKDIR ${cfg.WorkingDir}`);
  }

  private async copy(ins: CopyInstruction): Promise<void> {
    await this.image.files.ready();
    const name = ins.kind === 'copy' ? 'COPY' : 'ADD';
    const chown = ins.chown !== undefined ? this.word(ins.chown) : undefined;
    const chmod = ins.chmod !== undefined ? this.word(ins.chmod) : undefined;
    if (chmod) parseChmod(chmod); // BuildKit checks --chmod before it reads any source
    // (ADD has no --from: the parser refuses it, as BuildKit's does.)
    const from = ins.from !== undefined ? this.word(ins.from) : undefined;
    const sources = ins.sources.map((s) => this.word(s));
    const source = from !== undefined ? await this.env.copySource(from, sources) : { files: this.env.context, name: 'the build context' };
    const heredocLex = new ShellLex('\\', { skipProcessQuotes: true });
    const inline = ins.inlineSources.map((s) => ({ name: s.name, content: s.expand ? heredocLex.processWord(s.content, this.lookup) : s.content }));
    const rawDest = this.word(ins.dest);
    const workdir = this.image.config.config.WorkingDir || '/';
    const dest = posix.isAbsolute(rawDest) ? rawDest : posix.join(workdir, rawDest) + (rawDest.endsWith('/') || rawDest === '.' ? '/' : '');
    const entries = await planCopy(
      {
        instruction: name, sources, inline, dest,
        chown, identity: (spec) => this.identity(spec),
        // Docker: context files belong to 0:0; files from a stage or an image keep their owner.
        defaultOwner: from === undefined ? { uid: 0, gid: 0 } : undefined,
        chmod, link: ins.link, parents: ins.parents, excludes: ins.excludes,
        // --exclude is not expanded (BuildKit keeps it as written).
        checksum: ins.checksum !== undefined ? this.word(ins.checksum) : undefined,
        unpack: ins.unpack, keepGitDir: ins.keepGitDir || undefined,
        fixedMtime: this.env.reproducible ? new Date(0) : undefined,
        sourceName: source.name,
      },
      source.files,
      this.image.files,
    );
    // BuildKit's history: the command, --parents, --chown, --chmod, sources, destination (kiln adds --from).
    let createdBy = name;
    if (ins.parents) createdBy += ' --parents';
    if (from !== undefined) createdBy += ` --from=${from}`;
    if (chown) createdBy += ` --chown=${chown}`;
    if (chmod) createdBy += ` --chmod=${chmod}`;
    for (const s of sources) createdBy += ' ' + s;
    for (const s of ins.inlineSources) createdBy += ' <<' + s.name;
    createdBy += ` ${rawDest} # buildkit`;
    log.info('Taking snapshot of files...');
    await this.addLayer(entries, createdBy);
  }

  private async identity(spec: string): Promise<Identity> {
    await this.image.files.ready();
    return resolveChown(spec, {
      passwd: await this.image.files.readText('/etc/passwd'),
      group: await this.image.files.readText('/etc/group'),
    });
  }

  private async addLayer(entries: LayerEntry[], createdBy: string): Promise<void> {
    // With --single-snapshot the layer is still written, for a root to extract, but kept out of the image.
    const written = await this.writeLayer(entries, !this.squashed);
    this.lastLayer = { descriptor: written.descriptor, diffId: written.diffId, listing: listingOf(entries, [], []) };
    this.squashed?.add({ entries: withAncestors(entries, this.image.files), whiteouts: [], opaque: [] });
    this.rootLayers.push(written.descriptor);
    this.image.files.apply(entries);
    // A root already made for RUN gets the layer too, so later steps see the files.
    await this.root?.addLayer(storedLayer(this.env.store, written.descriptor.digest));
    if (this.squashed) return this.history(createdBy);
    this.image.config.history.push({ created: this.created(), created_by: createdBy });
  }

  private async writeLayer(entries: LayerEntry[], inImage = true): Promise<Awaited<ReturnType<typeof writeLayer>>> {
    const layerGrowing = inImage ? this.env.layerGrowing : undefined;
    let finished: ((layer: Descriptor | undefined) => void) | undefined;
    let written: Awaited<ReturnType<typeof writeLayer>>;
    try {
      written = await writeLayer(withAncestors(entries, this.image.files), this.env.store, {
        mediaType: layerMediaType(this.image.family, this.env.compression),
        compressionLevel: this.env.compressionLevel,
        ...(layerGrowing ? { growing: (growth: BlobGrowth) => { finished = layerGrowing(this.stageIndex, growth); } } : {}),
      });
    } catch (e) {
      finished?.(undefined);
      throw e;
    }
    finished?.(written.descriptor);
    if (inImage) {
      this.image.layers.push(written.descriptor);
      this.image.config.rootfs.diff_ids.push(written.diffId);
      this.env.layerWritten?.(this.stageIndex, written.descriptor);
    }
    return written;
  }

  private history(createdBy: string): void {
    this.image.config.history.push({ created: this.created(), created_by: createdBy, empty_layer: true });
  }

  private created(): string {
    return imageTime(this.env);
  }
}
