#!/usr/bin/env bash
# Build the real Kubernetes control plane the cloud tests run against, from the
# Go module proxy, at the versions pinned in scripts/k8s-versions:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                                              (go.etcd.io/etcd/server/v3)
#   kwok, standing in for kubelets                                    (sigs.k8s.io/kwok)
# and Argo CD's CRD manifests (github.com/argoproj/argo-cd/v3, downloaded, not built).
#
# Installs into $NUKETOWN_K8S_DIR (default /opt/nuketown-k8s/<the pinned set>);
# a complete install is reused, so a second run on the same machine costs
# nothing. The Go caches of a build are thrown away after it (disk is the
# scarcer thing; the binaries are the cache). Needs Go (>= the newest go
# directive of the modules above, see scripts/k8s-versions) and the module proxy.
#
#   bash scripts/k8s.sh            build what is missing, print the install dir
#   bash scripts/k8s.sh --check    exit 0 if installed, 1 otherwise (builds nothing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=k8s-versions
. "$here/k8s-versions"
dest=${NUKETOWN_K8S_DIR:-/opt/nuketown-k8s/$K8S_SET}

if [ -e "$dest/complete" ]; then
  echo "$dest"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "scripts/k8s.sh: the control plane is not installed in $dest" >&2
  exit 1
fi
command -v go >/dev/null || { echo "scripts/k8s.sh: Go is needed to build the control plane (none on PATH)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/nuketown-k8s-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export GOPATH=$work/gopath GOMODCACHE=$work/mod GOCACHE=$work/cache
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
# Staged beside the install, so a run that failed half-way keeps what it built.
stage=$dest.partial
mkdir -p "$stage/bin" "$stage/argocd/crds"

t0=$SECONDS
# Go's own chatter (hundreds of "go: downloading") goes to a log, shown when a step fails.
golog=$work/go.log
quiet() { "$@" 2>>"$golog" || { echo "scripts/k8s.sh: failed: $*" >&2; tail -n 40 "$golog" >&2; return 1; }; }
step() { echo "scripts/k8s.sh: $1 ($((SECONDS - t0)) s so far)" >&2; }

# A module of our own that requires the one we build: k8s.io/kubernetes and
# etcd's server replace their sibling modules with paths inside their
# repositories, which `go install pkg@version` refuses; a main module may
# replace them with the published versions instead.
wrapper() { # dir module-path
  mkdir -p "$1"
  printf 'module %s\n\ngo 1.24.0\n' "$2" > "$1/go.mod"
}

# --- Kubernetes ---------------------------------------------------------------
step "Kubernetes $KUBERNETES: resolving modules"
kdir=$work/kubernetes
wrapper "$kdir" nuketown.test/kubernetes
kmod=$(cd "$kdir" && quiet go mod download -json "k8s.io/kubernetes@$KUBERNETES" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
# Its staging modules (k8s.io/api, k8s.io/client-go, …) are published as v0.<minor>.<patch>.
staging=v0.${KUBERNETES#v1.}
{
  echo "require k8s.io/kubernetes $KUBERNETES"
  echo "replace ("
  sed -n 's|^[[:space:]]*\(k8s.io/[a-z-]*\) => ./staging/src/.*|\t\1 => \1 '"$staging"'|p' "$kmod"
  echo ")"
} >> "$kdir/go.mod"
ver="k8s.io/component-base/version"
minor=${KUBERNETES#v1.}; minor=${minor%%.*}
ldflags="-s -w -X $ver.gitVersion=$KUBERNETES -X $ver.gitMajor=1 -X $ver.gitMinor=$minor \
 -X $ver.gitTreeState=clean -X $ver.buildDate=1970-01-01T00:00:00Z"
# Also the copy client-go keeps, which kubectl reports.
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$stage/bin/$cmd" ] && continue
  step "building $cmd"
  (cd "$kdir" && quiet go build -trimpath -ldflags "$ldflags" -o "$stage/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

# --- etcd ---------------------------------------------------------------------
if [ ! -x "$stage/bin/etcd" ]; then
  step "building etcd $ETCD"
  edir=$work/etcd
  wrapper "$edir" nuketown.test/etcd
  echo "require go.etcd.io/etcd/server/v3 $ETCD" >> "$edir/go.mod"
  (cd "$edir" && quiet go build -trimpath -ldflags "-s -w" -o "$stage/bin/etcd" go.etcd.io/etcd/server/v3)
fi

# --- kwok ---------------------------------------------------------------------
if [ ! -x "$stage/bin/kwok" ]; then
  step "building kwok $KWOK"
  quiet go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK" "sigs.k8s.io/kwok/cmd/kwok@$KWOK"
  cp "$GOPATH/bin/kwok" "$stage/bin/kwok"
fi
# Its stages (what a faked kubelet does, and when), as its module ships them:
# nodes initialised and kept Ready by heartbeats; pods Running once
# scheduled, Succeeded when done, gone when deleted. Not its volume stages:
# the real controller manager binds claims.
kwjson=$(cd "$work" && go mod download -json "sigs.k8s.io/kwok@$KWOK") || {
  echo "scripts/k8s.sh: cannot download kwok $KWOK: $kwjson" >&2; exit 1; }
kwdir=$(printf '%s\n' "$kwjson" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/kustomize/stage
{
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$kwdir/$f"
  done
} > "$stage/kwok-stages.yaml"

# --- Argo CD's CRDs -------------------------------------------------------------
step "Argo CD $ARGOCD: its install manifest and CRDs"
ajson=$(cd "$work" && go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD") || {
  echo "scripts/k8s.sh: cannot download Argo CD $ARGOCD: $ajson" >&2; exit 1; }
adir=$(printf '%s\n' "$ajson" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp "$adir"/manifests/install.yaml "$stage/argocd/"
cp "$adir"/manifests/crds/application-crd.yaml "$adir"/manifests/crds/appproject-crd.yaml \
   "$adir"/manifests/crds/applicationset-crd.yaml "$stage/argocd/crds/"

# --- install ------------------------------------------------------------------
"$stage/bin/kube-apiserver" --version
"$stage/bin/etcd" --version | head -1
"$stage/bin/kwok" --version 2>/dev/null | head -1 || true
cp "$here/k8s-versions" "$stage/versions"
touch "$stage/complete"
rm -rf "$dest"
mv "$stage" "$dest"
step "installed in $dest"
echo "$dest"
