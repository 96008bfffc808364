/*
 * RUN --mount and RUN --network=none for `kiln-sandbox run`.
 *
 *   --mount bind ro|rw DST SRC   binds the host path SRC (a directory or a file) on DST
 *   --mount tmpfs SIZE DST -     an empty tmpfs on DST (SIZE in bytes, 0 = the kernel's default)
 *   --no-network                 a new network namespace with only the loopback interface, up
 *   --lock PATH                  holds an exclusive flock on PATH while the step runs (sharing=locked)
 *
 * DST is relative to the root and must already exist as kiln made it (kiln resolves symlinks in the
 * image before and creates missing targets where the snapshot never sees them): a DST whose real
 * path differs, i.e. one that goes through a symlink, is refused, so a mount can never land outside
 * the root. Mounts live in the step's private mount namespace and vanish with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sandbox-mounts.h"

#define MAX_MOUNTS 64
#define MAX_LOCKS 16

struct step_mount {
  int tmpfs;             /* 0: bind */
  int read_only;
  unsigned long long size; /* tmpfs only; 0 = default */
  const char *dst;       /* relative to the root */
  const char *src;       /* host path (bind) */
};

static struct step_mount mounts[MAX_MOUNTS];
static int nmounts;
static const char *locks[MAX_LOCKS];
static int nlocks;
static int no_network;

int mounts_option(int argc, char **argv) {
  const char *a = argv[0];
  if (!strcmp(a, "--no-network")) {
    no_network = 1;
    return 1;
  }
  if (!strcmp(a, "--lock")) {
    if (argc < 2) die("--lock needs a path");
    if (nlocks == MAX_LOCKS) die("too many --lock");
    locks[nlocks++] = argv[1];
    return 2;
  }
  if (strcmp(a, "--mount")) return 0;
  if (argc < 5) die("--mount needs TYPE OPTS DST SRC");
  if (nmounts == MAX_MOUNTS) die("too many --mount");
  struct step_mount *m = &mounts[nmounts++];
  const char *type = argv[1], *opts = argv[2];
  m->dst = argv[3];
  m->src = argv[4];
  if (m->dst[0] == '/' || strstr(m->dst, "..") || !m->dst[0]) die("bad mount target %s", m->dst);
  if (!strcmp(type, "bind")) {
    if (strcmp(opts, "ro") && strcmp(opts, "rw")) die("bad bind mount options %s", opts);
    m->read_only = !strcmp(opts, "ro");
  } else if (!strcmp(type, "tmpfs")) {
    char *end;
    m->tmpfs = 1;
    m->size = strtoull(opts, &end, 10);
    if (*end || end == opts) die("bad tmpfs size %s", opts);
  } else {
    die("unknown mount type %s", type);
  }
  return 5;
}

int mounts_wanted(void) {
  return nmounts > 0;
}

int mounts_no_network(void) {
  return no_network;
}

void mounts_take_locks(void) {
  for (int i = 0; i < nlocks; i++) {
    int fd = open(locks[i], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) die("open lock %s: %s", locks[i], strerror(errno));
    while (flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) die("lock %s: %s", locks[i], strerror(errno));
    }
    /* The descriptor stays open (close-on-exec): the lock is released when this process exits. */
  }
}

void mounts_loopback_up(int required) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) die("get flags of lo: %s", strerror(errno));
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) {
    if (required || errno != EPERM) die("bring up lo: %s", strerror(errno));
    /* A container with CAP_SYS_ADMIN but not CAP_NET_ADMIN: the step is still cut off, without loopback. */
    fputs("kiln-sandbox: warning: RUN --network=none: the loopback interface stays down (the container lacks CAP_NET_ADMIN)\n", stderr);
  }
  close(fd);
}

/* The host path of DST under root, checked to be exactly that path once symlinks are resolved. */
static void target_path(const char *root, const char *dst, char *out, size_t size) {
  char real_root[PATH_MAX], real[PATH_MAX], expected[PATH_MAX];
  if (!realpath(root[0] ? root : "/", real_root)) die("realpath %s: %s", root, strerror(errno));
  const char *sep = strcmp(real_root, "/") ? "/" : "";
  if (snprintf(out, size, "%s/%s", root, dst) >= (int)size) die("path too long: %s", dst);
  if (snprintf(expected, sizeof expected, "%s%s%s", real_root, sep, dst) >= (int)sizeof expected) die("path too long: %s", dst);
  if (!realpath(out, real)) die("mount target /%s: %s", dst, strerror(errno));
  if (strcmp(real, expected)) die("mount target /%s goes through a symlink (to %s)", dst, real + strlen(real_root));
}

void mounts_apply(const char *root) {
  for (int i = 0; i < nmounts; i++) {
    const struct step_mount *m = &mounts[i];
    char dst[PATH_MAX];
    target_path(root, m->dst, dst, sizeof dst);
    if (m->tmpfs) {
      char data[64] = "mode=1777";
      if (m->size) snprintf(data, sizeof data, "mode=1777,size=%llu", m->size);
      if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, data) != 0) die("mount tmpfs on /%s: %s", m->dst, strerror(errno));
      continue;
    }
    if (mount(m->src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind %s on /%s: %s", m->src, m->dst, strerror(errno));
    if (m->read_only && mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0) {
      die("make /%s read-only: %s", m->dst, strerror(errno));
    }
  }
}

int mounts_probe(const char *dir) {
  if (unshare(CLONE_NEWNS) != 0) return 1;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return 1;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return 1;
  int ok = mount("tmpfs", dir, "tmpfs", 0, "size=4k") == 0;
  if (ok) umount(dir);
  rmdir(dir);
  return ok ? 0 : 1;
}
