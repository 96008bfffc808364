import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  InvalidReferenceError,
  familiarString,
  isLocalRegistry,
  parseReference,
  parseRepository,
  referenceString,
  registryApiHost,
  repositoryName,
  withDigest,
  withTag,
  type ImageReference,
} from '../../src/reference/reference.js';

const sha256 = 'sha256:' + 'f'.repeat(64);
const sha256b = 'sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa';
const sha512 = 'sha512:' + 'f'.repeat(128);
const imageId = '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a';

/** Asserts that parsing fails with an InvalidReferenceError naming the input and containing `fragment`. */
function assertInvalid(input: string, fragment: string | RegExp, parse: (s: string) => unknown = parseReference): void {
  assert.throws(() => parse(input), (error: unknown) => {
    assert.ok(error instanceof InvalidReferenceError, `expected InvalidReferenceError, got ${String(error)}`);
    assert.ok(error.message.startsWith(`invalid image reference ${JSON.stringify(input)}: `), error.message);
    if (typeof fragment === 'string') assert.ok(error.message.includes(fragment), `"${error.message}" lacks "${fragment}"`);
    else assert.match(error.message, fragment);
    return true;
  });
}

describe('parseReference normalisation', () => {
  it('puts a one-part name under docker.io/library with tag latest', () => {
    assert.deepEqual(parseReference('busybox'), { registry: 'docker.io', repository: 'library/busybox', tag: 'latest' });
  });
  it('keeps a two-part Docker Hub name as is', () => {
    assert.deepEqual(parseReference('me/app:1'), { registry: 'docker.io', repository: 'me/app', tag: '1' });
  });
  it('adds library/ to docker.io/NAME but not to docker.io/ns/NAME', () => {
    assert.deepEqual(parseReference('docker.io/busybox'), { registry: 'docker.io', repository: 'library/busybox', tag: 'latest' });
    assert.deepEqual(parseReference('docker.io/me/app'), { registry: 'docker.io', repository: 'me/app', tag: 'latest' });
  });
  it('normalises index.docker.io to docker.io', () => {
    assert.deepEqual(parseReference('index.docker.io/busybox:1'), { registry: 'docker.io', repository: 'library/busybox', tag: '1' });
    assert.deepEqual(parseReference('index.docker.io/me/app'), { registry: 'docker.io', repository: 'me/app', tag: 'latest' });
  });
  it('adds no library/ on other registries', () => {
    assert.deepEqual(parseReference('ghcr.io/app'), { registry: 'ghcr.io', repository: 'app', tag: 'latest' });
  });
  it('adds no default tag when there is a digest, and keeps tag and digest together', () => {
    assert.deepEqual(parseReference(`busybox@${sha256}`), { registry: 'docker.io', repository: 'library/busybox', digest: sha256 });
    assert.deepEqual(parseReference(`busybox:1.36@${sha256}`), { registry: 'docker.io', repository: 'library/busybox', tag: '1.36', digest: sha256 });
  });
  it('has no undefined-valued keys', () => {
    assert.deepEqual(Object.keys(parseReference('busybox')), ['registry', 'repository', 'tag']);
    assert.deepEqual(Object.keys(parseReference(`busybox@${sha256}`)), ['registry', 'repository', 'digest']);
  });
});

