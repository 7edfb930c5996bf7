#!/usr/bin/env bash
# Berth on this machine, in one command: a real Kubernetes control plane (kube-apiserver, etcd,
# controller-manager, scheduler) with simulated nodes (kwok), Berth installed with its Helm chart, and
# an example ReplicatedDatabase with a pinned primary and a replica on every labelled node.
#
# Simulated nodes run no containers, so the chart's Pods are scheduled and shown Running by kwok while
# the programs themselves run as processes on this machine: berth-csi and the CSI sidecars (started by
# the e2e harness), and berth-operator controller with the chart's own ServiceAccount token (so it has
# exactly the chart's RBAC). The node agent needs a real containerd and is not started here.
#
# Usage: bash scripts/demo.sh        bring everything up (again: idempotent) and show the result
#        bash scripts/demo.sh down   stop everything and delete the demo's state
# Needs root (the local volumes are real btrfs/loop mounts). The first run builds the pinned upstream
# tools from the Go module proxy and Berth with cargo: that takes a while; later runs take seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BERTH_ROOT"

state=${BERTH_DEMO_DIR:-/var/tmp/berth-demo}
ns=berth-system
app_ns=demo
port_base=${BERTH_DEMO_PORT_BASE:-27200}
cluster=(cargo run -q -p berth-e2e --bin berth-cluster -- --state-dir "$state")
op_pid_file=$state/berth-operator.pid

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh needs root: Berth's local volumes are real mounts" >&2
  exit 1
fi

stop_operator() {
  local pid
  pid=$(cat "$op_pid_file" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q berth-operator "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" && echo "stopped berth-operator (pid $pid)"
  fi
  rm -f "$op_pid_file"
}

if [ "${1:-up}" = down ]; then
  stop_operator
  "${cluster[@]}" down --purge
  exit 0
fi

apt_install btrfs-progs e2fsprogs util-linux python3
tools() {
  scripts/go-tools.sh cluster
  scripts/go-tools.sh helm >/dev/null
  scripts/go-tools.sh kubectl >/dev/null
}
step "pinned Kubernetes tools (first run: built from the Go module proxy)" tools
HELM=$(scripts/go-tools.sh helm)
KUBECTL=$(scripts/go-tools.sh kubectl)
export KUBECONFIG=$state/kubeconfig
# The pinned kubectl and helm, for the user's shell afterwards.
mkdir -p "$state/bin"
ln -sfn "$KUBECTL" "$state/bin/kubectl"
ln -sfn "$HELM" "$state/bin/helm"
kc() { "$KUBECTL" "$@"; }
helm() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

step "build berth-csi, berth-operator and the cluster harness" \
  cargo build -q -p berth-csi -p berth-operator -p berth-e2e --bins

# Four simulated nodes: node-1 for the primary, node-2 and node-3 for replicas, node-4 unlabelled
# (label it db=replica and a third replica appears).
step "local cluster up (real control plane, 4 simulated nodes)" "${cluster[@]}" up --nodes 4 \
  --port-base "$port_base" --pool-size 256M \
  --node-label node-1:db=primary --node-label node-2:db=replica --node-label node-3:db=replica

install_berth() {
  if ! helm status berth -n "$ns" >/dev/null 2>&1; then
    # The harness brings its own CSIDriver and StorageClass objects; the chart owns them from here on.
    kc delete csidriver local.csi.berth.dev shared.csi.berth.dev --ignore-not-found >/dev/null
    kc delete storageclass berth-local berth-shared --ignore-not-found >/dev/null
  fi
  # operator.replicas=0: the operator runs as a process on this machine (below), not in a
  # simulated Pod. The node agent's simulated Pods are shown, but no agent runs (no containerd).
  helm upgrade --install berth charts/berth -n "$ns" --create-namespace \
    --set operator.replicas=0 --wait --timeout 3m >/dev/null
  kc get csidrivers,storageclasses
  kc -n "$ns" get daemonsets,deployments
}
step "install Berth with the Helm chart (charts/berth)" install_berth

start_operator() {
  stop_operator
  # A kubeconfig holding the chart's ServiceAccount token: the operator gets exactly the chart's RBAC.
  local token server ca op_kc=$state/berth-operator.kubeconfig
  token=$(kc -n "$ns" create token berth-operator --duration 24h)
  server=$(kc config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kc config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  umask 077
  cat >"$op_kc" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: berth-operator, user: {token: "$token"}}]
contexts: [{name: demo, context: {cluster: demo, user: berth-operator}}]
current-context: demo
EOF
  KUBECONFIG=$op_kc POD_NAMESPACE=$ns POD_NAME=berth-operator-demo \
    nohup "${CARGO_TARGET_DIR:-target}/debug/berth-operator" controller --metrics-addr "127.0.0.1:$((port_base + 90))" \
    >"$state/logs/berth-operator.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$op_pid_file"
  sleep 2
  if [ ! -d "/proc/$pid" ]; then
    rm -f "$op_pid_file"
    echo "  berth-operator controller exited at once; ReplicatedDatabases are not reconciled in this demo."
    echo "  Its last words ($state/logs/berth-operator.log): $(tail -n 1 "$state/logs/berth-operator.log")"
    return 0
  fi
  # It works when it holds its leader-election Lease.
  local i
  for i in $(seq 30); do kc -n "$ns" get lease berth-operator-rdb >/dev/null 2>&1 && break; sleep 0.5; done
  kc -n "$ns" get lease berth-operator-rdb >/dev/null 2>&1 ||
    echo "  WARNING: berth-operator holds no Lease after 15s; its log says: $(tail -n 1 "$state/logs/berth-operator.log")"
  echo "  berth-operator controller running as pid $pid with ServiceAccount $ns/berth-operator" \
    "(log: $state/logs/berth-operator.log, metrics: http://127.0.0.1:$((port_base + 90))/metrics)"
}
step "start the operator (host process, the chart's ServiceAccount)" start_operator

