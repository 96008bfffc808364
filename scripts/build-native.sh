#!/usr/bin/env bash
# Compiles kiln-sandbox, the one piece of kiln not in TypeScript: it makes the system calls
# (namespaces, chroot, setgroups, mknod, subreaper) that Node.js does not expose. Linked
# statically so it keeps working in container isolation after a base image replaces /lib.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist/native
cc=${CC:-gcc}
if ! command -v "$cc" >/dev/null; then
  echo "kiln needs a C compiler to build kiln-sandbox: apt-get install -y gcc libc6-dev" >&2; exit 1
fi
"$cc" -O2 -Wall -Wextra -Wno-format-truncation -Werror -static -o dist/native/kiln-sandbox.tmp native/kiln-sandbox.c
mv dist/native/kiln-sandbox.tmp dist/native/kiln-sandbox
