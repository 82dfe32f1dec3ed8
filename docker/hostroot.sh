#!/usr/bin/env bash
# Builds a root filesystem from this host's own binaries, for `FROM scratch` images when no
# registry is reachable: busybox-static as /bin/sh and the usual commands, then each path
# given (files or directories, copied to the same place, symlinks with their targets) and,
# for every ELF file among them, the shared libraries it loads (ldd) and the loader.
# The layout is merged-/usr like Debian's (/bin, /lib, /lib64 are links into /usr).
#
#   docker/hostroot.sh OUT /usr/bin/ruby /usr/lib/ruby ...
set -euo pipefail
out=$1; shift
mkdir -p "$out"/usr/{bin,sbin,lib,lib64} "$out"/{tmp,etc,root,dev,proc,sys}
for d in bin sbin lib lib64; do [ -e "$out/$d" ] || ln -s "usr/$d" "$out/$d"; done
chmod 1777 "$out/tmp"
cp "$(command -v busybox)" "$out/usr/bin/busybox"
for applet in sh ash cat cp echo env false grep head kill ls mkdir mv ps pwd rm seq sleep tail test touch tr true wc which xargs id sed printf dirname basename; do
  [ -e "$out/usr/bin/$applet" ] || ln -s busybox "$out/usr/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$out/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$out/etc/group"

# /lib/x → usr/lib/x, so merged-/usr paths land once
canon() { case $1 in /bin/*|/sbin/*|/lib/*|/lib64/*) echo "/usr$1";; *) echo "$1";; esac; }

put() { # one file or link, at its place
  local src=$1 dst
  dst=$out$(canon "$src")
  [ -e "$dst" ] || [ -L "$dst" ] && return 0
  mkdir -p "$(dirname "$dst")"
  cp -a "$src" "$dst"
  if [ -L "$src" ]; then put "$(readlink -f "$src")"; fi
  if [ -f "$src" ] && head -c 4 "$src" 2>/dev/null | grep -q ELF; then
    { ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' || true; } | while read -r lib; do put "$lib"; done
  fi
}

for p in "$@"; do
  [ -e "$p" ] || { echo "hostroot: $p does not exist" >&2; exit 1; }
  if [ -d "$p" ] && [ ! -L "$p" ]; then
    while IFS= read -r -d '' f; do put "$f"; done < <(find "$p" \( -type f -o -type l \) -print0)
  else
    put "$p"
  fi
done
