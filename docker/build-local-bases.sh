#!/usr/bin/env bash
# Base images from this host's own binaries, for machines that can pull nothing (CI here):
#   warren-base-node  node + busybox          (base of the services image)
#   warren-base-ruby  ruby + rspec + busybox  (base of the example suite image)
# Where a registry is reachable, use the official images instead (the Dockerfiles' default
# BASE). Skips an image that already exists unless FORCE=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build() { # name, paths...
  local name=$1; shift
  if [ "${FORCE:-0}" != 1 ] && docker image inspect "$name" >/dev/null 2>&1; then return; fi
  local ctx; ctx=$(mktemp -d)
  "$here/hostroot.sh" "$ctx/rootfs" "$@"
  printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\n' > "$ctx/Dockerfile"
  docker build -q -t "$name" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "built $name"
}
build warren-base-node "$(readlink -f "$(command -v node)")"
build warren-base-ruby /usr/bin/ruby /usr/bin/rspec /usr/lib/ruby /usr/lib/x86_64-linux-gnu/ruby /usr/share/rubygems-integration "$(readlink -f "$(command -v node)")"
