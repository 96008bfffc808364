#!/bin/bash
# Builds a kaniko debug image from a kaniko source checkout and loads it into the docker engine at
# DOCKER_HOST, for the benchmarks' kaniko peer (KANIKO_IMAGE). kaniko's published images live on
# gcr.io and Docker Hub, which these machines cannot reach; its repository vendors every Go
# dependency, so a checkout and a Go toolchain build it offline.
#
# Usage: bench/kaniko-image.sh KANIKO_CHECKOUT [IMAGE]
#   KANIKO_CHECKOUT  a checkout of github.com/GoogleContainerTools/kaniko (v1.23.2 builds with Go 1.22+;
#                    Debian 12 has Go 1.23 as golang-1.23-go in bookworm-backports; later tags need 1.24)
#   IMAGE            default kiln-bench/kaniko:debug
# The image is laid out like kaniko's own debug image: /kaniko/executor, /kaniko/ssl/certs,
# /kaniko/.docker, busybox in /busybox, WORKDIR /workspace, ENTRYPOINT /kaniko/executor.
set -euo pipefail
src=${1:?usage: bench/kaniko-image.sh KANIKO_CHECKOUT [IMAGE]}
image=${2:-kiln-bench/kaniko:debug}
: "${DOCKER_HOST:?set DOCKER_HOST to the engine the benchmarks use (eval \$(scripts/dockerd.sh start | tail -1))}"
export DOCKER_HOST
for go in go /usr/lib/go-1.2[2-9]/bin/go; do
  if command -v "$go" >/dev/null && "$go" version | grep -qE 'go1\.(2[2-9]|[3-9][0-9])'; then break; fi
  go=
done
[ -n "$go" ] || { echo "kaniko-image: no Go 1.22 or later found (apt-get install -t bookworm-backports golang-1.23-go)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
version=$(git -C "$src" describe --tags 2>/dev/null || echo unknown)
echo "kaniko-image: building kaniko $version with $("$go" version | cut -d' ' -f3)" >&2
(cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=vendor CGO_ENABLED=0 "$go" build \
  -ldflags "-extldflags -static -X github.com/GoogleContainerTools/kaniko/pkg/version.version=$version -w -s" \
  -o "$ctx/executor" ./cmd/executor)
root=$ctx/root
mkdir -p "$root/kaniko/ssl/certs" "$root/kaniko/.docker" "$root/etc" "$root/busybox" "$root/workspace" "$root/root"
chmod 777 "$root/kaniko"
mv "$ctx/executor" "$root/kaniko/executor"
cp /bin/busybox "$root/busybox/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$root/busybox/$applet"; done
cp /etc/ssl/certs/ca-certificates.crt "$root/kaniko/ssl/certs/"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY root /
ENV HOME=/root USER=root PATH=/usr/local/bin:/kaniko:/busybox SSL_CERT_DIR=/kaniko/ssl/certs DOCKER_CONFIG=/kaniko/.docker/
WORKDIR /workspace
ENTRYPOINT ["/kaniko/executor"]
EOF
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
echo "kaniko-image: built $image; run the benchmarks with KANIKO_IMAGE=$image" >&2
