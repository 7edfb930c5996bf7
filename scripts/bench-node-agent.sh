#!/usr/bin/env bash
# Node agent benchmark (issue 5), one command:  bash scripts/bench-node-agent.sh
#  1. the GC plan (pure function) for 10,000 images and 5,000 containers, synthetic inputs (target < 50 ms);
#  2. one real GC pass over 200 images imported into a private containerd (built locally, nothing pulled);
#  3. the agent's idle resident memory (target < 20 MiB): the agent runs its reconcile loop against a
#     kube-apiserver when KUBECONFIG points at one (e.g. the e2e harness's), else only the peak RSS of the
#     one-shot pass is reported, labelled as such.
# Every process started here is killed by PID on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BERTH_ROOT"
[ "$(id -u)" -eq 0 ] || { echo "needs root (containerd mounts overlay filesystems)" >&2; exit 1; }

apt_install containerd runc skopeo umoci busybox-static time
cargo build --release -q -p berth-operator --bin berth-operator --example bench_gc_plan
BIN=$BERTH_ROOT/target/release/berth-operator

echo "== 1. plan computation"
"$BERTH_ROOT/target/release/examples/bench_gc_plan"

D=$(mktemp -d /tmp/berth-node-agent-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  grep -o " $D[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  rm -rf "$D" || true
}
trap cleanup EXIT

echo "== 2. one real GC pass over 200 imported images"
mkdir -p "$D/certs.d"
cat > "$D/config.toml" <<TOML
version = 2
root = "$D/root"
state = "$D/state"
[grpc]
  address = "$D/containerd.sock"
[ttrpc]
  address = "$D/containerd.sock.ttrpc"
[debug]
  address = "$D/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "berth.test/bench:pause"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$D/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
TOML
containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do ctr -a "$D/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done

start=$SECONDS
L=$D/layout
umoci init --layout "$L"
umoci new --image "$L:base"
umoci insert --image "$L:base" /bin/busybox /bin/busybox
umoci config --image "$L:base" --config.entrypoint /bin/busybox --config.cmd sleep --config.cmd 100000
for i in $(seq -w 1 200); do
  echo "$i" >"$D/id"
  umoci tag --image "$L:base" "v$i"
  umoci insert --image "$L:v$i" "$D/id" /id
done
umoci rm --image "$L:base"
tar -C "$L" -cf "$D/images.tar" .
ctr -a "$D/containerd.sock" -n k8s.io images import --base-name berth.test/bench "$D/images.tar" >/dev/null
before=$(ctr -a "$D/containerd.sock" -n k8s.io images ls -q | grep -vc '^sha256:')
echo "built and imported $before images in $((SECONDS - start))s"

cat > "$D/policy.yaml" <<YAML
apiVersion: berth.dev/v1alpha1
kind: ImageCachePolicy
metadata: {name: bench}
spec:
  prune: {dangling: true, keepLatestPerRepository: 1}
YAML
t0=$(date +%s%N)
out=$(/usr/bin/env time -f '%M' -o "$D/rss" "$BIN" node-agent --cri-socket "$D/containerd.sock" --state-dir "$D/agent" --once-policy "$D/policy.yaml" 2>"$D/agent.log")
t1=$(date +%s%N)
after=$(ctr -a "$D/containerd.sock" -n k8s.io images ls -q | grep -vc '^sha256:' || true)
echo "GC pass (keepLatestPerRepository: 1): $before -> $after images in containerd; wall $(((t1 - t0) / 1000000)) ms including process start; pass $(echo "$out" | sed -n 's/.*"passMillis": \([0-9]*\).*/\1/p') ms"
echo "one-shot agent peak RSS: $(( $(cat "$D/rss") / 1024 )) MiB"

echo "== 3. idle resident memory"
if [ -n "${KUBECONFIG:-}" ] && [ -f "$KUBECONFIG" ]; then
  "$BIN" node-agent --node-name bench-node --cri-socket "$D/containerd.sock" --state-dir "$D/agent" >"$D/agent-loop.log" 2>&1 &
  APID=$!
  PIDS+=("$APID")
  sleep 15
  if [ -d "/proc/$APID" ]; then
    echo "agent idle RSS after 15 s: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$APID/status")"
  else
    echo "agent exited: $(tail -3 "$D/agent-loop.log")"
  fi
else
  echo "KUBECONFIG not set: idle RSS of the reconcile loop not measured (the one-shot peak above is an upper bound of the CRI side only)"
fi
