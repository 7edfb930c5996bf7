#!/usr/bin/env bash
# The Helm chart and the image, checked for real:
#  - helm lint --strict (default, minimal and full values); values.schema.json and the chart's own
#    checks refuse bad values with messages naming the key; sidecar image tags match versions.env;
#    the rendered CRDs are exactly crds/*.yaml.
#  - helm template validated by kubeconform -strict against JSON schemas generated from the e2e
#    cluster's own kube-apiserver (/openapi/v3, so the pinned Kubernetes version), CRDs included;
#    examples/ validated against the installed CRDs.
#  - helm install into the e2e cluster (real kube-apiserver; kwok nodes, so containers do not run:
#    the harness runs berth-csi and the sidecars as host processes); every object is accepted;
#    each ServiceAccount can do what its component needs and no more (kubectl auth can-i --as);
#    helm test provisions a berth-local volume through the real driver; helm uninstall leaves
#    users' claims, PVs, data and custom resources; a second install adopts the kept CRDs.
#  - the image: scripts/build-image.sh (static musl binaries, OCI layout + docker-archive), imported
#    into a private containerd and run with ctr. BERTH_SKIP_IMAGE=1 skips this part (says so).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BERTH_ROOT"

apt_install python3 python3-yaml btrfs-progs e2fsprogs util-linux
work=$(mktemp -d /tmp/berth-helm.XXXXXX)
export BERTH_E2E_STATE_DIR=$work/cluster
chart=charts/berth ns=berth-system release=berth
cluster=(cargo run -q -p berth-e2e --bin berth-cluster --)
ctd_pid=""

