#!/usr/bin/env bash
# A bare etcd + kube-apiserver on 127.0.0.1 (no scheduler, no nodes) for the ReplicatedDatabase CRD tests:
# enough to check that the API server accepts the CRD and refuses bad objects with the right messages.
# Usage: scripts/rdb-apiserver.sh up DIR PORT_BASE   (writes DIR/kubeconfig, DIR/pids)
#        scripts/rdb-apiserver.sh down DIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The pinned binary from scripts/go-tools.sh (built and cached by the e2e harness's pins).
tool() {
  "$BERTH_ROOT/scripts/go-tools.sh" "$1"
}

cmd=$1 dir=$2
case "$cmd" in
  up)
    base=$3
    etcd=$(tool etcd)
    apiserver=$(tool kube-apiserver)
    mkdir -p "$dir/certs" "$dir/etcd"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    token=$(openssl rand -hex 16)
    echo "$token,berth-test,berth-test,system:masters" > "$dir/tokens.csv"
    "$etcd" --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$base" \
      --advertise-client-urls "http://127.0.0.1:$base" --listen-peer-urls "http://127.0.0.1:$((base + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 1))" \
      --initial-cluster "default=http://127.0.0.1:$((base + 1))" >"$dir/etcd.log" 2>&1 &
    echo $! > "$dir/pids"
    "$apiserver" --etcd-servers "http://127.0.0.1:$base" --bind-address 127.0.0.1 \
      --secure-port "$((base + 2))" --cert-dir "$dir/certs" --token-auth-file "$dir/tokens.csv" \
      --authorization-mode AlwaysAllow --service-account-issuer https://kubernetes.default.svc \
      --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
      --service-cluster-ip-range 10.97.0.0/16 >"$dir/apiserver.log" 2>&1 &
    echo $! >> "$dir/pids"
    cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: t, cluster: {server: "https://127.0.0.1:$((base + 2))", insecure-skip-tls-verify: true}}]
users: [{name: t, user: {token: "$token"}}]
contexts: [{name: t, context: {cluster: t, user: t}}]
current-context: t
KC
    for _ in $(seq 1 120); do
      if curl -fsk -H "Authorization: Bearer $token" "https://127.0.0.1:$((base + 2))/readyz" >/dev/null 2>&1; then
        echo "kube-apiserver ready on 127.0.0.1:$((base + 2))"; exit 0
      fi
      sleep 0.5
    done
    echo "kube-apiserver not ready after 60s; last log lines:" >&2
    tail -n 20 "$dir/apiserver.log" >&2
    exit 1
    ;;
  down)
    if [ -f "$dir/pids" ]; then
      while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
      while read -r pid; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      done < "$dir/pids"
    fi
    rm -rf "$dir"
    ;;
esac
