/*
 * `kiln-sandbox scan ROOT [--ignore PATH]... [--threads N] [--details]`: the lstat walk of a walk
 * snapshot or of an overlay upper directory (src/snapshot/native-scan.ts reads it), in C because
 * Node.js's per-call overhead costs more than the system calls on a 100k-file root, and in up to
 * SCAN_THREADS threads because the system calls alone are still about 3 us per entry.
 * The output is blocks laid out as the reader's arrays are, so that it copies them whole instead of
 * parsing entry by entry; all in host byte order:
 *   u32 count (1..SCAN_BLOCK_ENTRIES), u32 path bytes in the block,
 *   count x 9 doubles: S_IFMT bits, permission bits, uid, gid, size, mtime ms, ctime ms, inode, links
 *   count x u32: FNV-1a hash of each path (as hashBytes in native-scan.ts computes it)
 *   count x u32: where each path ends, counted in path bytes since the start of the output
 *   the paths, relative to ROOT ("a/b"), back to back
 * and last an end block: u32 0, u32 0, u32 count of names skipped for not being UTF-8.
 * --details adds 2 doubles per entry after the 9: the device number (st_rdev, for overlayfs's whiteout
 * devices) and 1 when the entry has extended attributes (llistxattr), else 0.
 * The doubles are those of Node.js's lstat (a time is sec * 1000 + nsec / 1e6 in doubles; sec * 1000
 * is exact, so a fused multiply-add rounds the same), so indexes from either walker compare exactly.
 * Symlinks are never followed; ignored paths (exact root-relative matches: what is below one is never
 * reached) are neither recorded nor entered; entries that vanish mid-walk are skipped. Names that
 * are not valid UTF-8 are skipped with what is below them: kiln's paths are strings, which cannot
 * name them (Node.js's walk skips them too). Entry order is whatever the threads make of it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>
#include "sandbox-scan.h"

#define SCAN_PATH_MAX 65534
#define SCAN_THREADS 4
#define SCAN_BLOCK_ENTRIES 4096
#define SCAN_BLOCK_BYTES (1 << 18)
#define SCAN_FIELDS 9
#define SCAN_DETAIL_FIELDS 11

/* One thread's walk: its current path and the block it fills. */
struct scan {
  char path[SCAN_PATH_MAX + NAME_MAX + 2];
  uint32_t count, nbytes;
  double numbers[SCAN_BLOCK_ENTRIES * SCAN_DETAIL_FIELDS];
  uint32_t hashes[SCAN_BLOCK_ENTRIES];
  uint32_t ends[SCAN_BLOCK_ENTRIES];
  unsigned char bytes[SCAN_BLOCK_BYTES];
  unsigned char out[8 + SCAN_BLOCK_ENTRIES * (SCAN_DETAIL_FIELDS * 8 + 8) + SCAN_BLOCK_BYTES];
  unsigned long skipped;
  /* --details: the root, a slash, then the entry's path (llistxattr takes a whole path). */
  char *full;
};

/* A directory handed to an idle thread: its open descriptor and its path. */
struct scan_job {
  int fd;
  size_t len;
  char *path;
};

