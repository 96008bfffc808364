/*
 * kiln-launch: /kaniko/executor and /kaniko/warmer in kiln's image. Starts kiln's Node.js through
 * the dynamic loader and libraries kept next to it, so kiln never needs the image's /lib or /usr,
 * which a build in container isolation replaces. The command is the name it was started as.
 *
 *   <dir>/executor ARGS...  →  <dir>/lib/ld.so --library-path <dir>/lib <dir>/node
 *                              <dir>/kiln/dist/src/cli/start.cjs executor ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  char self[PATH_MAX], dir[PATH_MAX], loader[PATH_MAX], libs[PATH_MAX], node[PATH_MAX], start_js[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n < 0) {
    fprintf(stderr, "kiln: cannot find its own directory (/proc/self/exe): %s\n", strerror(errno));
    return 1;
  }
  self[n] = 0;
  snprintf(dir, sizeof dir, "%s", self);
  char *home = dirname(dir);
  char name[PATH_MAX];
  snprintf(name, sizeof name, "%s", argv[0]);
  char *command = basename(name);
  snprintf(loader, sizeof loader, "%s/lib/ld.so", home);
  snprintf(libs, sizeof libs, "%s/lib", home);
  snprintf(node, sizeof node, "%s/node", home);
  snprintf(start_js, sizeof start_js, "%s/kiln/dist/src/cli/start.cjs", home);
  char **args = calloc((size_t)argc + 7, sizeof *args);
  if (!args) return 1;
  int i = 0;
  args[i++] = loader;
  args[i++] = "--library-path";
  args[i++] = libs;
  args[i++] = node;
  args[i++] = start_js;
  args[i++] = command;
  for (int a = 1; a < argc; a++) args[i++] = argv[a];
  args[i] = NULL;
  /* Node.js parses NODE_EXTRA_CA_CERTS before kiln runs (~90 ms); kiln reads it itself when TLS needs it. */
  const char *extra_ca = getenv("NODE_EXTRA_CA_CERTS");
  if (extra_ca && *extra_ca) {
    setenv("KILN_NODE_EXTRA_CA_CERTS", extra_ca, 1);
    unsetenv("NODE_EXTRA_CA_CERTS");
  }
  execv(loader, args);
  fprintf(stderr, "kiln: cannot start %s: %s\n", loader, strerror(errno));
  return 127;
}