teardown() {
  local rc=$?
  [ "$rc" -ne 0 ] && [ -n "$current" ] && echo "<== $current: FAILED (exit $rc)"
  if [ "$rc" -ne 0 ] && [ -d "$BERTH_E2E_STATE_DIR/logs" ]; then
    echo "--- helm stage failed; last lines of the provisioner logs:"
    for f in "$BERTH_E2E_STATE_DIR"/logs/provisioner-*.log "$BERTH_E2E_STATE_DIR"/logs/csi-local-*.log; do
      [ -f "$f" ] && { echo "--- $f"; tail -n 8 "$f"; }
    done
  fi
  set +e  # clean up everything, whatever fails on the way
  if [ -n "$ctd_pid" ] && [ -d "/proc/$ctd_pid" ]; then kill "$ctd_pid" 2>/dev/null; sleep 1; fi
  # containerd's shims (if a ctr run was interrupted) and mounts under our temp dir.
  while IFS= read -r pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done < <(find "$work" -name '*.pid' -path '*containerd*' 2>/dev/null)
  grep -o " $work/containerd[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  "${cluster[@]}" down --purge >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT

HELM=$(scripts/go-tools.sh helm)
KUBECTL=$(scripts/go-tools.sh kubectl)
KUBECONFORM=$(scripts/go-tools.sh kubeconform)
export HELM KUBECTL KUBECONFORM
helm() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }
kc() { "$KUBECTL" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" "$@"; }
checks=0 current=""
pass() { checks=$((checks + 1)); echo "  ok: $*"; }
fail() { echo "  FAIL: $*" >&2; exit 1; }
# hstep NAME FN: like lib.sh's step, but runs FN outside any `if`, so `set -e` stops at the first
# failing command inside it (the EXIT trap then names the step).
hstep() {
  current=$1; shift
  local start=$SECONDS
  echo "==> $current"
  "$@"
  echo "<== $current: ok in $((SECONDS - start))s"
  current=""
}

tools() { for t in helm kubectl kubeconform; do scripts/go-tools.sh "$t"; done; }
hstep "tools: helm, kubectl, kubeconform (built once from the Go module proxy, cached by version)" tools

# ---------------------------------------------------------------- offline checks
lint() {
  helm lint --strict "$chart"
  for f in "$chart"/ci/*-values.yaml; do helm lint --strict "$chart" -f "$f"; done
  pass "helm lint --strict: default values and $(ls "$chart"/ci/*-values.yaml | wc -l) ci values files"
}

# Each bad value must be refused, with a message naming the key (second field: expected substring).
refusals() {
  local cases=(
    "node.poolPath=relative/dir|/node/poolPath"
    "storageClasses.local.parameters.backend=zfs|/storageClasses/local/parameters/backend"
    "storageClasses.local.parameters.fsType=btrfs|/storageClasses/local/parameters/fsType"
    "operator.replicas=-1|/operator/replicas"
    "operator.metricsPort=70000|/operator/metricsPort"
    "image.pullPolicy=Sometimes|/image/pullPolicy"
    "image.digest=sha256:xyz|/image/digest"
    "sharedPools[0].name=Bad_Name|/sharedPools/0/name"
    "nodee.poolPath=/x|additional properties 'nodee'"
    "node.capacityPollInterval=soon|/node/capacityPollInterval"
    "nodeAgent.registryCASecrets[0].name=ca|/nodeAgent/registryCASecrets/0"
    "storageClasses.shared.parameters.mode=rwx|/storageClasses/shared/parameters/mode"
    "storageClasses.shared.parameters.onDelete=shred|/storageClasses/shared/parameters/onDelete"
    "storageClasses.shared.parameters.requiredCapabilities=hardlinks\\,teleport|requiredCapabilities"
    "storageClasses.shared.reclaimPolicy=Recycle|/storageClasses/shared/reclaimPolicy"
    "storageClasses.shared.parameters.pool=fast|storageClasses.shared.parameters.pool is \"fast\", which is not one of sharedPools"
    "node.sharedHealthPort=9808|node.localHealthPort and node.sharedHealthPort are both 9808"
    "storageClasses.local.parameters.fsType=xfs|storageClasses.local.parameters.fsType applies only to backend: loop"
    "sharedPools=null|sharedPools"
    "localResizer.enabled=false|storageClasses.local.allowVolumeExpansion is true but localResizer.enabled is false"
    "localResizer.healthPort=0|/localResizer/healthPort"
  )
  local c set want out
  for c in "${cases[@]}"; do
    set=${c%%|*} want=${c#*|}
    if out=$(helm template "$release" "$chart" --set "$set" 2>&1); then
      fail "--set $set was accepted"
    fi
    grep -qF -- "$want" <<<"$out" || fail "--set $set: refused, but the message does not mention '$want': $out"
  done
  pass "${#cases[@]} bad values refused, each message naming the key"
  # And a good non-default combination renders.
  helm template "$release" "$chart" --set storageClasses.local.parameters.backend=loop \
    --set storageClasses.local.parameters.fsType=xfs --set storageClasses.shared.parameters.mode=0770 >/dev/null
  pass "a valid non-default combination renders"
}

pins() {
  local name var want got
  for pair in provisioner:CSI_PROVISIONER_VERSION resizer:CSI_RESIZER_VERSION snapshotter:CSI_SNAPSHOTTER_VERSION \
    nodeDriverRegistrar:CSI_NODE_DRIVER_REGISTRAR_VERSION livenessProbe:CSI_LIVENESSPROBE_VERSION; do
    name=${pair%%:*} var=${pair#*:} want=${!var}
    got=$(python3 -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["sidecars"][sys.argv[2]]["tag"])' \
      "$chart/values.yaml" "$name")
    [ "$got" = "$want" ] || fail "values.yaml sidecars.$name.tag is $got but scripts/versions.env $var is $want"
  done
  pass "sidecar image tags in values.yaml match scripts/versions.env"
  # The image the chart runs by default is the one scripts/build-image.sh tags: the workspace version.
  local app crate
  app=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$chart/Chart.yaml")
  crate=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
  [ "$app" = "$crate" ] || fail "Chart.yaml appVersion $app differs from the workspace version $crate"
  pass "Chart.yaml appVersion $app is the workspace version (the image tag scripts/build-image.sh builds)"
}

crds_match() {
  local n
  n=$(find crds -maxdepth 1 -name '*.yaml' | wc -l)
  if [ "$n" -eq 0 ]; then
    echo "  SKIPPED crds_match: crds/ holds no CRD files in this tree (they arrive with the operator branches)"
    return 0
  fi
  helm template "$release" "$chart" --show-only templates/crds.yaml >"$work/crds-rendered.yaml"
  python3 - "$work/crds-rendered.yaml" crds/*.yaml <<'PY'
import sys, yaml
rendered = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
files = {}
for f in sys.argv[2:]:
    for d in yaml.safe_load_all(open(f)):
        if d and d.get("kind") == "CustomResourceDefinition":
            files[d["metadata"]["name"]] = d
assert set(rendered) == set(files), f"rendered {sorted(rendered)} but crds/ has {sorted(files)}"
for name, want in files.items():
    got = rendered[name]
    assert got["spec"] == want["spec"], f"{name}: rendered spec differs from crds/"
    assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", f"{name}: no keep policy"
print(f"  ok: {len(files)} CRDs rendered exactly as in crds/ (spec compared after parsing), each kept on uninstall")
PY
  checks=$((checks + 1))
}

hstep "helm lint" lint
hstep "values refused with clear messages" refusals
hstep "sidecar pins" pins
hstep "CRDs rendered from crds/" crds_match

# ---------------------------------------------------------------- the cluster
hstep "cargo build (berth-csi, berth-cluster)" cargo build -q -p berth-csi -p berth-e2e --bins
hstep "cluster up (3 simulated nodes)" "${cluster[@]}" up --nodes 3 --port-base 26830 \
  --node-label node-1:db=primary --node-label node-2:db=replica --node-label node-3:db=replica

kubeconform_all() {
  python3 scripts/kube-jsonschemas.py "$work/schemas" "$KUBECTL" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig"
  local values out
  for values in "" "$chart"/ci/*-values.yaml; do
    helm template "$release" "$chart" -n "$ns" ${values:+-f "$values"} >"$work/rendered.yaml"
    # No -ignore-missing-schemas: a kind without a schema is an error, not a skip.
    out=$("$KUBECONFORM" -strict -summary -schema-location "$work/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "$work/rendered.yaml") || { echo "$out"; fail "kubeconform (${values:-default values})"; }
    grep -q "Invalid: 0, Errors: 0, Skipped: 0" <<<"$out" || fail "kubeconform: $out"
    pass "kubeconform -strict (${values:-default values}): ${out#Summary: }"
  done
  # A typo must be caught (the schemas really are strict).
  helm template "$release" "$chart" -n "$ns" | sed 's/^  replicas: 1$/  replica: 1/' >"$work/typo.yaml"
  grep -q '^  replica: 1$' "$work/typo.yaml" || fail "could not plant the typo"
  if "$KUBECONFORM" -strict -schema-location "$work/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$work/typo.yaml" >/dev/null 2>&1; then fail "kubeconform accepted spec.replica (a typo)"; fi
  pass "kubeconform refuses an unknown field (spec.replica)"
}
hstep "kubeconform against the API server's own schemas" kubeconform_all

install_chart() {
  # The harness applies its own CSIDrivers and StorageClasses; the chart owns them from here on.
  kc delete csidriver local.csi.berth.dev shared.csi.berth.dev --ignore-not-found
  kc delete storageclass berth-local berth-shared --ignore-not-found
  helm install "$release" "$chart" -n "$ns" --create-namespace --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" \
    --wait --timeout 3m >"$work/install.txt"
  # Every object of the release exists in the API server.
  helm get manifest "$release" -n "$ns" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" >"$work/manifest.yaml"
  local want got
  want=$(grep -c '^kind:' "$work/manifest.yaml")
  got=$(kc get -f "$work/manifest.yaml" -o name | wc -l)
  [ "$got" -eq "$want" ] || fail "$want objects in the release, $got found in the API server"
  pass "helm install: all $want objects accepted and present (kinds: $(grep '^kind:' "$work/manifest.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}'))"
  kc -n "$ns" rollout status ds/berth-node --timeout 60s >/dev/null
  pass "node DaemonSet scheduled on every simulated node ($(kc -n "$ns" get ds berth-node -o jsonpath='{.status.numberReady}') ready)"
}
hstep "helm install" install_chart

examples_valid() {
  if ! kc get crd replicateddatabases.berth.dev imagecachepolicies.berth.dev registrymirrors.berth.dev >/dev/null 2>&1; then
    echo "  SKIPPED examples against CRDs: not every Berth CRD is in crds/ in this tree"
    kc apply --dry-run=server -f examples/shared-volume-app.yaml >/dev/null
    pass "examples/shared-volume-app.yaml accepted by the API server (server-side dry run)"
    return 0
  fi
  rm -rf "$work/schemas" && python3 scripts/kube-jsonschemas.py "$work/schemas" "$KUBECTL" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" >/dev/null
  local out
  out=$("$KUBECONFORM" -strict -summary -schema-location "$work/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" examples/*.yaml) ||
    { echo "$out"; fail "kubeconform examples/"; }
  pass "kubeconform -strict examples/ against the installed CRDs: ${out#Summary: }"
  kc apply --dry-run=server -f examples/ >/dev/null
  pass "examples/ accepted by the API server (server-side dry run: CEL rules included)"
}
hstep "examples against the CRDs" examples_valid

# allowed SA VERB RESOURCE[.GROUP][/NAME] [--subresource=S] [-n NS | -A]: asks the API server whether
# the ServiceAccount may, with `kubectl auth can-i --as`. For a Berth resource whose CRD is not
# installed (this tree may not carry every CRD), kubectl cannot split group from resource without
# discovery, so the same SelfSubjectAccessReview is posted directly with group and resource spelled out.
allowed() {
  local sa=$1 verb=$2 target=$3; shift 3
  if [[ "$target" == *berth.dev* ]] && ! kc get crd "${target%%/*}" >/dev/null 2>&1; then
    local res=${target%%/*} name="" sub="" namespace=""
    [[ "$target" == */* ]] && name=${target#*/}
    while [ $# -gt 0 ]; do
      case $1 in
        --subresource=*) sub=${1#*=} ;;
        -n) namespace=$2; shift ;;
        -A) namespace="" ;;
      esac
      shift
    done
    local out
    out=$(kc create --validate=false --as="system:serviceaccount:$ns:$sa" -o jsonpath='{.status.allowed}' -f - <<EOF
apiVersion: authorization.k8s.io/v1
kind: SelfSubjectAccessReview
spec:
  resourceAttributes: {verb: "$verb", group: "${res#*.}", resource: "${res%%.*}", subresource: "$sub", name: "$name", namespace: "$namespace"}
EOF
    )
    [ "$out" = true ]
  else
    kc auth can-i --as="system:serviceaccount:$ns:$sa" "$verb" "$target" "$@" >/dev/null 2>&1
  fi
}
can() {
  allowed "$@" || fail "$1 cannot ${*:2} (it needs to)"
  checks=$((checks + 1))
}
cannot() {
  if allowed "$@"; then fail "$1 can ${*:2} (it must not)"; fi
  checks=$((checks + 1))
}
rbac() {
  local before=$checks
  local op=berth-operator node=berth-node ctrl=berth-shared-controller agent=berth-node-agent
  local resizer=berth-local-resizer
  # The operator: its databases, the Pods/claims/Services it owns, exec for hooks, its Lease.
  can $op list replicateddatabases.berth.dev -A
  can $op patch replicateddatabases.berth.dev --subresource=status -n default
  can $op create pods -n default
  can $op delete pods -n default
  can $op create pods --subresource=exec -n default
  can $op create persistentvolumeclaims -n default
  can $op patch services -n default
  can $op create configmaps -n default
  can $op watch nodes
  can $op create events.events.k8s.io -n default
  can $op create leases.coordination.k8s.io -n "$ns"
  can $op update leases.coordination.k8s.io/berth-operator-rdb -n "$ns"
  cannot $op update leases.coordination.k8s.io/someone-elses -n "$ns"
  cannot $op create leases.coordination.k8s.io -n default
  cannot $op get secrets -A
  cannot $op get secrets -n default
  cannot $op patch nodes
  cannot $op delete persistentvolumes
  cannot $op create deployments.apps -n default
  cannot $op list imagecachepolicies.berth.dev
  cannot $op patch registrymirrors.berth.dev --subresource=status
  cannot $op create clusterrolebindings.rbac.authorization.k8s.io
  # The node plugins and their sidecars: PVs, claims, capacity in the release namespace, snapshots.
  can $node create persistentvolumes
  can $node delete persistentvolumes
  can $node update persistentvolumeclaims -n default
  can $node create csistoragecapacities.storage.k8s.io -n "$ns"
  can $node get daemonsets.apps -n "$ns"
  can $node get nodes
  can $node update volumesnapshotcontents.snapshot.storage.k8s.io
  can $node update volumesnapshotcontents.snapshot.storage.k8s.io --subresource=status
  cannot $node create csistoragecapacities.storage.k8s.io -n default
  cannot $node get secrets -A
  cannot $node create pods -n default
  cannot $node patch nodes
  cannot $node get daemonsets.apps -n default
  cannot $node list replicateddatabases.berth.dev -A
  cannot $node create pods --subresource=exec -n default
  # The shared controller: PVs and claims, claim status for resizing, its sidecars' Leases.
  can $ctrl create persistentvolumes
  can $ctrl patch persistentvolumeclaims --subresource=status -n default
  can $ctrl create leases.coordination.k8s.io -n "$ns"
  cannot $ctrl create leases.coordination.k8s.io -n default
  cannot $ctrl create csistoragecapacities.storage.k8s.io -n "$ns"
  cannot $ctrl get secrets -A
  cannot $ctrl create pods -n default
  # The local resizer: PV capacity and claim status only; never creates or deletes volumes.
  can $resizer patch persistentvolumes
  can $resizer patch persistentvolumeclaims --subresource=status -n default
  can $resizer update leases.coordination.k8s.io -n "$ns"
  cannot $resizer create persistentvolumes
  cannot $resizer delete persistentvolumes
  cannot $resizer patch persistentvolumeclaims -n default
  cannot $resizer create leases.coordination.k8s.io -n default
  cannot $resizer get secrets -A
  # The node agent: its policies, reports and statuses, Pods and Nodes to read; never Secrets
  # unless named in nodeAgent.registryCASecrets (none by default).
  can $agent watch imagecachepolicies.berth.dev
  can $agent watch registrymirrors.berth.dev
  can $agent patch registrymirrors.berth.dev --subresource=status
  can $agent patch imagecachepolicies.berth.dev --subresource=status
  can $agent create imagecachereports.berth.dev
  can $agent delete imagecachereports.berth.dev
  can $agent list pods -A
  can $agent create events.events.k8s.io -n default
  cannot $agent get secrets -A
  cannot $agent get secrets -n "$ns"
  cannot $agent list secrets -n "$ns"
  cannot $agent patch registrymirrors.berth.dev
  cannot $agent patch replicateddatabases.berth.dev --subresource=status -n default
  cannot $agent create pods --subresource=exec -n default
  cannot $agent delete pods -n default
  cannot $agent patch nodes
  cannot $agent create persistentvolumes
  pass "$((checks - before)) kubectl auth can-i checks (what each component needs, and what it must not have)"
  # Named CA Secrets: exactly those become readable, nothing else.
  helm upgrade "$release" "$chart" -n "$ns" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" --reuse-values \
    --set "nodeAgent.registryCASecrets[0].namespace=$ns" --set "nodeAgent.registryCASecrets[0].name=registry-ca" >/dev/null
  can $agent get secrets/registry-ca -n "$ns"
  cannot $agent get secrets/other -n "$ns"
  cannot $agent list secrets -n "$ns"
  cannot $agent get secrets/registry-ca -n default
  pass "nodeAgent.registryCASecrets grants get on exactly the named Secret"
}
hstep "RBAC per ServiceAccount" rbac

