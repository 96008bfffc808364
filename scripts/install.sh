#!/usr/bin/env bash
# Installs what kiln needs to run (its npm dependencies) and compiles it to dist/.
# kiln itself needs only Node.js 20, which these machines have.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "kiln needs Node.js 20 or newer" >&2; exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