static struct {
  pthread_mutex_t lock, out_lock;
  pthread_cond_t wake;
  struct scan_job jobs[SCAN_THREADS];
  int njobs, idle, nthreads;
  char **ignored;
  size_t *ignored_len;
  int nignored;
  int fields; /* SCAN_FIELDS, or SCAN_DETAIL_FIELDS with --details */
  const char *root;
  size_t root_len;
  uint64_t written_bytes; /* path bytes of the blocks written so far (under out_lock) */
} scan_shared = {.lock = PTHREAD_MUTEX_INITIALIZER, .out_lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void write_all(const unsigned char *p, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t w = write(1, p + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die("scan: write: %s", strerror(errno));
    done += (size_t)w;
  }
}

static unsigned char *put(unsigned char *o, const void *p, size_t n) {
  memcpy(o, p, n);
  return o + n;
}

/* Writes the block: path ends become offsets in the whole output, so blocks go out in that order. */
static void scan_flush(struct scan *s) {
  if (!s->count) return;
  pthread_mutex_lock(&scan_shared.out_lock);
  uint64_t base = scan_shared.written_bytes;
  if (base + s->nbytes > UINT32_MAX) die("scan: more than 4 GiB of paths");
  for (uint32_t i = 0; i < s->count; i++) s->ends[i] += (uint32_t)base;
  unsigned char *o = s->out;
  o = put(o, &s->count, 4);
  o = put(o, &s->nbytes, 4);
  o = put(o, s->numbers, s->count * (size_t)scan_shared.fields * sizeof(double));
  o = put(o, s->hashes, s->count * 4);
  o = put(o, s->ends, s->count * 4);
  o = put(o, s->bytes, s->nbytes);
  write_all(s->out, (size_t)(o - s->out));
  scan_shared.written_bytes = base + s->nbytes;
  pthread_mutex_unlock(&scan_shared.out_lock);
  s->count = s->nbytes = 0;
}

/* Strict UTF-8 as Node.js decodes it: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int valid_utf8(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    if (c < 0x80) { i++; continue; }
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) { len = 3; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
    else return 0;
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return 0;
    for (size_t k = 2; k < len; k++) if (p[i + k] < 0x80 || p[i + k] > 0xbf) return 0;
    i += len;
  }
  return 1;
}

static int scan_ignored(const struct scan *s, size_t len) {
  for (int i = 0; i < scan_shared.nignored; i++) {
    if (scan_shared.ignored_len[i] == len && !memcmp(scan_shared.ignored[i], s->path, len)) return 1;
  }
  return 0;
}

static void scan_record(struct scan *s, size_t len, const struct stat *st) {
  if (s->count == SCAN_BLOCK_ENTRIES || s->nbytes + len > SCAN_BLOCK_BYTES) scan_flush(s);
  double *f = s->numbers + s->count * (size_t)scan_shared.fields;
  f[0] = (double)(st->st_mode & S_IFMT);
  f[1] = (double)(st->st_mode & 07777);
  f[2] = (double)st->st_uid;
  f[3] = (double)st->st_gid;
  f[4] = (double)st->st_size;
  f[5] = (double)st->st_mtim.tv_sec * 1000 + (double)st->st_mtim.tv_nsec / 1000000;
  f[6] = (double)st->st_ctim.tv_sec * 1000 + (double)st->st_ctim.tv_nsec / 1000000;
  f[7] = (double)st->st_ino;
  f[8] = (double)st->st_nlink;
  if (scan_shared.fields == SCAN_DETAIL_FIELDS) {
    f[9] = (double)st->st_rdev;
    memcpy(s->full + scan_shared.root_len + 1, s->path, len);
    s->full[scan_shared.root_len + 1 + len] = 0;
    /* Gone meanwhile, or a file system without xattrs: none to read. */
    f[10] = llistxattr(s->full, NULL, 0) > 0 ? 1 : 0;
  }
  uint32_t h = 0x811c9dc5u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s->path[i]) * 0x01000193u;
  s->hashes[s->count] = h;
  memcpy(s->bytes + s->nbytes, s->path, len);
  s->nbytes += (uint32_t)len;
  s->ends[s->count++] = s->nbytes;
}

static int vanished(int err) {
  return err == ENOENT || err == ENOTDIR;
}

static void scan_dir(struct scan *s, int fd, size_t len);

/* A subdirectory: handed to an idle thread if one waits for work, else walked here (depth first). */
static void scan_subdir(struct scan *s, int parent, const char *name, size_t len) {
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (vanished(errno) || errno == ELOOP) return; /* replaced by a file or a symlink meanwhile */
    die("scan: open /%.*s: %s", (int)len, s->path, strerror(errno));
  }
  if (__atomic_load_n(&scan_shared.idle, __ATOMIC_RELAXED) > __atomic_load_n(&scan_shared.njobs, __ATOMIC_RELAXED)) {
    pthread_mutex_lock(&scan_shared.lock);
    if (scan_shared.idle > scan_shared.njobs) {
      char *copy = malloc(len + 1);
      if (!copy) die("scan: out of memory");
      memcpy(copy, s->path, len);
      scan_shared.jobs[scan_shared.njobs++] = (struct scan_job){fd, len, copy};
      pthread_cond_signal(&scan_shared.wake);
      pthread_mutex_unlock(&scan_shared.lock);
      return;
    }
    pthread_mutex_unlock(&scan_shared.lock);
  }
  scan_dir(s, fd, len);
}

/* Walks the open directory `fd`, whose path relative to the root is s->path[0..len). */
static void scan_dir(struct scan *s, int fd, size_t len) {
  DIR *d = fdopendir(fd);
  if (!d) die("scan: fdopendir /%.*s: %s", (int)len, s->path, strerror(errno));
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno && !vanished(errno)) die("scan: readdir /%.*s: %s", (int)len, s->path, strerror(errno));
      break;
    }
    const char *name = e->d_name;
    if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) continue;
    size_t nlen = strlen(name);
    if (!valid_utf8((const unsigned char *)name, nlen)) { s->skipped++; continue; }
    size_t plen = len ? len + 1 + nlen : nlen;
    if (plen > SCAN_PATH_MAX) die("scan: path too long: /%.*s/%s", (int)len, s->path, name);
    if (len) s->path[len] = '/';
    memcpy(s->path + plen - nlen, name, nlen);
    if (scan_ignored(s, plen)) continue;
    struct stat st;
    if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (vanished(errno)) continue;
      die("scan: lstat /%.*s: %s", (int)plen, s->path, strerror(errno));
    }
    scan_record(s, plen, &st);
    if (S_ISDIR(st.st_mode)) scan_subdir(s, dirfd(d), name, plen);
  }
  closedir(d);
}

