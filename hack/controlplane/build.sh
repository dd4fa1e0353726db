#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy, once, into a cache:
#   etcd, kube-apiserver, kube-controller-manager, kubectl, helm.
# Prints the cache's bin directory on its last line. A second run only checks and prints it.
# The key of the cache folder is a hash of the three go.mod/go.sum pairs and this script, so
# a version bump rebuilds and an unchanged tree never does.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBENOVA_CACHE:-$HOME/.cache/kubenova}
K8S_VERSION=v1.34.3
HELM_VERSION=v3.19.0

key=$(cat "$here"/build.sh "$here"/{kube,etcd,helm}/go.{mod,sum} | sha256sum | cut -c1-12)
bin="$cache/bin/$key"
tools=(etcd kube-apiserver kube-controller-manager kubectl helm)

have_all() {
  local t
  for t in "${tools[@]}"; do [[ -x "$bin/$t" ]] || return 1; done
}

if have_all; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin.partial"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
log="$cache/build-$key.log"
: >"$log"

# go build -v names each package as it compiles; print a line every 200 so a first build
# (10-20 minutes on 2 cores) shows it is moving.
progress() {
  local name=$1 n=0 line
  while IFS= read -r line; do
    echo "$line" >>"$log"
    n=$((n + 1))
    if ((n % 200 == 0)); then echo "  $name: $n packages compiled ($SECONDS s)" >&2; fi
  done
}

build() {  # build NAME DIR LDFLAGS PKG...
  local name=$1 dir=$2 ldflags=$3
  shift 3
  echo "building $name ... (log: $log)" >&2
  if ! (cd "$here/$dir" && go build -v -trimpath -ldflags "$ldflags" -o "$bin.partial/" "$@" 2>&1) | progress "$name"; then
    echo "build of $name failed; last lines of $log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
}

SECONDS=0
minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kv=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kv+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  kv+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
done

build etcd etcd "-s -w" go.etcd.io/etcd/server/v3
# go names the binary after the path element before /v3.
mv "$bin.partial/server" "$bin.partial/etcd"
build kubernetes kube "-s -w$kv" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
build helm helm "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  helm.sh/helm/v3/cmd/helm

rm -rf "$bin"
mv "$bin.partial" "$bin"
have_all || { echo "missing tools in $bin" >&2; exit 1; }
echo "built in $SECONDS s: $(du -sh "$bin" | cut -f1) in $bin" >&2
echo "$bin"
