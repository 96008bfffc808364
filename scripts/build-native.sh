#!/usr/bin/env bash
# Compiles kiln's two small C programs: kiln-sandbox makes the system calls Node.js does not expose
# (namespaces, chroot, setgroups, mknod, subreaper) and walks trees on many threads (scan); kiln-launch
# is /kaniko/executor in kiln's image.
# Linked statically so they keep working in container isolation after a base image replaces /lib.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist/native
cc=${CC:-gcc}
if ! command -v "$cc" >/dev/null; then
  echo "kiln needs a C compiler to build kiln-sandbox: apt-get install -y gcc libc6-dev" >&2; exit 1
fi
# kiln-sandbox's RUN --mount and --network code (sandbox-mounts.c) and its scan subcommand, the stat
# walk of walk snapshots (sandbox-scan.c), are files of their own.
declare -A extra=([kiln-sandbox]="native/sandbox-mounts.c native/sandbox-scan.c" [kiln-launch]="")
for tool in kiln-sandbox kiln-launch; do
  # shellcheck disable=SC2086 # the extra sources are a word list
  "$cc" -O2 -Wall -Wextra -Wno-format-truncation -Werror -static -o "dist/native/$tool.tmp" "native/$tool.c" ${extra[$tool]}
  mv "dist/native/$tool.tmp" "dist/native/$tool"
done
