// A small HTTP(S) file server for ADD <url> tests, on 127.0.0.1: fixed files with a Last-Modified
// header, a redirect, a 404 for anything else; files can be replaced between builds. Requests are
// counted per path, so tests can tell whether a build downloaded.
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface ServedFile {
  content: Buffer | string;
  lastModified?: Date;
}

export interface FileServer {
  /** http(s)://127.0.0.1:PORT */
  url: string;
  files: Map<string, ServedFile>;
  /** path → target, answered with 302 */
  redirects: Map<string, string>;
  hits: Map<string, number>;
  stop(): Promise<void>;
}

export async function startFileServer(tls?: { certFile: string; keyFile: string }): Promise<FileServer> {
  const files = new Map<string, ServedFile>();
  const redirects = new Map<string, string>();
  const hits = new Map<string, number>();
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const target = redirects.get(path);
    if (target) {
      res.writeHead(302, { location: target });
      return void res.end();
    }
    const file = files.get(path);
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return void res.end('not found\n');
    }
    const body = Buffer.from(file.content);
    res.writeHead(200, {
      'content-length': body.length, 'content-type': 'application/octet-stream',
      ...(file.lastModified ? { 'last-modified': file.lastModified.toUTCString() } : {}),
    });
    res.end(body);
  };
  const server = tls
    ? createHttpsServer({ cert: await readFile(tls.certFile), key: await readFile(tls.keyFile) }, handler)
    : createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, files, redirects, hits,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
