/*
 * kiln-sandbox: the few Linux system calls kiln needs and Node.js does not offer.
 *
 *   kiln-sandbox run [options] -- COMMAND [ARG...]
 *       Runs one RUN step. With --namespaces (chroot isolation) it enters new mount, pid, uts and
 *       ipc namespaces, mounts the build root (optionally as overlayfs) with /proc, a minimal /dev
 *       and a read-only /sys, chroots into it and runs COMMAND as pid 2 under a tiny init; when
 *       COMMAND ends, the namespace ends and every process left behind is killed by the kernel.
 *       Without --namespaces (container isolation, where kiln already runs inside a container) it
 *       runs COMMAND in place as a child subreaper and kills whatever COMMAND left behind.
 *       --bind SRC:DST binds a host file over one in the root (/etc/hosts); --file SRC:dev/... puts a
 *       host file, read-only, into the step's own /dev tmpfs (a RUN heredoc script at /dev/pipes).
 *       --mount, --no-network and --lock (RUN --mount, RUN --network=none) are sandbox-mounts.c's.
 *       The environment is passed through unchanged: kiln spawns this with the step's environment.
 *       Exit status: COMMAND's, 128+N when killed by signal N, 125 when the sandbox could not be
 *       set up, 126/127 when COMMAND could not be executed / was not found.
 *   kiln-sandbox mknod
 *       Reads NUL-terminated records "TYPE MODE MAJOR MINOR PATH" (TYPE c, b or p; MODE octal)
 *       from stdin and creates each node, mode exactly as given (overlay whiteouts, device nodes
 *       and fifos from image layers).
 *   kiln-sandbox probe-overlay DIR
 *       Exits 0 when overlayfs can be mounted with upper and work directories under DIR.
 *   kiln-sandbox probe-mounts DIR
 *       Exits 0 when a private mount namespace with a mount on DIR is allowed (container isolation).
 *   kiln-sandbox scan ROOT [--ignore PATH]... [--threads N]
 *       lstat of every path under ROOT (walk snapshots), as binary records on stdout: sandbox-scan.c.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sandbox-mounts.h"
#include "sandbox-scan.h"

#define EXIT_SETUP 125
#define MAX_BINDS 16
#define MAX_GROUPS 256

void die(const char *fmt, ...) {
  va_list ap;
  fputs("kiln-sandbox: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  _exit(EXIT_SETUP);
}

struct run_options {
  const char *root;       /* chroot target; NULL runs in place */
  int namespaces;
  const char *overlay;    /* "lowerdir=...,upperdir=...,workdir=..." mount data */
  const char *hostname;
  int proc, dev, sys;
  const char *binds[MAX_BINDS];
  int nbinds;
  const char *files[MAX_BINDS]; /* SRC:DST with DST under /dev, created in its tmpfs (RUN heredoc scripts) */
  int nfiles;
  const char *cwd;
  uid_t uid;
  gid_t gid;
  gid_t groups[MAX_GROUPS];
  int ngroups;
  char **argv;
};

static char *under_root(const struct run_options *o, const char *path) {
  static char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s/%s", o->root, path) >= (int)sizeof buf) die("path too long: %s", path);
  return buf;
}

static void do_mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data) {
  if (mount(src, target, type, flags, data) != 0) die("mount %s on %s: %s", type ? type : src, target, strerror(errno));
}

/* A minimal /dev as Docker gives a build step: a tmpfs with the host's harmless character devices. */
static void mount_dev(const struct run_options *o) {
  static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
  char dev[PATH_MAX], path[PATH_MAX], host[64];
  snprintf(dev, sizeof dev, "%s", under_root(o, "dev"));
  do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k");
  for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
    snprintf(path, sizeof path, "%s/%s", dev, nodes[i]);
    snprintf(host, sizeof host, "/dev/%s", nodes[i]);
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0) die("create %s: %s", path, strerror(errno));
    close(fd);
    do_mount(host, path, NULL, MS_BIND, NULL);
  }
  snprintf(path, sizeof path, "%s/pts", dev);
  if (mkdir(path, 0755) == 0 && mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") == 0) {
    snprintf(path, sizeof path, "%s/ptmx", dev);
    if (symlink("pts/ptmx", path) != 0) die("symlink %s: %s", path, strerror(errno));
  }
  snprintf(path, sizeof path, "%s/shm", dev);
  if (mkdir(path, 01777) != 0) die("mkdir %s: %s", path, strerror(errno));
  do_mount("shm", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
  static const char *links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
  for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
    snprintf(path, sizeof path, "%s/%s", dev, links[i][1]);
    if (symlink(links[i][0], path) != 0) die("symlink %s: %s", path, strerror(errno));
  }
}

