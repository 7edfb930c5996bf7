#!/usr/bin/env bash
# The CSI benchmark (issue 2): full volume cycles per second over the gRPC socket — CreateVolume,
# [NodeStageVolume], NodePublishVolume, NodeUnpublishVolume, [NodeUnstageVolume], DeleteVolume — for
# berth-csi local/dir, local/loop and shared, and the same workload against csi-driver-host-path's
# hostpathplugin, all on one btrfs filesystem (a loop-mounted image with quotas on, where berth's dir
# backend enforces capacity with qgroups). Prints cycles/s, the berth/hostpath ratios, per-RPC
# latencies and berth-csi's idle resident memory, and checks the targets:
#   local/dir >= 2x hostpathplugin, local/loop >= 0.5x, berth-csi idle RSS < 16 MiB.
#
# Usage (root):  bash scripts/bench-csi.sh
# Knobs (environment): ROUNDS=3 CYCLES=100 WARMUP=5 CONCURRENCY=1 CAPACITY=64Mi POOL_SIZE=8G
#   HOSTPATHPLUGIN=/path (a prebuilt peer instead of scripts/go-tools.sh hostpathplugin)
# Exit status: 0 all targets met, 3 a target missed, 1 a run failed (the others still run and print).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BERTH_ROOT"

ROUNDS=${ROUNDS:-3}
CYCLES=${CYCLES:-100}
WARMUP=${WARMUP:-5}
CONCURRENCY=${CONCURRENCY:-1}
CAPACITY=${CAPACITY:-64Mi}
POOL_SIZE=${POOL_SIZE:-8G}
NODE=bench-node

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-csi.sh needs root: plugins mount volumes, attach loop devices and make a btrfs pool" >&2
  exit 1
fi

step "install packages" apt_install btrfs-progs e2fsprogs xfsprogs util-linux jq
step "build berth-csi and csi-bench (release)" cargo build --release -j2 -p berth-csi -p csi-bench
BERTH=$BERTH_ROOT/target/release/berth-csi
BENCH=$BERTH_ROOT/target/release/csi-bench
if [ -z "${HOSTPATHPLUGIN:-}" ] && ! HOSTPATHPLUGIN=$(scripts/go-tools.sh hostpathplugin); then
  echo "hostpathplugin $CSI_HOSTPATH_VERSION could not be built from the Go module proxy;" \
    "set HOSTPATHPLUGIN=/path/to/hostpathplugin to use one built elsewhere" >&2
  exit 1
fi
HOSTPATH=$HOSTPATHPLUGIN

WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
POOL_LOOP=""
PLUGIN_PID=""

