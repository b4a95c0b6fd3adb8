#!/usr/bin/env bash
# Builds sluice's runtime image from a binary built on this host, with no registry access:
#   docker/build-runtime-image.sh BINARY TAG
# A static binary goes in alone; a dynamically linked one takes the libraries `ldd` lists
# (glibc 2.34+ carries its DNS and files resolvers in libc, so names resolve in the image).
set -euo pipefail
binary=${1:?usage: $0 BINARY TAG}
tag=${2:?usage: $0 BINARY TAG}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/docker/prebuilt"
find "$out" -mindepth 1 ! -name .gitignore -delete
install -m 0755 "$binary" "$out/sluice"
if ldd "$binary" >/dev/null 2>&1; then
    for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
        mkdir -p "$out$(dirname "$lib")"
        cp -L "$lib" "$out$lib"
    done
fi
docker build --quiet --target prebuilt -t "$tag" "$root" >/dev/null
echo "built $tag from $binary"