/* Mounts inside the private mount namespace: they vanish with it, and never touch the host's view. */
static void setup_root(const struct run_options *o) {
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make mounts private: %s", strerror(errno));
  if (o->overlay) do_mount("overlay", o->root, "overlay", 0, o->overlay);
  if (o->proc) do_mount("proc", under_root(o, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  if (o->dev) mount_dev(o);
  if (o->sys) {
    char sys[PATH_MAX];
    snprintf(sys, sizeof sys, "%s", under_root(o, "sys"));
    do_mount("/sys", sys, NULL, MS_BIND | MS_REC, NULL);
    do_mount(NULL, sys, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  }
  for (int i = 0; i < o->nbinds; i++) {
    char src[PATH_MAX];
    const char *colon = strchr(o->binds[i], ':');
    if (!colon || (size_t)(colon - o->binds[i]) >= sizeof src) die("bad --bind %s", o->binds[i]);
    memcpy(src, o->binds[i], colon - o->binds[i]);
    src[colon - o->binds[i]] = 0;
    do_mount(src, under_root(o, colon + 1), NULL, MS_BIND, NULL);
  }
  /* Files placed in the step's own /dev, never in the root: what the step writes there is not its layer. */
  for (int i = 0; i < o->nfiles; i++) {
    char src[PATH_MAX], dst[PATH_MAX];
    const char *colon = strchr(o->files[i], ':');
    if (!o->dev || !colon || (size_t)(colon - o->files[i]) >= sizeof src || strncmp(colon + 1, "dev/", 4) || strstr(colon + 1, "..")) die("bad --file %s", o->files[i]);
    memcpy(src, o->files[i], colon - o->files[i]);
    src[colon - o->files[i]] = 0;
    snprintf(dst, sizeof dst, "%s", under_root(o, colon + 1));
    for (char *slash = strchr(dst + strlen(o->root) + 5, '/'); slash; slash = strchr(slash + 1, '/')) {
      *slash = 0;
      if (mkdir(dst, 0755) != 0 && errno != EEXIST) die("mkdir %s: %s", dst, strerror(errno));
      *slash = '/';
    }
    int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0755);
    if (fd < 0) die("create %s: %s", dst, strerror(errno));
    close(fd);
    do_mount(src, dst, NULL, MS_BIND, NULL);
    do_mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
  }
  mounts_apply(o->root);
  if (o->hostname && sethostname(o->hostname, strlen(o->hostname)) != 0) die("sethostname: %s", strerror(errno));
  if (chroot(o->root) != 0) die("chroot %s: %s", o->root, strerror(errno));
  if (chdir("/") != 0) die("chdir /: %s", strerror(errno));
}

/* In the child that becomes COMMAND: identity, directory, then exec. */
static void exec_command(const struct run_options *o) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  if (o->cwd && chdir(o->cwd) != 0) die("cannot enter the working directory %s: %s", o->cwd, strerror(errno));
  if (setgroups(o->ngroups, o->groups) != 0) die("setgroups: %s", strerror(errno));
  if (setgid(o->gid) != 0) die("setgid %u: %s", (unsigned)o->gid, strerror(errno));
  if (setuid(o->uid) != 0) die("setuid %u: %s", (unsigned)o->uid, strerror(errno));
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  execvp(o->argv[0], o->argv);
  int err = errno;
  if (err == ENOENT && !strchr(o->argv[0], '/')) {
    fprintf(stderr, "kiln-sandbox: exec: \"%s\": executable file not found in $PATH\n", o->argv[0]);
  } else {
    fprintf(stderr, "kiln-sandbox: exec %s: %s\n", o->argv[0], strerror(err));
  }
  _exit(err == ENOENT ? 127 : 126);
}

static int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return EXIT_SETUP;
}

static volatile pid_t forward_to = 0;
static void forward_signal(int sig) {
  if (forward_to > 0) kill(forward_to, sig);
}

