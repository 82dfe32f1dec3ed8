#!/usr/bin/env bash
# Builds the services image: docker/build-image.sh [TAG] (default warren:latest).
# BASE=<image with node 20> overrides the base (offline: warren-base-node, from
# docker/build-local-bases.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-warren:latest}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
(cd "$root" && npm run -s build)
mkdir -p "$ctx/services/worker-supervisor/adapters"
cp -a "$root/package.json" "$root/package-lock.json" "$root/bin" "$root/dist" "$root/rabbitmq" "$ctx/"
cp -a "$root/services/worker-supervisor/adapters/assets" "$ctx/services/worker-supervisor/adapters/"
(cd "$ctx" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
docker build -q -f "$root/docker/Dockerfile" ${BASE:+--build-arg BASE="$BASE"} -t "$tag" "$ctx" >/dev/null
echo "built $tag"