apply_example() {
  kc create namespace "$app_ns" --dry-run=client -o yaml | kc apply -f - >/dev/null
  if ! kc get crd replicateddatabases.berth.dev >/dev/null 2>&1; then
    echo "  The ReplicatedDatabase CRD is not in crds/ in this tree yet (it arrives with the operator"
    echo "  branch), so examples/demo-rdb.yaml cannot be applied. A plain claim and Job show the"
    echo "  storage path instead."
    kc -n "$app_ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-demo}
spec:
  storageClassName: berth-local
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: demo-writer}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: w, image: busybox:1.36, command: ["sh", "-c", "date > /data/hello"],
                    volumeMounts: [{name: d, mountPath: /data}]}]
      volumes: [{name: d, persistentVolumeClaim: {claimName: data-demo}}]
EOF
    kc -n "$app_ns" wait --for=jsonpath='{.status.phase}'=Bound pvc/data-demo --timeout 90s >/dev/null
    kc -n "$app_ns" wait --for=condition=complete job/demo-writer --timeout 60s >/dev/null
    return 0
  fi
  kc -n "$app_ns" apply -f examples/demo-rdb.yaml
  # Ready members: the primary on node-1 and one replica on each of node-2 and node-3.
  local i ready=""
  for i in $(seq 90); do
    ready=$(kc -n "$app_ns" get rdb demo-db -o jsonpath='{.status.readyMembers}' 2>/dev/null || true)
    [ "${ready:-0}" -ge 3 ] 2>/dev/null && break
    sleep 1
  done
  echo "  demo-db: ${ready:-0} ready members after ${i}s"
}
step "apply the example database (examples/demo-rdb.yaml)" apply_example

echo
if kc get crd replicateddatabases.berth.dev >/dev/null 2>&1; then
  echo "\$ kubectl get rdb,pods,pvc -n $app_ns -o wide"
  kc get rdb,pods,pvc -n "$app_ns" -o wide
else
  echo "\$ kubectl get pods,pvc -n $app_ns -o wide      (no rdb: the CRD is not in this tree yet)"
  kc get pods,pvc -n "$app_ns" -o wide
fi
echo
echo "Berth is running. Try (kubectl and helm are the pinned versions the demo used):"
echo "  export KUBECONFIG=$KUBECONFIG PATH=$state/bin:\$PATH"
echo "  kubectl label node node-4 db=replica      # a replica appears on node-4"
echo "  kubectl get csistoragecapacities -n $ns   # what each node can still hold"
echo "  helm test berth -n $ns                    # provision a volume through the chart's test"
echo "  bash scripts/demo.sh down                  # stop everything and delete $state"
