// Registry answers that are failures, in words: the distribution error list of a body, the status,
// and what the user can do about it.
import { RegistryError, type RegistryPurpose } from './types.js';

export const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const MAX_ERROR_BODY = 64 * 1024;

/** Strips the query: upload URLs carry opaque state and redirect URLs carry signatures. */
export function displayPath(path: string): string {
  return path.replace(/\?.*$/, '');
}

/** The distribution error list of a body (`{"errors":[{"code","message"}]}`), or a short plain-text body. */
function describeErrorBody(text: string): { codes: string[]; summary: string } {
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] };
    if (Array.isArray(parsed.errors)) {
      const items = parsed.errors.map((e) => [e.code, e.message].filter((v) => typeof v === 'string' && v !== '').join(': '));
      return { codes: parsed.errors.map((e) => String(e.code ?? '')), summary: items.filter(Boolean).join('; ') };
    }
  } catch {
    // not JSON: fall through
  }
  const trimmed = text.trim();
  return { codes: [], summary: trimmed.length > 0 && trimmed.length <= 200 && !trimmed.startsWith('<') ? trimmed : '' };
}

function statusAdvice(status: number, codes: string[], path: string, registry: string, purpose: RegistryPurpose | undefined): string {
  const kind = /\/manifests\//.test(path) ? 'manifest' : /\/blobs\/uploads\//.test(path) ? 'upload' : /\/blobs\//.test(path) ? 'blob' : 'other';
  if (status === 401) return `authentication failed: check the credentials kiln has for ${registry} (DOCKER_CONFIG's config.json, a credential helper, or CI_REGISTRY_USER/CI_REGISTRY_PASSWORD)`;
  if (status === 403) return `access denied: check that these credentials may ${purpose === 'pull' ? 'pull from' : 'push to'} this repository and that the repository path is right`;
  if (status === 404) {
    if (codes.includes('NAME_UNKNOWN')) return `the repository does not exist on ${registry}: check the repository path`;
    if (kind === 'manifest') return 'image not found: check the name and tag';
    if (kind === 'upload') return 'the upload session expired or was lost; a new push starts another';
    if (kind === 'blob') return 'the blob is not in this repository';
    return 'not found';
  }
  if (status === 405) return 'the registry does not allow this operation here (read-only, or a pull-through mirror?)';
  if (status === 413) return 'too large: the registry or a proxy in front of it limits request size (e.g. nginx client_max_body_size)';
  if (status === 429) return 'too many requests: the registry is rate limiting (Docker Hub pull limits: log in or use --registry-mirror); retrying later may help';
  if (status >= 500) return 'a server error on the registry side; retrying may help';
  return '';
}

/** A RegistryError for an unexpected response: status, the registry's error codes and messages, and advice. */
export async function responseError(
  registry: string, purpose: RegistryPurpose | undefined, operation: string, path: string, status: number, body: NodeJS.ReadableStream,
): Promise<RegistryError> {
  const text = await readText(body, MAX_ERROR_BODY).catch(() => '');
  const { codes, summary } = describeErrorBody(text);
  const advice = statusAdvice(status, codes, path, registry, purpose);
  const message = `${operation} on ${registry} failed: HTTP ${status}${summary ? ` (${summary})` : ''}${advice ? `; ${advice}` : ''}`;
  return new RegistryError(message, registry, status, RETRYABLE_STATUS.has(status));
}

/** Reads up to `limit` bytes of a body as text, discarding the rest. */
export async function readText(body: NodeJS.ReadableStream, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    if (size < limit) chunks.push(buf.subarray(0, limit - size));
    size += buf.length;
    if (size >= limit) break;
  }
  return Buffer.concat(chunks).toString('utf8');
}
