#!/usr/bin/env bash
# Builds the services image: docker/build-image.sh [TAG] (default warren:latest).
# BASE=<image with node 20> overrides the base (offline: warren-base-node, from
# docker/build-local-bases.sh). The image is labelled with a hash of what went into it;
# an image with the same hash is kept as it is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-warren:latest}
(cd "$root" && npm run -s build)
hash=$(cd "$root" && { find dist bin rabbitmq services/worker-supervisor/adapters/assets docker/Dockerfile package-lock.json -type f -print0 | sort -z | xargs -0 sha256sum; echo "${BASE:-}"; } | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "warren.source"}}' "$tag" 2>/dev/null || true)" = "$hash" ]; then
  echo "$tag is up to date ($hash)"
  exit 0
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/services/worker-supervisor/adapters"
cp -a "$root/package.json" "$root/package-lock.json" "$root/bin" "$root/dist" "$root/rabbitmq" "$ctx/"
cp -a "$root/services/worker-supervisor/adapters/assets" "$ctx/services/worker-supervisor/adapters/"
(cd "$ctx" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
docker build -q -f "$root/docker/Dockerfile" ${BASE:+--build-arg BASE="$BASE"} --label "warren.source=$hash" -t "$tag" "$ctx" >/dev/null 2>&1
echo "built $tag ($hash)"
