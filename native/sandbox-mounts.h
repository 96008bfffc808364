/* RUN --mount and RUN --network=none for kiln-sandbox run (sandbox-mounts.c). */
#ifndef KILN_SANDBOX_MOUNTS_H
#define KILN_SANDBOX_MOUNTS_H

/* Prints "kiln-sandbox: ..." and exits with the setup status (kiln-sandbox.c). */
void die(const char *fmt, ...);

/*
 * Reads one of the options this file owns at argv[0] ("--mount TYPE OPTS DST SRC", "--no-network",
 * "--lock PATH"); returns how many arguments it used, 0 when argv[0] is not one of them.
 */
int mounts_option(int argc, char **argv);
/* Whether any --mount was given. */
int mounts_wanted(void);
/* Whether --no-network was given. */
int mounts_no_network(void);
/* Takes every --lock (flock, exclusive, waiting): held until the sandbox exits. */
void mounts_take_locks(void);
/* Brings up the loopback interface of a fresh network namespace (a warning when not `required`). */
void mounts_loopback_up(int required);
/* Mounts every --mount under `root` ("" for "/" itself), in the current (private) mount namespace. */
void mounts_apply(const char *root);
/* probe-mounts DIR: exits 0 when a private mount namespace and a tmpfs mount on DIR are allowed. */
int mounts_probe(const char *dir);

#endif