describe('parseReference registries', () => {
  it('reads host:port', () => {
    assert.deepEqual(parseReference('registry.example.com:5000/team/app:v1'), { registry: 'registry.example.com:5000', repository: 'team/app', tag: 'v1' });
    assert.deepEqual(parseReference('test-com:8080/foo'), { registry: 'test-com:8080', repository: 'foo', tag: 'latest' });
  });
  it('treats localhost as a registry with or without a port', () => {
    assert.deepEqual(parseReference('localhost/app'), { registry: 'localhost', repository: 'app', tag: 'latest' });
    assert.deepEqual(parseReference('localhost:5000/a/b:t'), { registry: 'localhost:5000', repository: 'a/b', tag: 't' });
  });
  it('treats a lone "localhost:5000" as Docker does: repository localhost, tag 5000', () => {
    assert.deepEqual(parseReference('localhost:5000'), { registry: 'docker.io', repository: 'library/localhost', tag: '5000' });
  });
  it('reads IPv4 with and without port', () => {
    assert.deepEqual(parseReference('127.0.0.1:5000/app'), { registry: '127.0.0.1:5000', repository: 'app', tag: 'latest' });
    assert.deepEqual(parseReference('192.168.1.1/repo'), { registry: '192.168.1.1', repository: 'repo', tag: 'latest' });
  });
  it('reads bracketed IPv6 with and without port', () => {
    assert.deepEqual(parseReference('[::1]:5000/app:t'), { registry: '[::1]:5000', repository: 'app', tag: 't' });
    assert.deepEqual(parseReference('[2001:db8::1]/repo'), { registry: '[2001:db8::1]', repository: 'repo', tag: 'latest' });
    assert.deepEqual(parseReference(`[2001:db8::1]:5000/repo:tag@${sha256}`), { registry: '[2001:db8::1]:5000', repository: 'repo', tag: 'tag', digest: sha256 });
  });
  it('keeps multi-component paths', () => {
    assert.deepEqual(parseReference('gitlab.example.com/group/sub/app:1'), { registry: 'gitlab.example.com', repository: 'group/sub/app', tag: '1' });
  });
  it('accepts uppercase in the registry but not in the repository', () => {
    assert.deepEqual(parseReference('Registry.Example.COM:5000/app'), { registry: 'Registry.Example.COM:5000', repository: 'app', tag: 'latest' });
    assertInvalid('registry.example.com/MyApp', 'repository name must be lowercase');
    assertInvalid('registry.example.com/MyApp', '"myapp"');
  });
  it('allows uppercase in the tag', () => {
    assert.equal(parseReference('lowercase:Uppercase').tag, 'Uppercase');
  });
});