# Everything below $WORK goes on exit, whatever happened: plugins, their mounts, loop devices, the pool.
cleanup() {
  set +e
  stop_plugin
  # Innermost mounts first.
  awk -v w="$WORK" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  losetup -a 2>/dev/null | grep -F "$WORK" | cut -d: -f1 | while read -r dev; do
    losetup -d "$dev"
  done
  [ -n "$POOL_LOOP" ] && losetup -d "$POOL_LOOP" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

make_pool() {
  truncate -s "$POOL_SIZE" "$WORK/pool.img"
  mkfs.btrfs -q "$WORK/pool.img"
  POOL_LOOP=$(losetup -f --show "$WORK/pool.img")
  mkdir -p "$WORK/btrfs"
  mount "$POOL_LOOP" "$WORK/btrfs"
  btrfs quota enable "$WORK/btrfs"
  mkdir -p "$WORK/btrfs/hostpath" "$WORK/btrfs/berth-local" "$WORK/btrfs/berth-shared"
}
step "btrfs pool ($POOL_SIZE image on a loop device, quotas on)" make_pool

# start_plugin NAME SOCKET CMD...: starts a plugin in the background and waits for its socket.
start_plugin() {
  local name=$1 sock=$2; shift 2
  rm -f "$sock"
  "$@" >"$WORK/$name.log" 2>&1 &
  PLUGIN_PID=$!
  for _ in $(seq 300); do
    [ -S "$sock" ] && return 0
    kill -0 "$PLUGIN_PID" 2>/dev/null || { echo "$name exited:"; tail -20 "$WORK/$name.log"; return 1; }
    sleep 0.1
  done
  echo "$name: no socket after 30 s"; tail -20 "$WORK/$name.log"; return 1
}

stop_plugin() {
  if [ -n "$PLUGIN_PID" ]; then
    kill "$PLUGIN_PID" 2>/dev/null || true
    wait "$PLUGIN_PID" 2>/dev/null || true  # its status is 143 (SIGTERM)
    PLUGIN_PID=""
  fi
}

# bench LABEL SOCKET [csi-bench args...]: the workload; the JSON line lands in $WORK/LABEL.json.
# A failed run is recorded (its row says FAILED) and the benchmark goes on with the next one.
FAILED_RUNS=()
bench() {
  local label=$1 sock=$2; shift 2
  mkdir -p "$WORK/staging/$label" "$WORK/target/$label"
  if ! "$BENCH" --endpoint "unix://$sock" --label "$label" --pid "$PLUGIN_PID" \
    --cycles "$CYCLES" --warmup "$WARMUP" --concurrency "$CONCURRENCY" --capacity "$CAPACITY" \
    --staging-dir "$WORK/staging/$label" --target-dir "$WORK/target/$label" "$@" \
    >"$WORK/$label.json"; then
    FAILED_RUNS+=("$label")
    # csi-bench writes its report even when a cycle fails; not when it never got to run.
    [ -s "$WORK/$label.json" ] ||
      echo '{"cycles_per_sec":0,"rss":{"idle_kib":0,"after_kib":0},"error":"no report"}' >"$WORK/$label.json"
  fi
  return 0
}

# One round: every plugin started fresh, every workload once. Rounds interleave the plugins so a
# burst of load on this shared machine does not land on one side only; the table shows medians.
round() {
  local r=$1 sock
  sock=$WORK/hostpath.sock
  step "round $r: start hostpathplugin" start_plugin hostpath "$sock" \
    "$HOSTPATH" --nodeid "$NODE" --endpoint "unix://$sock" --statedir "$WORK/btrfs/hostpath"
  step "round $r: hostpath mount" bench "hostpath-mount.$r" "$sock"
  step "round $r: hostpath block" bench "hostpath-block.$r" "$sock" --volume-mode block
  stop_plugin

  sock=$WORK/berth-local.sock
  step "round $r: start berth-csi --driver local" start_plugin berth-local "$sock" \
    "$BERTH" --driver local --mode all --node-id "$NODE" --endpoint "unix://$sock" \
    --pool "$WORK/btrfs/berth-local"
  step "round $r: berth local/dir" bench "berth-local-dir.$r" "$sock" -p backend=dir
  step "round $r: berth local/loop" bench "berth-local-loop.$r" "$sock" -p backend=loop -p fsType=ext4
  step "round $r: berth local/loop block" bench "berth-local-loop-block.$r" "$sock" \
    -p backend=loop --volume-mode block
  stop_plugin

  sock=$WORK/berth-shared.sock
  step "round $r: start berth-csi --driver shared" start_plugin berth-shared "$sock" \
    "$BERTH" --driver shared --mode all --node-id "$NODE" --endpoint "unix://$sock" \
    --shared-pool "bench=$WORK/btrfs/berth-shared"
  step "round $r: berth shared" bench "berth-shared.$r" "$sock" -p pool=bench
  stop_plugin
}
for r in $(seq "$ROUNDS"); do round "$r"; done

# median RUN FIELD: the median over the rounds of a jq expression on RUN's JSON lines.
median() {
  local vals
  vals=$(for r in $(seq "$ROUNDS"); do jq -r "$2" "$WORK/$1.$r.json"; done | sort -g)
  echo "$vals" | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
spread() { # RUN: "min-max" of cycles/s over the rounds
  for r in $(seq "$ROUNDS"); do jq -r .cycles_per_sec "$WORK/$1.$r.json"; done | sort -g |
    awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f", lo, hi }'
}
ratio() { echo "$1 $2" | awk '{ printf "%.2f", ($2 > 0 ? $1 / $2 : 0) }'; }
meets() { echo "$1 $2 $3" | awk '{ ok = ($2 == ">=" ? $1 >= $3 : $1 < $3); print (ok ? "ok" : "MISSED") }'; }

HP=$(median hostpath-mount .cycles_per_sec)
HPB=$(median hostpath-block .cycles_per_sec)
missed=0
echo
echo "CSI benchmark: $ROUNDS rounds of $CYCLES cycles (+$WARMUP warm-up), concurrency $CONCURRENCY," \
  "$CAPACITY volumes, one btrfs pool on a loop device; medians over rounds (min-max in brackets)"
printf '%-20s %20s %20s %7s %9s %s\n' workload "berth cycles/s" "hostpath cycles/s" ratio target result
row() { # LABEL BERTH_RUN HOSTPATH_RUN TARGET
  local b h r verdict=""
  b=$(median "$2" .cycles_per_sec); h=$(median "$3" .cycles_per_sec); r=$(ratio "$b" "$h")
  if [ -n "$4" ]; then
    verdict=$(meets "$r" ">=" "$4"); [ "$verdict" = ok ] || missed=1
  fi
  if has_failed "$2" || has_failed "$3"; then verdict="FAILED"; missed=1; fi
  printf '%-20s %8.1f %11s %8.1f %11s %6sx %9s %s\n' "$1" "$b" "($(spread "$2"))" "$h" "($(spread "$3"))" \
    "$r" "${4:+>= ${4}x}" "$verdict"
}
has_failed() { # RUN: did any round of RUN fail?
  local f
  for f in "${FAILED_RUNS[@]}"; do [ "${f%.*}" = "$1" ] && return 0; done
  return 1
}
row local/dir berth-local-dir hostpath-mount 2
row local/loop berth-local-loop hostpath-mount 0.5
row shared berth-shared hostpath-mount ""
row "local/loop block" berth-local-loop-block hostpath-block ""
IDLE=$(median berth-local-dir '.rss.idle_kib / 1024')
IDLE_SHARED=$(median berth-shared '.rss.idle_kib / 1024')
AFTER=$(median berth-local-loop-block '.rss.after_kib / 1024')
verdict=$(meets "$IDLE" "<" 16); [ "$verdict" = ok ] || missed=1
printf 'berth-csi idle RSS: local %.1f MiB, shared %.1f MiB (target < 16 MiB: %s); local after its runs %.1f MiB\n' \
  "$IDLE" "$IDLE_SHARED" "$verdict" "$AFTER"
printf 'hostpathplugin idle RSS: %.1f MiB\n' "$(median hostpath-mount '.rss.idle_kib / 1024')"
echo "(block row: berth loop block vs hostpath block; per-RPC p50/p95 are in each run's summary above)"
echo "CPU per cycle of the plugin and the tools it runs (ms; less sensitive to other load than cycles/s;"
echo "kernel work in other threads, such as filesystem commits, is not included):"
for run in hostpath-mount hostpath-block berth-local-dir berth-local-loop berth-local-loop-block berth-shared; do
  printf '  %-24s %6.2f\n' "$run" "$(median "$run" '.rss.cpu_ms_per_cycle // 0')"
done
echo
echo "JSON lines:"
for r in $(seq "$ROUNDS"); do
  for f in hostpath-mount hostpath-block berth-local-dir berth-local-loop berth-local-loop-block berth-shared; do
    cat "$WORK/$f.$r.json"
  done
done
if [ ${#FAILED_RUNS[@]} -gt 0 ]; then
  echo "FAILED runs (their errors are in the JSON lines and the summaries above): ${FAILED_RUNS[*]}"
  exit 1
fi
[ "$missed" -eq 0 ] || exit 3