helm_test() {
  helm test "$release" -n "$ns" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" --timeout 2m >"$work/test.txt" ||
    { cat "$work/test.txt"; fail "helm test"; }
  grep -q "Phase: *Succeeded" "$work/test.txt" || fail "helm test did not succeed: $(cat "$work/test.txt")"
  local pv node handle
  pv=$(kc -n "$ns" get pvc berth-test-volume -o jsonpath='{.spec.volumeName}')
  handle=$(kc get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
  node=$(kc get pv "$pv" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[?(@.key=="topology.berth.dev/node")].values[0]}')
  [ -n "$node" ] || fail "PV $pv has no topology.berth.dev/node affinity"
  [ -d "$BERTH_E2E_STATE_DIR/pools/local/$node/volumes/$handle" ] ||
    fail "volume $handle not found in $node's pool ($BERTH_E2E_STATE_DIR/pools/local/$node/volumes)"
  pass "helm test: claim Bound to $pv, provisioned by berth-csi on $node (directory in its pool); test Job Complete"
  echo "  note: simulated nodes run no containers, so the Job's mount/write/read commands ran only in kwok's model"
}
hstep "helm test" helm_test

retention() {
  # Users' objects made while Berth is installed: a local claim used by a Job, a shared claim, data.
  kc create namespace users >/dev/null
  kc -n users apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: local-data}
spec:
  storageClassName: berth-local
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared-data}
spec:
  storageClassName: berth-shared
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: writer}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: w, image: busybox:1.36, command: ["true"],
                    volumeMounts: [{name: d, mountPath: /d}]}]
      volumes: [{name: d, persistentVolumeClaim: {claimName: local-data}}]
