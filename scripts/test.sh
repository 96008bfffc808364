#!/usr/bin/env bash
# The whole test suite from a clean clone on a fresh Debian machine, as root: installs the peers the
# tests compare kiln with (docker, podman, skopeo, umoci), builds, lints, type-checks, starts a
# private dockerd for the run, runs every test, and stops dockerd again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io podman skopeo umoci busybox-static ca-certificates docker-registry apache2-utils openssl debootstrap bzip2 xz-utils zstd git patchelf rsync)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/install.sh
# gitlab-ci-local runs the GitLab job end to end; it stays out of kiln's own dependencies because one
# of its packages (re2) compiles for minutes. 4.60.0 is the last release that runs on Node.js 20.
glci=.cache/gitlab-ci-local
if [ "$(cat "$glci/version" 2>/dev/null)" != 4.60.0 ]; then
  rm -rf "$glci" && mkdir -p "$glci"
  npm install --prefix "$glci" --no-save --no-audit --no-fund --loglevel=error gitlab-ci-local@4.60.0
  echo 4.60.0 > "$glci/version"
fi
npm run lint --silent
npm run typecheck --silent

dockerd_line=$(bash scripts/dockerd.sh start)
export "${dockerd_line?}"
trap 'bash scripts/dockerd.sh stop' EXIT

npm test --silent