describe('parseReference errors', () => {
  it('rejects empty input', () => assertInvalid('', 'it is empty'));
  it('rejects a trailing ":"', () => {
    assertInvalid('busybox:', 'it ends with ":"');
    assertInvalid('localhost:5000/app:', 'it ends with ":"');
  });
  it('rejects an empty tag before "@"', () => assertInvalid(`busybox:@${sha256}`, 'the tag between ":" and "@" is empty'));
  it('rejects a trailing "@"', () => assertInvalid('busybox@', 'it ends with "@"'));
  it('rejects more than one "@"', () => assertInvalid(`busybox@${sha256}@${sha256}`, 'more than one "@"'));
  it('rejects whitespace', () => {
    assertInvalid('busy box', 'contains whitespace');
    assertInvalid(' busybox', 'contains whitespace');
    assertInvalid('busybox\n', 'contains whitespace');
  });
  it('rejects a scheme and says to remove it', () => {
    assertInvalid('https://ghcr.io/me/app', 'remove the scheme "https://"');
    assertInvalid('https://ghcr.io/me/app', '"ghcr.io/me/app"');
    assertInvalid('docker://busybox', 'remove the scheme');
    assertInvalid('oci-archive://x', 'remove the scheme');
  });
  it('rejects a name over 255 characters, counting the registry', () => {
    assert.equal(repositoryName(parseReference('r.io/' + 'a'.repeat(250))).length, 255);
    assertInvalid('r.io/' + 'a'.repeat(251), 'is 256 characters; it must be at most 255');
    // "docker.io/library/" is 18 characters of the 255.
    assert.ok(parseReference('a'.repeat(237)));
    assertInvalid('a'.repeat(238), 'must be at most 255');
  });
  it('rejects a missing name', () => {
    assertInvalid(':justtag', 'no repository name before ":"');
    assertInvalid(`@${sha256}`, 'no repository name before "@"');
  });
  it('rejects a registry without a repository path', () => {
    assertInvalid('ghcr.io/', 'no repository path after the registry');
    assertInvalid('[::1]:5000', 'IPv6 registry needs a repository path');
  });
  it('rejects an invalid registry host', () => {
    assertInvalid('foo_bar.com/app', 'registry "foo_bar.com" is not valid');
    assertInvalid('-docker.io/docker/docker', 'registry "-docker.io" is not valid');
    assertInvalid('[fe80::1%eth0]:5000/repo', 'is not valid');
    assertInvalid('host:port/app', 'registry "host:port" is not valid');
  });
  it('rejects invalid path components', () => {
    assertInvalid('aa/asdf$$^/aa', 'path component "asdf$$^" is not valid');
    assertInvalid('docker///docker', 'empty component');
    assertInvalid('busybox:tag:other', 'component "busybox:tag" contains ":"');
  });
  it('rejects invalid tags', () => {
    assertInvalid('busybox:-1', 'tag "-1" is not valid');
    assertInvalid('busybox:.x', 'tag ".x" is not valid');
    assertInvalid('busybox:a+b', 'tag "a+b" is not valid');
    assert.equal(parseReference('busybox:' + 'a'.repeat(128)).tag?.length, 128);
    assertInvalid('busybox:' + 'a'.repeat(129), 'a tag is at most 128');
  });
  it('rejects invalid digests', () => {
    assertInvalid('busybox@sha256:' + 'f'.repeat(34), 'must have exactly 64 lowercase hex digits');
    assertInvalid('busybox@sha256:' + 'F'.repeat(64), 'must have exactly 64 lowercase hex digits');
    assertInvalid('busybox@sha256:' + 'f'.repeat(65), 'must have exactly 64 lowercase hex digits');
    assertInvalid('busybox@sha512:' + 'f'.repeat(64), 'must have exactly 128 lowercase hex digits');
    assertInvalid('busybox@' + 'f'.repeat(64), 'expected "algorithm:hex"');
    assertInvalid('busybox@md5:abc', 'expected "algorithm:hex"');
    assertInvalid('busybox@1sha:' + 'f'.repeat(32), 'expected "algorithm:hex"');
  });
  it('accepts other digest algorithms that fit the grammar', () => {
    assert.equal(parseReference('busybox@sha256+b64u.x:' + 'A'.repeat(32)).digest, 'sha256+b64u.x:' + 'A'.repeat(32));
  });
  it('rejects a bare 64-hex image ID but accepts it with a registry', () => {
    assertInvalid(imageId, 'image ID');
    assert.deepEqual(parseReference(`docker.io/${imageId}`), { registry: 'docker.io', repository: `library/${imageId}`, tag: 'latest' });
  });
  it('throws errors that are InvalidReferenceError and Error', () => {
    assert.throws(() => parseReference('UPPER'), (e: unknown) => e instanceof InvalidReferenceError && e instanceof Error && e.name === 'InvalidReferenceError');
  });
});

