// The registry suite's second row: a small image copied between two TLS registries that sit behind
// a proxy adding a delay each way, as a CI runner sees a registry in another building. On loopback
// a new connection or round trip is nearly free; here each costs what it does in CI, so this row
// shows how many of them a tool makes (kiln against `skopeo copy`, same registries, same run).
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { kiln, mustRun } from '../test/helpers/exec.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { median, timed } from './common.js';

/** One-way delay: 10 ms each way is a 20 ms round trip. */
const DELAY_MS = 10;
const LAYERS = 3;
const LAYER_BYTES = 200_000;

export interface DelayingProxy { host: string; connections: number; close(): Promise<void> }

/** A TCP proxy on 127.0.0.1 that holds every chunk DELAY_MS before passing it on, in order. */
export async function delayingProxy(target: string): Promise<DelayingProxy> {
  const [targetHost, targetPort] = target.split(':') as [string, string];
  const sockets = new Set<Socket>();
  const relay = (from: Socket, to: Socket): void => {
    from.on('data', (chunk) => setTimeout(() => to.write(chunk), DELAY_MS));
    from.on('end', () => setTimeout(() => to.end(), DELAY_MS));
    from.on('error', () => to.destroy());
    from.on('close', () => setTimeout(() => to.destroy(), DELAY_MS));
  };
  const proxy: DelayingProxy = { host: '', connections: 0, close: async () => undefined };
  const server = createServer((client) => {
    proxy.connections++;
    const upstream = connect(Number(targetPort), targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  proxy.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  };
  return proxy;
}

interface Measured { tool: string; seconds: number; connections: number }

export interface LatencyRow {
  workload: string; kilnMedianSeconds: number; skopeoMedianSeconds: number; ratio: number;
  kilnConnections: number; skopeoConnections: number; results: Measured[];
}

export async function tlsLatencyRow(dir: string, rounds: number): Promise<LatencyRow> {
  const source = await startRegistry('tls');
  const sourceProxy = await delayingProxy(source.host);
  const targets: { registry: TestRegistry; proxy: DelayingProxy }[] = [];
  try {
    const ctx = join(dir, 'latency-base');
    await mkdir(ctx, { recursive: true });
    const lines = ['FROM scratch'];
    for (let i = 0; i < LAYERS; i++) {
      await writeFile(join(ctx, `f${i}`), randomBytes(LAYER_BYTES));
      lines.push(`COPY f${i} /f${i}`);
    }
    await writeFile(join(ctx, 'Dockerfile'), lines.join('\n') + '\n');
    const image = `${sourceProxy.host}/bench/small:1`;
    const trustSource = ['--registry-certificate', `${sourceProxy.host}=${source.caFile!}`];
    const built = await kiln(['executor', '-c', ctx, '-d', image, ...trustSource, '-v', 'warn'], { timeoutMs: 120_000 });
    if (built.code !== 0) throw new Error(`building the latency image failed: ${built.stderr}`);

    const results: Measured[] = [];
    for (let round = 0; round < rounds; round++) {
      const copyCtx = join(dir, `latency-${round}`);
      await mkdir(copyCtx, { recursive: true });
      await writeFile(join(copyCtx, 'Dockerfile'), `FROM ${image}\nENV ROUND=${round}\n`);
      const copies = {
        kiln: async (target: TestRegistry, proxy: DelayingProxy) => {
          const r = await kiln(['executor', '-c', copyCtx, '-d', `${proxy.host}/kiln/r:1`, ...trustSource,
            '--registry-certificate', `${proxy.host}=${target.caFile!}`, '-v', 'warn'], { timeoutMs: 120_000 });
          if (r.code !== 0) throw new Error(`kiln failed: ${r.stderr}`);
        },
        'skopeo copy': async (target: TestRegistry, proxy: DelayingProxy) => {
          await mustRun('skopeo', ['copy', '-q', ...source.skopeoArgs('src'), ...target.skopeoArgs('dest'),
            `docker://${image}`, `docker://${proxy.host}/skopeo/r:1`], { timeoutMs: 120_000 });
        },
      };
      const order = round % 2 === 0 ? (['kiln', 'skopeo copy'] as const) : (['skopeo copy', 'kiln'] as const);
      for (const tool of order) {
        const registry = await startRegistry('tls');
        const proxy = await delayingProxy(registry.host);
        targets.push({ registry, proxy });
        const before = sourceProxy.connections;
        const seconds = await timed(() => copies[tool](registry, proxy));
        results.push({ tool, seconds, connections: sourceProxy.connections - before + proxy.connections });
      }
    }
    const of = (tool: string, key: 'seconds' | 'connections'): number => median(results.filter((m) => m.tool === tool).map((m) => m[key]));
    return {
      workload: `pull + push of a ${LAYERS}-layer ${(LAYERS * LAYER_BYTES / 1e6).toFixed(1)} MB image between two TLS registries, ${2 * DELAY_MS} ms round trips`,
      kilnMedianSeconds: of('kiln', 'seconds'), skopeoMedianSeconds: of('skopeo copy', 'seconds'),
      ratio: of('kiln', 'seconds') / of('skopeo copy', 'seconds'),
      kilnConnections: of('kiln', 'connections'), skopeoConnections: of('skopeo copy', 'connections'), results,
    };
  } finally {
    await Promise.all(targets.map(async (t) => { await t.proxy.close(); await t.registry.stop(); }));
    await sourceProxy.close();
    await source.stop();
  }
}
