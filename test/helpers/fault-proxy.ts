// A reverse proxy on 127.0.0.1 that breaks a fixed share of the requests passing through it, to
// test kiln's retries and that a failed push never leaves a tag pointing at a missing blob.
// Faults are deterministic (every Nth request), so a failing run can be reproduced. It can also hold
// some requests back until another arrives, to show that kiln does not wait for their answers.
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FaultProxy {
  host: string;
  /** Requests seen, and how each was answered. */
  log: { method: string; url: string; fault?: 'status-503' | 'reset' | 'refused-manifest'; held?: 'until-seen' | 'timed-out' }[];
  stop(): Promise<void>;
}

export interface FaultPlan {
  /** Break one request in every `every` (0: never). Alternates a 503 with a connection reset mid-response. */
  every: number;
  /** Answer every manifest PUT with 500 (a push that can never finish). */
  refuseManifestPuts?: boolean;
  /** Hold requests whose URL matches `held` until one matching `until` arrives, or `timeoutMs` passes (the log says which). */
  hold?: { held: RegExp; until: RegExp; timeoutMs: number };
}

export async function startFaultProxy(upstream: string, plan: FaultPlan): Promise<FaultProxy> {
  const log: FaultProxy['log'] = [];
  const sockets = new Set<Socket>();
  let count = 0;
  let faults = 0;
  let seen: () => void;
  const awaited = new Promise<void>((resolve) => { seen = resolve; });
  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const entry: FaultProxy['log'][number] = { method: req.method ?? 'GET', url: req.url ?? '/' };
    log.push(entry);
    if (plan.hold?.until.test(entry.url)) seen();
    if (plan.hold?.held.test(entry.url)) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timed-out'>((resolve) => { timer = setTimeout(() => resolve('timed-out'), plan.hold!.timeoutMs); });
      entry.held = await Promise.race([awaited.then(() => 'until-seen' as const), timedOut]);
      clearTimeout(timer);
    }
    count++;
    if (plan.refuseManifestPuts && req.method === 'PUT' && /\/manifests\//.test(req.url ?? '')) {
      entry.fault = 'refused-manifest';
      req.resume();
      res.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}');
      return;
    }
    const breakThis = plan.every > 0 && count % plan.every === 0;
    if (breakThis && faults++ % 2 === 0) {
      entry.fault = 'status-503';
      req.resume();
      res.writeHead(503).end();
      return;
    }
    const [host, port] = upstream.split(':');
    const forward = httpRequest({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      if (breakThis) {
        entry.fault = 'reset';
        up.once('data', (chunk: Buffer) => {
          res.write(chunk.subarray(0, Math.ceil(chunk.length / 2)));
          res.socket?.destroy();
          up.destroy();
        });
        up.once('end', () => res.socket?.destroy());
        return;
      }
      up.pipe(res);
    });
    forward.on('error', () => res.socket?.destroy());
    req.pipe(forward);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    log,
    stop: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