// Expectations drawn from distribution/reference's parse and normalise tests, restated for
// parseReference: what each input normalises to, or why it is refused.
const validTable: [input: string, expected: string][] = [
  ['test_com', 'docker.io/library/test_com:latest'],
  ['test.com:tag', 'docker.io/library/test.com:tag'],
  ['test.com:5000', 'docker.io/library/test.com:5000'],
  ['test.com/repo:tag', 'test.com/repo:tag'],
  ['test:5000/repo', 'test:5000/repo:latest'],
  ['test:5000/repo:tag', 'test:5000/repo:tag'],
  [`test:5000/repo@${sha256}`, `test:5000/repo@${sha256}`],
  [`test:5000/repo:tag@${sha256}`, `test:5000/repo:tag@${sha256}`],
  ['lowercase:Uppercase', 'docker.io/library/lowercase:Uppercase'],
  ['sub-dom1.foo.com/bar/baz/quux', 'sub-dom1.foo.com/bar/baz/quux:latest'],
  ['sub-dom1.foo.com/bar/baz/quux:some-long-tag', 'sub-dom1.foo.com/bar/baz/quux:some-long-tag'],
  ['b.gcr.io/test.example.com/my-app:test.example.com', 'b.gcr.io/test.example.com/my-app:test.example.com'],
  ['xn--n3h.com/myimage:xn--n3h.com', 'xn--n3h.com/myimage:xn--n3h.com'],
  [`xn--7o8h.com/myimage:xn--7o8h.com@${sha512}`, `xn--7o8h.com/myimage:xn--7o8h.com@${sha512}`],
  ['foo_bar.com:8080', 'docker.io/library/foo_bar.com:8080'],
  ['foo/foo_bar.com:8080', 'docker.io/foo/foo_bar.com:8080'],
  ['192.168.1.1', 'docker.io/library/192.168.1.1:latest'],
  ['192.168.1.1:5000', 'docker.io/library/192.168.1.1:5000'],
  ['192.168.1.1:5000/repo:5050', '192.168.1.1:5000/repo:5050'],
  ['[2001:db8:1:2:3:4:5:6]/repo:tag', '[2001:db8:1:2:3:4:5:6]/repo:tag'],
  ['[2001:db8::]:5000/repo', '[2001:db8::]:5000/repo:latest'],
  ['[fc00::1]:5000/docker/docker', '[fc00::1]:5000/docker/docker:latest'],
  ['docker/docker', 'docker.io/docker/docker:latest'],
  ['library/debian', 'docker.io/library/debian:latest'],
  ['index.docker.io/debian', 'docker.io/library/debian:latest'],
  ['docker.io/library/foo/bar', 'docker.io/library/foo/bar:latest'],
  ['127.0.0.1:5000/library/debian', '127.0.0.1:5000/library/debian:latest'],
  ['thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev', 'docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest'],
  ['docker---rules/docker', 'docker.io/docker---rules/docker:latest'],
  ['dock__er/docker', 'docker.io/dock__er/docker:latest'],
  ['d/docker', 'docker.io/d/docker:latest'],
  ['jess/t', 'docker.io/jess/t:latest'],
  [`busybox:latest@${sha256b}`, `docker.io/library/busybox:latest@${sha256b}`],
  ['ubuntu-12.04-base', 'docker.io/library/ubuntu-12.04-base:latest'],
];

const invalidTable: [input: string, fragment: string][] = [
  ['', 'it is empty'],
  [':justtag', 'no repository name'],
  [`@${sha256}`, 'no repository name'],
  ['repo@sha256:' + 'f'.repeat(34), 'exactly 64 lowercase hex digits'],
  ['Uppercase:tag', 'repository name must be lowercase'],
  ['test:5000/Uppercase/lowercase:tag', 'repository name must be lowercase'],
  ['docker/Docker', 'repository name must be lowercase'],
  ['docker.io/docker/Docker', 'repository name must be lowercase'],
  // Docker takes an uppercase first component for a registry; kiln keeps the ".", ":" or localhost rule.
  ['Docker/docker', 'repository name must be lowercase'],
  ['a/'.repeat(128) + 'a:tag', 'must be at most 255'],
  ['aa/asdf$$^/aa', 'is not valid'],
  ['[2001:db8::1]', 'IPv6 registry needs a repository path'],
  ['[2001:db8::1]:5000', 'IPv6 registry needs a repository path'],
  ['[2001:db8::1]:tag', 'IPv6 registry needs a repository path'],
  ['[fe80::1%eth0]:5000/repo', 'registry "[fe80::1%eth0]:5000" is not valid'],
  ['[fe80::1%@invalidzone]:5000/repo', 'digest'],
  ['[2001:db8:3:4::192.0.2.33]:5000/debian', 'is not valid'],
  ['fc00::1:5000/debian', 'registry "fc00::1:5000" is not valid'],
  ['https://github.com/docker/docker', 'remove the scheme'],
  ['-docker', 'path component "-docker" is not valid'],
  ['-docker/docker', 'path component "-docker" is not valid'],
  ['docker-/docker', 'path component "docker-" is not valid'],
  ['-docker.io/docker/docker', 'registry "-docker.io" is not valid'],
  ['docker///docker', 'empty component'],
  ['docker.io/docker///docker', 'empty component'],
  ['docker/', 'empty component'],
  ['____/____', 'path component "____" is not valid'],
  ['_docker/_docker', 'path component "_docker" is not valid'],
  // A "." in the first component makes it a registry host, which these are not.
  ['dock..er/docker', 'registry "dock..er" is not valid'],
  ['dock_.er/docker', 'registry "dock_.er" is not valid'],
  ['dock-.er/docker', 'registry "dock-.er" is not valid'],
  [imageId, 'image ID'],
  [Array(4).fill('this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255').join('_') + '/docker', 'must be at most 255'],
];

