#!/usr/bin/env bash
# Assembles the root filesystem of Berth's image in DIR: the two static Berth binaries, the
# filesystem tools berth-csi runs (btrfs, mkfs.ext4/e2fsck/resize2fs, mkfs.xfs/xfs_growfs, fsfreeze,
# cp; mounts and loop devices are syscalls) with exactly the shared libraries they load, and a
# passwd/group naming the non-root user. Nothing else: no shell, no package manager.
# Used by both the Dockerfile's final stage and scripts/build-image.sh (no Docker engine), so the
# two paths produce the same files.
# Usage: image/rootfs.sh DIR BERTH_CSI BERTH_OPERATOR
set -euo pipefail
dir=$1 csi=$2 operator=$3

# The tools berth-csi executes (csi/src: every Command it builds), resolved on this (Debian) system.
tools=(btrfs mkfs.ext4 e2fsck resize2fs mkfs.xfs xfs_growfs fsfreeze cp)

mkdir -p "$dir"/usr/local/bin "$dir"/usr/bin "$dir"/etc "$dir"/tmp "$dir"/var/lib/berth
chmod 1777 "$dir"/tmp
for bin in "$csi" "$operator"; do
  # Refuse a dynamically linked Berth binary: the image has no libc for it.
  if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
    echo "$bin is dynamically linked; build it for x86_64-unknown-linux-musl" >&2
    exit 1
  fi
  install -m 0755 "$bin" "$dir/usr/local/bin/$(basename "$bin")"
done

copy_with_libs() { # copies FILE (resolving symlinks) and every library ldd lists for it
  local src=$1 dst=$2 lib
  install -D -m 0755 "$(readlink -f "$src")" "$dir$dst"
  while read -r lib; do
    [ -n "$lib" ] || continue
    [ -e "$dir$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
  done < <(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' || true)
}
for t in "${tools[@]}"; do
  path=$(command -v "$t" || true)
  [ -n "$path" ] || { echo "tool $t not found (install btrfs-progs e2fsprogs xfsprogs util-linux coreutils)" >&2; exit 1; }
  copy_with_libs "$path" "/usr/bin/$t"
done

cat >"$dir/etc/passwd" <<'PW'
root:x:0:0:root:/:/sbin/nologin
berth:x:65532:65532:berth:/:/sbin/nologin
PW
cat >"$dir/etc/group" <<'GR'
root:x:0:
berth:x:65532:
GR
# mkfs and mount read these; empty files keep them quiet.
: >"$dir/etc/fstab"
: >"$dir/etc/mtab"
