# Berth's image: berth-csi and berth-operator as static (musl) binaries, plus only the filesystem
# tools berth-csi runs and the libraries they load (image/rootfs.sh picks them). No shell.
#   docker build -t berth:dev .
#   docker build --build-arg RUST_TARGET=x86_64-unknown-linux-gnu -t berth:dev .   (static glibc)
# Without a Docker engine, scripts/build-image.sh builds the same image as an OCI archive.
# The default user is non-root (65532); the chart runs the CSI plugins and the node agent as root,
# which mounts, loop devices and containerd's socket require.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
# x86_64-unknown-linux-musl, or x86_64-unknown-linux-gnu for glibc linked statically (+crt-static):
# either way the final image needs no libc for Berth's own binaries.
ARG RUST_TARGET=x86_64-unknown-linux-musl

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG RUST_TARGET
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$RUST_TARGET"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$RUST_TARGET" in *-gnu) export RUSTFLAGS="-C target-feature=+crt-static" ;; esac \
 && cargo build --release --locked --target "$RUST_TARGET" -p berth-csi -p berth-operator \
 && mkdir -p /out \
 && cp "target/$RUST_TARGET/release/berth-csi" "target/$RUST_TARGET/release/berth-operator" /out/

# The tools come from the same Debian release scripts/build-image.sh takes them from.
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends btrfs-progs e2fsprogs xfsprogs util-linux coreutils \
 && rm -rf /var/lib/apt/lists/*
COPY image/rootfs.sh /rootfs.sh
COPY --from=build /out/ /out/
RUN /rootfs.sh /rootfs /out/berth-csi /out/berth-operator

FROM scratch
COPY --from=rootfs /rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/berth-csi"]
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="Berth CSI drivers, operator and node agent"