describe('reference table', () => {
  for (const [input, expected] of validTable) {
    it(`accepts ${input}`, () => {
      const ref = parseReference(input);
      assert.equal(referenceString(ref), expected);
      assert.deepEqual(parseReference(referenceString(ref)), ref, 'round trip through referenceString');
      assert.deepEqual(parseReference(familiarString(ref)), ref, 'round trip through familiarString');
    });
  }
  for (const [input, fragment] of invalidTable) {
    it(`rejects ${JSON.stringify(input)}`, () => assertInvalid(input, fragment));
  }
});

describe('parseRepository', () => {
  it('normalises like parseReference without a tag', () => {
    assert.deepEqual(parseRepository('busybox'), { registry: 'docker.io', repository: 'library/busybox' });
    assert.deepEqual(parseRepository('index.docker.io/me/cache'), { registry: 'docker.io', repository: 'me/cache' });
    assert.deepEqual(parseRepository('localhost:5000/cache'), { registry: 'localhost:5000', repository: 'cache' });
  });
  it('rejects a tag or digest', () => {
    assertInvalid('ghcr.io/me/cache:v1', 'without a tag or digest; remove ":v1"', parseRepository);
    assertInvalid(`ghcr.io/me/cache@${sha256}`, `remove "@${sha256}"`, parseRepository);
  });
  it('suggests a repository path for a bare registry', () => {
    assertInvalid('localhost:5000', 'add a repository path: "localhost:5000/cache"', parseRepository);
  });
  it('rejects what parseReference rejects', () => {
    assertInvalid('', 'it is empty', parseRepository);
    assertInvalid('ghcr.io/Me/cache', 'repository name must be lowercase', parseRepository);
  });
});

describe('string forms', () => {
  const cases: [input: string, full: string, familiar: string][] = [
    ['busybox', 'docker.io/library/busybox:latest', 'busybox:latest'],
    ['me/app:1', 'docker.io/me/app:1', 'me/app:1'],
    ['docker.io/library/a/b', 'docker.io/library/a/b:latest', 'library/a/b:latest'],
    ['ghcr.io/x/y:z', 'ghcr.io/x/y:z', 'ghcr.io/x/y:z'],
    ['ghcr.io/library/y', 'ghcr.io/library/y:latest', 'ghcr.io/library/y:latest'],
    [`reg:5000/a/b@${sha256}`, `reg:5000/a/b@${sha256}`, `reg:5000/a/b@${sha256}`],
    [`busybox:1@${sha256}`, `docker.io/library/busybox:1@${sha256}`, `busybox:1@${sha256}`],
    ['[::1]:5000/app', '[::1]:5000/app:latest', '[::1]:5000/app:latest'],
  ];
  for (const [input, full, familiar] of cases) {
    it(`formats ${input}`, () => {
      const ref = parseReference(input);
      assert.equal(referenceString(ref), full);
      assert.equal(familiarString(ref), familiar);
      assert.deepEqual(parseReference(full), ref);
      assert.deepEqual(parseReference(familiar), ref);
    });
  }
  it('repositoryName drops tag and digest', () => {
    assert.equal(repositoryName(parseReference(`busybox:1@${sha256}`)), 'docker.io/library/busybox');
    assert.equal(repositoryName({ registry: 'ghcr.io', repository: 'a/b' }), 'ghcr.io/a/b');
  });
  it('referenceString of a reference without tag or digest is the repository name', () => {
    const bare: ImageReference = { registry: 'ghcr.io', repository: 'a' };
    assert.equal(referenceString(bare), 'ghcr.io/a');
  });
});

