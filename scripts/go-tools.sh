#!/usr/bin/env bash
# Builds pinned upstream Go tools from the Go module proxy (once; cached by version under
# $BERTH_CACHE/bin/<tool>-<version>) and prints the path of the one asked for.
#
# Modules whose go.mod has replace directives (k8s.io/kubernetes, etcd, the CSI sidecars) cannot be
# `go install`ed; they are built from a throw-away module in a temp dir that requires the upstream module
# and repeats its replace directives, a relative-path replace (`k8s.io/api => ./staging/src/k8s.io/api`)
# becoming the published module at the matching version. No upstream code is copied into this repo.
# Tools of one group are built by one `go build` so they share compiled packages.
#
# Usage: scripts/go-tools.sh TOOL          build if missing, print its path
#        scripts/go-tools.sh cluster       build everything the e2e cluster needs (prints paths)
#        scripts/go-tools.sh snapshot-crds print the directory holding the VolumeSnapshot CRDs
#        scripts/go-tools.sh kwok-stages   print the directory holding kwok's stage definitions
# TOOL: csi-sanity hostpathplugin kube-apiserver kube-controller-manager kube-scheduler etcd kwok
#       csi-provisioner csi-resizer csi-snapshotter snapshot-controller helm kubectl kubeconform
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Never fetch a Go toolchain behind our back: every pinned module builds with the machine's Go.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# The control plane's compiled packages take about 9 GB of Go build cache, useless once the binaries
# are cached by version: builds here use a private cache that is deleted when this script exits.
if [ -z "${BERTH_KEEP_GOCACHE:-}" ]; then
  export GOCACHE="$BERTH_CACHE/go-build-tools.$$"
  trap 'rm -rf "$GOCACHE"' EXIT
fi

build_go_install() { # NAME VERSION PACKAGE@VERSION [LDFLAGS]
  local name=$1 version=$2 pkg=$3 ldflags=${4:-} out="$BERTH_CACHE/bin/$1-$2"
  if [ ! -x "$out" ]; then
    echo "building $name $version from the Go module proxy..." >&2
    local start=$SECONDS tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" go install -trimpath -ldflags="-s -w $ldflags" "$pkg" >&2
    mv "$tmp/$(basename "${pkg%@*}")" "$out"
    rm -rf "$tmp"
    echo "built $name in $((SECONDS - start))s" >&2
  fi
  echo "$out"
}