EOF
  kc -n users wait --for=jsonpath='{.status.phase}'=Bound pvc/local-data pvc/shared-data --timeout 90s >/dev/null
  local lpv spv lnode lh sh rdb=""
  lpv=$(kc -n users get pvc local-data -o jsonpath='{.spec.volumeName}')
  spv=$(kc -n users get pvc shared-data -o jsonpath='{.spec.volumeName}')
  lh=$(kc get pv "$lpv" -o jsonpath='{.spec.csi.volumeHandle}')
  sh=$(kc get pv "$spv" -o jsonpath='{.spec.csi.volumeHandle}')
  lnode=$(kc get pv "$lpv" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[?(@.key=="topology.berth.dev/node")].values[0]}')
  # The drivers' on-disk layout: <pool>/volumes/<volume id>/data is what a Pod mounts.
  local ldir=$BERTH_E2E_STATE_DIR/pools/local/$lnode/volumes/$lh/data
  local sdir=$BERTH_E2E_STATE_DIR/pools/shared/default/volumes/$sh/data
  [ -d "$ldir" ] && [ -d "$sdir" ] || fail "volume directories not found ($ldir, $sdir)"
  echo "precious" >"$ldir/user-file" && echo "precious" >"$sdir/user-file"
  if kc get crd replicateddatabases.berth.dev >/dev/null 2>&1; then
    kc -n users apply -f examples/postgres-rdb.yaml >/dev/null && rdb=pg-demo
  fi

  helm uninstall "$release" -n "$ns" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" --wait --timeout 2m >/dev/null
  local left
  left=$(kc get deploy,ds,sa,svc,role,rolebinding -n "$ns" -l "app.kubernetes.io/instance=$release" -o name)
  left+=$(kc get clusterrole,clusterrolebinding,csidriver,storageclass -l "app.kubernetes.io/instance=$release" -o name)
  [ -z "$left" ] || fail "helm uninstall left: $left"
  pass "helm uninstall removed every Berth component, role, binding, CSIDriver and StorageClass"
  [ "$(kc -n users get pvc local-data -o jsonpath='{.status.phase}')" = Bound ] || fail "local claim not Bound after uninstall"
  [ "$(kc -n users get pvc shared-data -o jsonpath='{.status.phase}')" = Bound ] || fail "shared claim not Bound after uninstall"
  kc get pv "$lpv" "$spv" >/dev/null || fail "PVs gone after uninstall"
  [ "$(cat "$ldir/user-file")" = precious ] && [ "$(cat "$sdir/user-file")" = precious ] || fail "data gone after uninstall"
  pass "users' claims stay Bound, their PVs and the data in both volumes remain"
  local crds
  crds=$(kc get crd -o name | grep -c 'berth.dev' || true)
  [ "$crds" -eq "$(find crds -maxdepth 1 -name '*.yaml' | wc -l)" ] || fail "expected every Berth CRD kept, found $crds"
  if [ -n "$rdb" ]; then
    kc -n users get rdb "$rdb" >/dev/null || fail "ReplicatedDatabase $rdb gone after uninstall"
    pass "the CRDs ($crds) and the user's ReplicatedDatabase remain"
  else
    pass "the CRDs remain ($crds in this tree)"
  fi
}
hstep "helm uninstall keeps users' volumes and data" retention