describe('withTag and withDigest', () => {
  const busybox = parseReference('busybox:1.36');
  it('withTag replaces the tag', () => {
    const ref = withTag(busybox, 'musl');
    assert.deepEqual(ref, { registry: 'docker.io', repository: 'library/busybox', tag: 'musl' });
    assert.equal(familiarString(ref), 'busybox:musl');
    assert.deepEqual(busybox.tag, '1.36', 'the original is unchanged');
  });
  it('withDigest pins to the digest and drops the tag', () => {
    const ref = withDigest(busybox, sha256);
    assert.deepEqual(ref, { registry: 'docker.io', repository: 'library/busybox', digest: sha256 });
    assert.equal(referenceString(ref), `docker.io/library/busybox@${sha256}`);
    assert.deepEqual(parseReference(referenceString(ref)), ref);
  });
  it('withTag keeps a digest, so withTag(withDigest(…)) gives name:tag@digest', () => {
    const ref = withTag(withDigest(busybox, sha256), '1.36');
    assert.equal(referenceString(ref), `docker.io/library/busybox:1.36@${sha256}`);
    assert.deepEqual(parseReference(referenceString(ref)), ref);
  });
  it('withDigest replaces an existing digest', () => {
    const ref = withDigest(parseReference(`ghcr.io/a@${sha256}`), sha256b);
    assert.equal(ref.digest, sha256b);
  });
  it('rejects an invalid tag or digest', () => {
    assertInvalid('docker.io/library/busybox:-x', 'tag "-x" is not valid', (t) => withTag(busybox, t.slice(t.lastIndexOf(':') + 1)));
    assertInvalid('docker.io/library/busybox@sha256:abc', 'exactly 64 lowercase hex digits', (d) => withDigest(busybox, d.slice(d.indexOf('@') + 1)));
    assert.throws(() => withTag(busybox, ''), InvalidReferenceError);
    assert.throws(() => withDigest(busybox, ''), InvalidReferenceError);
  });
});

describe('registryApiHost', () => {
  it('maps Docker Hub to registry-1.docker.io and leaves others alone', () => {
    assert.equal(registryApiHost('docker.io'), 'registry-1.docker.io');
    assert.equal(registryApiHost('index.docker.io'), 'registry-1.docker.io');
    assert.equal(registryApiHost(parseReference('busybox').registry), 'registry-1.docker.io');
    assert.equal(registryApiHost('ghcr.io'), 'ghcr.io');
    assert.equal(registryApiHost('localhost:5000'), 'localhost:5000');
    assert.equal(registryApiHost('[::1]:5000'), '[::1]:5000');
  });
});

describe('isLocalRegistry', () => {
  const local = ['localhost', 'localhost:5000', 'LOCALHOST:5000', 'registry.localhost', 'registry.localhost:5000', '127.0.0.1', '127.0.0.1:5000', '127.1.2.3:80', '[::1]', '[::1]:5000', '::1', '[0:0:0:0:0:0:0:1]:5000'];
  const remote = ['docker.io', 'ghcr.io', 'localhost.example.com', 'mylocalhost:5000', '10.0.0.1:5000', '192.168.1.1', '128.0.0.1:5000', '[::2]:5000', '[2001:db8::1]'];
  for (const registry of local) it(`${registry} is local`, () => assert.equal(isLocalRegistry(registry), true));
  for (const registry of remote) it(`${registry} is not local`, () => assert.equal(isLocalRegistry(registry), false));
});
