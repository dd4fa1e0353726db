#!/usr/bin/env bash
# Builds what a real Kubernetes node adds to the local control plane -- kubelet and
# kube-scheduler -- once, into a cache of its own (build.sh's cache and key stay as they are).
# Prints the cache's bin directory on its last line; a second run only checks and prints it.
# They are built in a copy of kube/go.{mod,sum} with node/tools.go, so they come from the same
# k8s.io/kubernetes module set as kube-apiserver; the key hashes those files and this script.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBENOVA_CACHE:-$HOME/.cache/kubenova}
K8S_VERSION=v1.34.3

key=$(cat "$here"/build-node.sh "$here"/kube/go.{mod,sum} "$here"/node/tools.go | sha256sum | cut -c1-12)
bin="$cache/bin/node-$key"
tools=(kubelet kube-scheduler)

have_all() {
  local t
  for t in "${tools[@]}"; do [[ -x "$bin/$t" ]] || return 1; done
}

if have_all; then
  echo "$bin"
  exit 0
fi

SECONDS=0
work="$cache/build-node-$key"
log="$cache/build-node-$key.log"
rm -rf "$work" "$bin.partial"
mkdir -p "$work" "$bin.partial"
sed 's|^module .*|module kubenova.io/hack/controlplane/node|' "$here/kube/go.mod" >"$work/go.mod"
cp "$here/kube/go.sum" "$here/node/tools.go" "$work/"

minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
kv=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kv+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

echo "building kubelet and kube-scheduler ... (log: $log)" >&2
# -v names each package as it compiles: a line every 200 shows a cold build (~3 min) moving.
if ! (cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -v -trimpath -ldflags "-s -w$kv" \
  -o "$bin.partial/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler 2>&1) |
  awk -v out="$log" '{ print >>out; if (++n % 200 == 0) printf "  node: %d packages compiled\n", n >"/dev/stderr" }'; then
  echo "build of kubelet/kube-scheduler failed; last lines of $log:" >&2
  tail -20 "$log" >&2
  exit 1
fi
# go.sum must not have needed anything new: the same module set as kube-apiserver.
if ! cmp -s "$work/go.sum" "$here/kube/go.sum"; then
  echo "note: building the node needed go.sum lines kube/go.sum lacks:" >&2
  diff "$here/kube/go.sum" "$work/go.sum" >&2 || true
fi
rm -rf "$bin" "$work"
mv "$bin.partial" "$bin"
have_all || { echo "missing tools in $bin" >&2; exit 1; }
echo "built in $SECONDS s: $(du -sh "$bin" | cut -f1) in $bin" >&2
echo "$bin"