# upstream_replaces MODULE VERSION LOCAL_VERSION: the replace directives of MODULE@VERSION's go.mod, one
# per line, with relative-path targets turned into "<module> LOCAL_VERSION" (the published copy).
upstream_replaces() {
  local mod=$1 version=$2 localver=$3 gomod
  gomod=$(go mod download -json "$mod@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || { echo "no go.mod for $mod@$version" >&2; return 1; }
  awk -v lv="$localver" '
    { sub(/\/\/.*/, "") }
    /^replace[[:space:]]*\(/ { inblock = 1; next }
    inblock && /^[[:space:]]*\)/ { inblock = 0; next }
    /^replace[[:space:]]/ { sub(/^replace[[:space:]]+/, ""); line = $0 }
    inblock { line = $0 }
    line != "" {
      n = split(line, f, /[[:space:]]*=>[[:space:]]*/)
      split(f[1], lhs, /[[:space:]]+/); l = (lhs[1] == "" ? lhs[2] : lhs[1])
      split(f[2], rhs, /[[:space:]]+/); r = (rhs[1] == "" ? rhs[2] : rhs[1])
      if (r ~ /^\.|^\//) print l " => " l " " lv; else print f[1] " => " f[2]
      line = ""
    }' "$gomod"
}

# build_group GROUP MODULE VERSION LOCAL_VERSION LDFLAGS NAME=PACKAGE...: builds every NAME missing from
# the cache with one `go build` in a temp module that requires MODULE@VERSION.
build_group() {
  local group=$1 mod=$2 version=$3 localver=$4 ldflags=$5; shift 5
  local spec missing=0
  for spec in "$@"; do [ -x "$BERTH_CACHE/bin/${spec%%=*}-$version" ] || missing=1; done
  [ "$missing" -eq 0 ] && return 0
  local start=$SECONDS tmp pkgs=() names=()
  echo "building $group ($mod $version) from the Go module proxy..." >&2
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-gotools-$group.XXXXXX")
  {
    echo "module berth.dev/gotools/$group"
    echo
    echo "go 1.26.0"
    echo
    echo "require $mod $version"
    echo
    echo "replace ("
    upstream_replaces "$mod" "$version" "$localver" | sed 's/^/\t/'
    echo ")"
  } >"$tmp/go.mod"
  for spec in "$@"; do names+=("${spec%%=*}"); pkgs+=("${spec#*=}"); done
  (
    cd "$tmp"
    go get "${pkgs[@]/%/@$version}" >&2
    mkdir out
    go build -trimpath -ldflags="-s -w $ldflags" -o out/ "${pkgs[@]}" >&2
  ) || { rm -rf "$tmp"; echo "building $group failed" >&2; return 1; }
  local i bin
  for i in "${!names[@]}"; do
    # go names a binary after the package's last path element, skipping a major-version suffix (/v3).
    bin=$(basename "${pkgs[$i]}")
    [[ "$bin" =~ ^v[0-9]+$ ]] && bin=$(basename "$(dirname "${pkgs[$i]}")")
    mv "$tmp/out/$bin" "$BERTH_CACHE/bin/${names[$i]}-$version" || { rm -rf "$tmp"; return 1; }
  done
  rm -rf "$tmp"
  echo "built $group (${names[*]}) in $((SECONDS - start))s" >&2
}

kube_ldflags() {
  local v=$KUBERNETES_VERSION minor
  minor=$(echo "$v" | cut -d. -f2)
  local p=k8s.io/component-base/version
  echo "-X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean" \
    "-X $p.buildDate=1970-01-01T00:00:00Z"
}

build_kube() {
  build_group kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION" "$KUBERNETES_STAGING_VERSION" "$(kube_ldflags)" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler
}
build_etcd() {
  # The server module's root package is etcd's main package.
  build_group etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "" etcd=go.etcd.io/etcd/server/v3
}
build_kwok() {
  build_group kwok sigs.k8s.io/kwok "$KWOK_VERSION" "$KWOK_VERSION" "" kwok=sigs.k8s.io/kwok/cmd/kwok
}
build_provisioner() {
  build_group csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$CSI_PROVISIONER_VERSION" \
    "$CSI_PROVISIONER_VERSION" "-X main.version=$CSI_PROVISIONER_VERSION" \
    csi-provisioner=github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
}
build_resizer() {
  build_group csi-resizer github.com/kubernetes-csi/external-resizer/v2 "$CSI_RESIZER_VERSION" \
    "$CSI_RESIZER_VERSION" "-X main.version=$CSI_RESIZER_VERSION" \
    csi-resizer=github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer
}
build_snapshotter() {
  build_group csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 "$CSI_SNAPSHOTTER_VERSION" \
    "$CSI_SNAPSHOTTER_VERSION" "-X main.version=$CSI_SNAPSHOTTER_VERSION" \
    csi-snapshotter=github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    snapshot-controller=github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
}
build_kubectl() {
  # Its own group (same module and replaces as the control plane, so the Go build cache is shared):
  # adding it to build_kube would rebuild the control plane on machines that already have it.
  build_group kubectl k8s.io/kubernetes "$KUBERNETES_VERSION" "$KUBERNETES_STAGING_VERSION" "$(kube_ldflags)" \
    kubectl=k8s.io/kubernetes/cmd/kubectl
}
build_helm() {
  build_group helm helm.sh/helm/v4 "$HELM_VERSION" "$HELM_VERSION" "" helm=helm.sh/helm/v4/cmd/helm
}

# The VolumeSnapshot CRDs ship in the external-snapshotter client module (a Go module file, fetched with
# `go mod download`, never from a web site).
snapshot_crds() {
  local dir
  dir=$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$CSI_SNAPSHOTTER_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -d "$dir/config/crd" ] || { echo "no config/crd in external-snapshotter client module" >&2; return 1; }
  echo "$dir/config/crd"
}

# kwok's stage definitions (how simulated nodes and Pods change state) ship in the kwok module.
kwok_stages() {
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -d "$dir/kustomize/stage" ] || { echo "no kustomize/stage in the kwok module" >&2; return 1; }
  echo "$dir/kustomize/stage"
}

path_of() { echo "$BERTH_CACHE/bin/$1-$2"; }

case "${1:-}" in
  csi-sanity) build_go_install csi-sanity "$CSI_SANITY_VERSION" \
    "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION" ;;
  hostpathplugin) build_go_install hostpathplugin "$CSI_HOSTPATH_VERSION" \
    "github.com/kubernetes-csi/csi-driver-host-path/cmd/hostpathplugin@$CSI_HOSTPATH_VERSION" \
    "-X main.version=$CSI_HOSTPATH_VERSION" ;; # GetPluginInfo fails without a version
  kube-apiserver | kube-controller-manager | kube-scheduler) build_kube; path_of "$1" "$KUBERNETES_VERSION" ;;
  etcd) build_etcd; path_of etcd "$ETCD_VERSION" ;;
  kwok) build_kwok; path_of kwok "$KWOK_VERSION" ;;
  csi-provisioner) build_provisioner; path_of csi-provisioner "$CSI_PROVISIONER_VERSION" ;;
  csi-resizer) build_resizer; path_of csi-resizer "$CSI_RESIZER_VERSION" ;;
  csi-snapshotter | snapshot-controller) build_snapshotter; path_of "$1" "$CSI_SNAPSHOTTER_VERSION" ;;
  helm) build_helm; path_of helm "$HELM_VERSION" ;;
  kubectl) build_kubectl; path_of kubectl "$KUBERNETES_VERSION" ;;
  kubeconform) build_go_install kubeconform "$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" ;;
  snapshot-crds) snapshot_crds ;;
  kwok-stages) kwok_stages ;;
  cluster)
    # Smallest first, so a broken pin shows up before the long kubernetes build.
    start=$SECONDS
    build_etcd; build_kwok; build_provisioner; build_resizer; build_snapshotter; build_helm; build_kube
    snapshot_crds >/dev/null
    kwok_stages >/dev/null
    echo "cluster tools ready in $((SECONDS - start))s" >&2
    ;;
  *)
    echo "usage: $0 csi-sanity|hostpathplugin|kube-apiserver|kube-controller-manager|kube-scheduler|etcd|kwok|" >&2
    echo "          csi-provisioner|csi-resizer|csi-snapshotter|snapshot-controller|helm|snapshot-crds|kwok-stages|cluster" >&2
    exit 2
    ;;
esac
