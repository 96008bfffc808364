#!/usr/bin/env bash
# Installs what kiln needs to run (its npm dependencies) and compiles it to dist/.
# kiln needs Node.js 20, which these machines have, a C compiler for kiln-sandbox (its one
# native helper: namespaces, chroot and mknod, which Node.js does not offer) and fs-xattr, and a C++
# compiler for zstd-napi (in-process zstd), which npm builds from source here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "kiln needs Node.js 20 or newer" >&2; exit 1
fi
# bzip2, xz and zstd: ADD unpacks archives compressed with them through Debian's own decompressors.
# git: ADD <git repository> and git:// contexts check out through Debian's git, as BuildKit does.
needed=(gcc g++ libc6-dev make python3 bzip2 xz-utils zstd git)
missing=()
for p in "${needed[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# zstd-napi's install looks for a prebuilt binary on GitHub first, which install steps may not reach (a
# network that drops packets would hang it): build it from source straight away, as node-gyp does anyway.
npm_config_build_from_source=true npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
