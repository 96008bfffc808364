/* kiln-sandbox scan: the parallel lstat walk of a tree for walk snapshots (sandbox-scan.c). */
#ifndef KILN_SANDBOX_SCAN_H
#define KILN_SANDBOX_SCAN_H

/* Prints "kiln-sandbox: ..." and exits with the setup status (kiln-sandbox.c). */
void die(const char *fmt, ...);
/* A decimal number up to 0xfffffffe, or die("bad WHAT: S") (kiln-sandbox.c). */
unsigned long parse_id(const char *s, const char *what);

/* scan ROOT [--ignore PATH]... [--threads N], argv starting at ROOT: the records on stdout; returns 0. */
int scan_main(int argc, char **argv);

#endif