reinstall() {
  helm install "$release" "$chart" -n "$ns" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" --wait --timeout 3m >/dev/null
  pass "a second helm install adopts the kept CRDs"
  helm uninstall "$release" -n "$ns" --kubeconfig "$BERTH_E2E_STATE_DIR/kubeconfig" --wait >/dev/null
}
hstep "reinstall over kept CRDs" reinstall
hstep "cluster down" "${cluster[@]}" down --purge

# ---------------------------------------------------------------- the image
image() {
  if [ "${BERTH_SKIP_IMAGE:-}" = 1 ]; then
    echo "  SKIPPED image: BERTH_SKIP_IMAGE=1"
    return 0
  fi
  apt_install containerd runc
  scripts/build-image.sh "$work/image" | tee "$work/image.txt"
  local dir=$work/containerd sock ref
  sock=$dir/containerd.sock
  ref=$(sed -n 's/^image \([^:]*:[^:]*\): .*/\1/p' "$work/image.txt")
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
EOF
  containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  ctd_pid=$!
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  local ctr=(ctr --address "$sock" -n berth-helm-test)
  "${ctr[@]}" images import "$work/image/berth-image.tar" >/dev/null
  "${ctr[@]}" images ls -q | grep -qx "$ref" || fail "imported image $ref not listed"
  local out
  out=$("${ctr[@]}" run --rm "$ref" berth-helm-csi /usr/local/bin/berth-csi --version)
  grep -q '^berth-csi ' <<<"$out" || fail "berth-csi --version printed: $out"
  pass "ctr run $ref berth-csi --version: $out"
  out=$("${ctr[@]}" run --rm "$ref" berth-helm-op /usr/local/bin/berth-operator --version)
  grep -q '^berth-operator ' <<<"$out" || fail "berth-operator --version printed: $out"
  pass "ctr run $ref berth-operator --version: $out"
  for tool in "btrfs --version" "mkfs.xfs -V" "mkfs.ext4 -V" "fsfreeze --version" "cp --version"; do
    # shellcheck disable=SC2086
    "${ctr[@]}" run --rm "$ref" "berth-helm-tool" /usr/bin/$tool >/dev/null 2>&1 || fail "$tool does not run in the image"
  done
  pass "the filesystem tools berth-csi runs work inside the image (btrfs, mkfs.xfs, mkfs.ext4, fsfreeze, cp)"
  out=$("${ctr[@]}" run --rm "$ref" berth-helm-probe /usr/local/bin/berth-csi probe --path /tmp 2>&1) ||
    fail "berth-csi probe as the image's default user failed: $out"
  pass "berth-csi probe runs as the image's default non-root user (65532)"
  "${ctr[@]}" images rm "$ref" >/dev/null
  kill "$ctd_pid" && wait "$ctd_pid" 2>/dev/null || true
  ctd_pid=""
}
hstep "image: build, import into containerd, run" image

echo "helm stage: $checks checks passed"
