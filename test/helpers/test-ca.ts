// A throwaway certificate authority for tests, made with the openssl CLI: a CA certificate and
// server (or token-signing) certificates issued by it, all RSA so the same keys can sign RS256 JWTs.
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mustRun } from './exec.js';

export interface TestCa {
  /** The CA's own directory (key, certificate and everything it issued); the caller removes it. */
  dir: string;
  /** PEM of the CA certificate: what clients must trust. */
  caFile: string;
  /** Issues a certificate for the given DNS names and IP addresses (as subjectAltName; Go ignores the CN). */
  issue(hostnames: string[], ips: string[]): Promise<{ certFile: string; keyFile: string }>;
}

const OPENSSL_TIMEOUT_MS = 30_000;
const VALID_DAYS = '7';

/** Creates a CA in a new temp dir under parentDir (default: the OS temp dir). */
export async function createTestCa(parentDir: string = tmpdir()): Promise<TestCa> {
  const dir = await mkdtemp(join(parentDir, 'kiln-test-ca-'));
  const caFile = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  await mustRun('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', VALID_DAYS,
    '-keyout', caKey, '-out', caFile, '-subj', '/CN=kiln test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    '-addext', 'subjectKeyIdentifier=hash',
  ], { timeoutMs: OPENSSL_TIMEOUT_MS });

  let issued = 0;
  async function issue(hostnames: string[], ips: string[]): Promise<{ certFile: string; keyFile: string }> {
    const names = [...hostnames.map((h) => `DNS:${h}`), ...ips.map((ip) => `IP:${ip}`)];
    if (names.length === 0) throw new Error('a certificate needs at least one hostname or IP');
    const base = join(dir, `issued-${++issued}`);
    const keyFile = `${base}.key`;
    const certFile = `${base}.crt`;
    const csrFile = `${base}.csr`;
    const extFile = `${base}.ext`;
    await writeFile(extFile, [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${names.join(',')}`,
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid,issuer',
    ].join('\n') + '\n');
    await mustRun('openssl', [
      'req', '-new', '-newkey', 'rsa:2048', '-nodes', '-sha256',
      '-keyout', keyFile, '-out', csrFile, '-subj', `/CN=${hostnames[0] ?? ips[0]}`,
    ], { timeoutMs: OPENSSL_TIMEOUT_MS });
    // A random positive serial rather than a serial file, so concurrent issues cannot collide.
    const serial = '0x1' + randomBytes(15).toString('hex');
    await mustRun('openssl', [
      'x509', '-req', '-sha256', '-days', VALID_DAYS, '-in', csrFile, '-CA', caFile, '-CAkey', caKey,
      '-set_serial', serial, '-extfile', extFile, '-out', certFile,
    ], { timeoutMs: OPENSSL_TIMEOUT_MS });
    return { certFile, keyFile };
  }

  return { dir, caFile, issue };
}
