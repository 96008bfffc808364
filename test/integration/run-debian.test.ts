// RUN on a real distribution: a Debian base made with debootstrap by the tests, apt-get install
// from Debian's mirror, users and groups made by Debian's tools, and the chroot fallback without
// overlayfs; each compared with `docker build` of the same Dockerfile.
import { describe, it } from 'node:test';
import { useBaseFixture } from '../helpers/fixture.js';
import { compareWithDocker } from '../helpers/docker-compare.js';

const fx = useBaseFixture('run-debian', { image: 'debian', format: 'v2s2', dockerPull: true });

/** Files apt, dpkg and ldconfig write with the time of the build in them. */
const volatile = (path: string): boolean =>
  /^var\/(log|cache\/(debconf|ldconfig|apt))\//.test(path) || /^var\/lib\/(apt\/(extended_states|lists)|dpkg\/status-old)/.test(path)
  || /^etc\/(shadow|gshadow)-?$/.test(path);

describe('RUN matches docker build (Debian base)', () => {
  it('apt-get install', async () => {
    await compareWithDocker({
      name: 'debian-apt',
      dockerfile: [
        `FROM ${fx.base}`,
        'RUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*',
        'RUN hello > /hello.txt',
      ].join('\n') + '\n',
      volatile,
      check: 'cat /hello.txt && hello && dpkg -s hello | grep Status',
    }, fx.dir);
  });

  it('users, groups, setuid and a replaced /usr/local tree, with and without overlayfs', async () => {
    const dockerfile = [
      `FROM ${fx.base}`,
      'RUN groupadd -g 2000 devs && useradd -m -u 1234 -G devs,users tester && install -d -o tester -g devs -m 2775 /srv/shared',
      'RUN cp /bin/true /usr/local/bin/suid-true && chmod 4755 /usr/local/bin/suid-true && rm -rf /usr/local/share && ln -s /srv/shared /usr/local/share',
      'USER tester',
      'WORKDIR /srv/shared',
      'RUN id > ids && touch own && ln own own-hard && ln -s own own-soft',
      'USER root',
      'RUN rm -rf /usr/share/doc /var/lib/apt && userdel -r tester',
    ].join('\n') + '\n';
    const check = 'cat /srv/shared/ids; ls -ln /srv/shared; getent group devs; id tester || true';
    await compareWithDocker({ name: 'debian-users', dockerfile, volatile, check }, fx.dir);
    await compareWithDocker({ name: 'debian-users-walk', dockerfile, volatile, check, kilnEnv: { KILN_OVERLAY: '0' } }, fx.dir);
  });
});