/* Waits for `pid`, reaping any other child along the way; returns its exit code. */
static int wait_for(pid_t pid) {
  for (;;) {
    int status;
    pid_t got = waitpid(-1, &status, 0);
    if (got == pid) return status_code(status);
    if (got < 0 && errno != EINTR) die("waitpid: %s", strerror(errno));
  }
}

/* Container isolation: kill every process COMMAND left behind (they were reparented to us). */
static void kill_leftovers(void) {
  pid_t self = getpid();
  for (;;) {
    int found = 0;
    DIR *proc = opendir("/proc");
    if (!proc) return;
    struct dirent *d;
    while ((d = readdir(proc))) {
      char path[64], buf[512];
      if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
      snprintf(path, sizeof path, "/proc/%s/stat", d->d_name);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (n <= 0) continue;
      buf[n] = 0;
      char *paren = strrchr(buf, ')');
      int ppid;
      if (!paren || sscanf(paren + 2, "%*c %d", &ppid) != 1 || ppid != self) continue;
      kill((pid_t)atoi(d->d_name), SIGKILL);
      found = 1;
    }
    closedir(proc);
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    if (!found) {
      if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD) return;
      usleep(1000);
    }
  }
}

static int run(struct run_options *o) {
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* kiln gone: the step goes too */
  struct sigaction sa = {0};
  sa.sa_handler = forward_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  mounts_take_locks();
  if (o->namespaces) {
    if (!o->root) die("--namespaces needs --root");
    int net = mounts_no_network() ? CLONE_NEWNET : 0;
    if (unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | net) != 0) {
      die("cannot create namespaces (chroot isolation needs root or CAP_SYS_ADMIN): %s", strerror(errno));
    }
    if (net) mounts_loopback_up(1);
    pid_t init = fork();
    if (init < 0) die("fork: %s", strerror(errno));
    if (init == 0) {
      /* pid 1 of the new namespace: when it exits, the kernel kills everything else in it. */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      setup_root(o);
      pid_t cmd = fork();
      if (cmd < 0) die("fork: %s", strerror(errno));
      if (cmd == 0) exec_command(o);
      forward_to = cmd;
      _exit(wait_for(cmd));
    }
    forward_to = init;
    return wait_for(init);
  }
  if (o->root) {
    if (chroot(o->root) != 0) die("chroot %s: %s", o->root, strerror(errno));
    if (chdir("/") != 0) die("chdir /: %s", strerror(errno));
  }
  /* Container isolation: real mounts and a network namespace only where the container allows them. */
  if (mounts_wanted()) {
    if (unshare(CLONE_NEWNS) != 0) die("RUN --mount needs a private mount namespace, which is not allowed here: %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make mounts private: %s", strerror(errno));
    mounts_apply("");
  }
  if (mounts_no_network()) {
    if (unshare(CLONE_NEWNET) != 0) {
      die("RUN --network=none needs a new network namespace, which this container does not allow (run it with CAP_SYS_ADMIN, or drop the flag): %s", strerror(errno));
    }
    mounts_loopback_up(0);
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
  pid_t cmd = fork();
  if (cmd < 0) die("fork: %s", strerror(errno));
  if (cmd == 0) exec_command(o);
  forward_to = cmd;
  int code = wait_for(cmd);
  kill_leftovers();
  return code;
}

unsigned long parse_id(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || end == s || v > 0xfffffffeUL) die("bad %s: %s", what, s);
  return v;
}

