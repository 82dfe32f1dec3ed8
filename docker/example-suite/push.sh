#!/usr/bin/env bash
# Builds the example suite's image and pushes it to your registry, as CI does before a run
# (the seed's Jenkins job: build the big image, push it to the office's registry, the
# workers pull it). The supervisors pull it with WARREN_REGISTRY_AUTH
# ('{"username": ..., "password": ..., "serveraddress": "registry.local:5000"}').
#
#   REGISTRY=registry.local:5000 TAG=$GIT_COMMIT docker/example-suite/push.sh
#   warren run --image registry.local:5000/example-suite:$GIT_COMMIT --cwd /suite --adapter rspec
#
# Log in first (docker login registry.local:5000). BASE as in the Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${REGISTRY:?set REGISTRY, e.g. registry.local:5000}"
image="$REGISTRY/example-suite:${TAG:-latest}"
docker build -q -f docker/example-suite/Dockerfile ${BASE:+--build-arg BASE="$BASE"} -t "$image" . >/dev/null
docker push -q "$image" >/dev/null
echo "$image"
