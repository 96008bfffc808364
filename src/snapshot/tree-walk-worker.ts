// A worker thread of walkTree: walks its share of directories and sends the flattened result back.
import { parentPort, workerData } from 'node:worker_threads';
import { walkDirectories } from './tree-walk.js';

const { root, dirs, ignored } = workerData as { root: string; dirs: string[]; ignored: string[] };
const result = walkDirectories(root, dirs, ignored);
parentPort!.postMessage({ paths: result.paths, numbers: Float64Array.from(result.numbers), skipped: result.skipped });