static int run_main(int argc, char **argv) {
  struct run_options o = {0};
  int i = 0;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--")) { i++; break; }
    int used = mounts_option(argc - i, argv + i);
    if (used) { i += used - 1; continue; }
    if (!strcmp(a, "--namespaces")) o.namespaces = 1;
    else if (!strcmp(a, "--proc")) o.proc = 1;
    else if (!strcmp(a, "--dev")) o.dev = 1;
    else if (!strcmp(a, "--sys")) o.sys = 1;
    else if (!v) die("option %s needs a value", a);
    else if (!strcmp(a, "--root")) { o.root = v; i++; }
    else if (!strcmp(a, "--overlay")) { o.overlay = v; i++; }
    else if (!strcmp(a, "--hostname")) { o.hostname = v; i++; }
    else if (!strcmp(a, "--cwd")) { o.cwd = v; i++; }
    else if (!strcmp(a, "--uid")) { o.uid = (uid_t)parse_id(v, "uid"); i++; }
    else if (!strcmp(a, "--gid")) { o.gid = (gid_t)parse_id(v, "gid"); i++; }
    else if (!strcmp(a, "--bind")) {
      if (o.nbinds == MAX_BINDS) die("too many --bind");
      o.binds[o.nbinds++] = v; i++;
    } else if (!strcmp(a, "--file")) {
      if (o.nfiles == MAX_BINDS) die("too many --file");
      o.files[o.nfiles++] = v; i++;
    } else if (!strcmp(a, "--groups")) {
      char *copy = strdup(v), *save = NULL;
      for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o.ngroups == MAX_GROUPS) die("too many groups");
        o.groups[o.ngroups++] = (gid_t)parse_id(t, "group");
      }
      i++;
    } else die("unknown option %s", a);
  }
  if (i >= argc) die("run: no command given");
  o.argv = argv + i;
  return run(&o);
}

/* Reads one NUL-terminated field; returns 0 at a clean end of input. */
static int read_field(char *buf, size_t size) {
  size_t n = 0;
  int c;
  while ((c = getchar()) != EOF) {
    if (c == 0) { buf[n] = 0; return 1; }
    if (n + 1 >= size) die("mknod: field too long");
    buf[n++] = (char)c;
  }
  if (n) die("mknod: truncated record");
  return 0;
}

static int mknod_main(void) {
  char type[8], mode[16], major_s[16], minor_s[16], path[PATH_MAX];
  umask(0);
  while (read_field(type, sizeof type)) {
    if (!read_field(mode, sizeof mode) || !read_field(major_s, sizeof major_s) || !read_field(minor_s, sizeof minor_s) || !read_field(path, sizeof path)) {
      die("mknod: truncated record");
    }
    mode_t kind = type[0] == 'c' ? S_IFCHR : type[0] == 'b' ? S_IFBLK : type[0] == 'p' ? S_IFIFO : 0;
    if (!kind || type[1]) die("mknod: bad type %s", type);
    mode_t perm = (mode_t)strtoul(mode, NULL, 8) & 07777;
    dev_t dev = makedev((unsigned)parse_id(major_s, "major"), (unsigned)parse_id(minor_s, "minor"));
    if (mknod(path, kind | perm, dev) != 0) {
      fprintf(stderr, "kiln-sandbox: mknod %s: %s\n", path, strerror(errno));
      return errno == EPERM ? 2 : 1;
    }
  }
  return 0;
}

static int probe_overlay(const char *dir) {
  char lower[PATH_MAX], upper[PATH_MAX], work[PATH_MAX], merged[PATH_MAX], data[PATH_MAX * 3 + 64];
  snprintf(lower, sizeof lower, "%s/lower", dir);
  snprintf(upper, sizeof upper, "%s/upper", dir);
  snprintf(work, sizeof work, "%s/work", dir);
  snprintf(merged, sizeof merged, "%s/merged", dir);
  const char *dirs[] = {dir, lower, upper, work, merged};
  for (int i = 0; i < 5; i++) {
    if (mkdir(dirs[i], 0700) != 0 && errno != EEXIST) {
      fprintf(stderr, "kiln-sandbox: mkdir %s: %s\n", dirs[i], strerror(errno));
      return 1;
    }
  }
  if (unshare(CLONE_NEWNS) != 0) return 1;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return 1;
  snprintf(data, sizeof data, "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off,index=off", lower, upper, work);
  if (mount("overlay", merged, "overlay", 0, data) != 0) {
    fprintf(stderr, "kiln-sandbox: overlay: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "run")) return run_main(argc - 2, argv + 2);
  if (argc == 2 && !strcmp(argv[1], "mknod")) return mknod_main();
  if (argc == 3 && !strcmp(argv[1], "probe-overlay")) return probe_overlay(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "probe-mounts")) return mounts_probe(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "scan")) return scan_main(argc - 2, argv + 2);
  fputs("usage: kiln-sandbox run [options] -- COMMAND... | mknod | probe-overlay DIR | probe-mounts DIR | scan ROOT [--ignore PATH]... [--threads N]\n", stderr);
  return 2;
}
