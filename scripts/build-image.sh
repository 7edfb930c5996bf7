#!/usr/bin/env bash
# Builds Berth's container image without a Docker engine: the same files as the Dockerfile (static
# musl binaries + image/rootfs.sh), assembled with umoci into an OCI layout and copied with skopeo into
# a docker-archive tarball that `ctr images import` / `docker load` accept. Prints the image's size.
# Usage: scripts/build-image.sh [OUT_DIR]    (default: target/image)
# Output: OUT_DIR/oci (OCI layout, tag $tag), OUT_DIR/berth-image.tar (docker-archive, named $ref)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BERTH_ROOT"

out=${1:-$BERTH_ROOT/target/image}
target=x86_64-unknown-linux-musl
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
repo=${BERTH_IMAGE_REPO:-ghcr.io/berth-dev/berth}
tag=${BERTH_IMAGE_TAG:-$version}
ref="$repo:$tag"

# musl-tools: ring (rustls) compiles C for the musl target with musl-gcc.
apt_install musl-tools umoci skopeo btrfs-progs e2fsprogs xfsprogs util-linux
if ! rustup target list --installed | grep -qx "$target"; then
  echo "adding the Rust standard library for $target (rustup)"
  rustup target add "$target"
fi

# Static binaries: musl first (the Dockerfile's target). Should the musl build fail (code that only
# compiles against glibc's types), fall back to glibc linked statically (+crt-static: no libc needed
# in the image either) and say so loudly: the image is then not the Dockerfile's.
build() { # TARGET (musl links statically by default; glibc needs +crt-static)
  local flags=${RUSTFLAGS:-}
  [[ "$1" == *-gnu ]] && flags="$flags -C target-feature=+crt-static"
  RUSTFLAGS=$flags cargo build --release --locked --target "$1" -p berth-csi -p berth-operator
}
start=$SECONDS
echo "building berth-csi and berth-operator for $target (release)"
if ! build "$target"; then
  echo "WARNING: the $target build failed (errors above); building for x86_64-unknown-linux-gnu with" \
    "static glibc instead. The Dockerfile (musl) will fail the same way until the error is fixed." >&2
  target=x86_64-unknown-linux-gnu
  build "$target"
fi
echo "built for $target in $((SECONDS - start))s"
bin=target/$target/release
rm -rf "$out"
mkdir -p "$out"
rootfs=$out/rootfs
image/rootfs.sh "$rootfs" "$bin/berth-csi" "$bin/berth-operator"

umoci init --layout "$out/oci"
umoci new --image "$out/oci:$tag"
# One layer holding the whole rootfs; owned by root like a Dockerfile COPY.
umoci insert --image "$out/oci:$tag" "$rootfs" /
umoci config --image "$out/oci:$tag" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/berth-csi \
  --config.workingdir / \
  --config.label org.opencontainers.image.title=berth \
  --config.label "org.opencontainers.image.version=$version" \
  --os linux --architecture amd64
umoci gc --layout "$out/oci"
skopeo copy --quiet "oci:$out/oci:$tag" "docker-archive:$out/berth-image.tar:$ref"

# Size: the compressed layer (what a registry stores and a node downloads) and the unpacked files.
layer_bytes=$(find "$out/oci/blobs/sha256" -type f -size +100k -printf '%s\n' | sort -n | tail -1)
rootfs_bytes=$(du -sb "$rootfs" | cut -f1)
echo "image $ref: compressed layer $((layer_bytes / 1024)) KiB, unpacked $((rootfs_bytes / 1024)) KiB"
echo "  berth-csi $(($(stat -c %s "$bin/berth-csi") / 1024)) KiB, berth-operator $(($(stat -c %s "$bin/berth-operator") / 1024)) KiB (static, $target)"
echo "  OCI layout: $out/oci:$tag   docker-archive: $out/berth-image.tar"
rm -rf "$rootfs"