/* A thread: takes directories until every thread waits and none is left (nothing can add one). */
static void *scan_worker(void *arg) {
  struct scan *s = arg;
  pthread_mutex_lock(&scan_shared.lock);
  for (;;) {
    if (scan_shared.njobs > 0) {
      struct scan_job job = scan_shared.jobs[--scan_shared.njobs];
      pthread_mutex_unlock(&scan_shared.lock);
      memcpy(s->path, job.path, job.len);
      free(job.path);
      scan_dir(s, job.fd, job.len);
      pthread_mutex_lock(&scan_shared.lock);
      continue;
    }
    if (++scan_shared.idle == scan_shared.nthreads) {
      pthread_cond_broadcast(&scan_shared.wake);
      break;
    }
    pthread_cond_wait(&scan_shared.wake, &scan_shared.lock);
    if (scan_shared.idle == scan_shared.nthreads) break;
    scan_shared.idle--;
  }
  pthread_mutex_unlock(&scan_shared.lock);
  scan_flush(s);
  return NULL;
}

/* Walks the open root with `nthreads` threads (this one included); returns the names skipped. */
static unsigned long scan_tree(int fd, int nthreads) {
  char *empty = malloc(1);
  if (!empty) die("scan: out of memory");
  scan_shared.jobs[scan_shared.njobs++] = (struct scan_job){fd, 0, empty};
  scan_shared.nthreads = nthreads;
  struct scan *walks[SCAN_THREADS];
  pthread_t threads[SCAN_THREADS];
  for (int i = 0; i < nthreads; i++) {
    walks[i] = calloc(1, sizeof **walks);
    if (!walks[i]) die("scan: out of memory");
    if (scan_shared.fields == SCAN_DETAIL_FIELDS) {
      walks[i]->full = malloc(scan_shared.root_len + 1 + sizeof walks[i]->path);
      if (!walks[i]->full) die("scan: out of memory");
      memcpy(walks[i]->full, scan_shared.root, scan_shared.root_len);
      walks[i]->full[scan_shared.root_len] = '/';
    }
  }
  for (int i = 1; i < nthreads; i++) {
    int err = pthread_create(&threads[i], NULL, scan_worker, walks[i]);
    if (err) die("scan: pthread_create: %s", strerror(err));
  }
  scan_worker(walks[0]);
  unsigned long skipped = walks[0]->skipped;
  for (int i = 1; i < nthreads; i++) {
    pthread_join(threads[i], NULL);
    skipped += walks[i]->skipped;
  }
  return skipped;
}

int scan_main(int argc, char **argv) {
  if (argc < 1) die("scan: no root given");
  int nthreads = SCAN_THREADS;
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < nthreads) nthreads = CPU_COUNT(&cpus);
  scan_shared.ignored = calloc((size_t)argc, sizeof *scan_shared.ignored);
  scan_shared.ignored_len = calloc((size_t)argc, sizeof *scan_shared.ignored_len);
  if (!scan_shared.ignored || !scan_shared.ignored_len) die("scan: out of memory");
  scan_shared.fields = SCAN_FIELDS;
  scan_shared.root = argv[0];
  scan_shared.root_len = strlen(argv[0]);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--details")) { scan_shared.fields = SCAN_DETAIL_FIELDS; continue; }
    if (i + 1 >= argc) die("scan: %s needs a value", argv[i]);
    char *value = argv[++i];
    if (!strcmp(argv[i - 1], "--threads")) { nthreads = (int)parse_id(value, "thread count"); continue; }
    if (strcmp(argv[i - 1], "--ignore")) die("scan: unknown option %s", argv[i - 1]);
    scan_shared.ignored[scan_shared.nignored] = value;
    scan_shared.ignored_len[scan_shared.nignored++] = strlen(value);
  }
  if (nthreads < 1 || nthreads > SCAN_THREADS) nthreads = nthreads < 1 ? 1 : SCAN_THREADS;
  /* One descriptor per level of depth is open: allow as many as the hard limit does. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  /* A larger pipe means fewer wake-ups of the reader; a refused size is fine. */
  fcntl(1, F_SETPIPE_SZ, 1 << 20);
  int fd = open(argv[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 && !vanished(errno)) die("scan: open %s: %s", argv[0], strerror(errno));
  /* A missing root is an empty tree, as for Node.js's walk. */
  unsigned long skipped = fd < 0 ? 0 : scan_tree(fd, nthreads);
  uint32_t end[3] = {0, 0, skipped > UINT32_MAX ? UINT32_MAX : (uint32_t)skipped};
  write_all((const unsigned char *)end, sizeof end);
  return 0;
}
