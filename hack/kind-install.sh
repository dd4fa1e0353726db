#!/usr/bin/env bash
# Try kubenova on kind, for users with Docker: creates a kind cluster (or reuses it), builds
# the image, loads it into the cluster and installs the chart with simulated hosts (libvirt's
# test:/// driver, so no KVM is needed). Needs docker, kind, kubectl and helm.
#
#   hack/kind-install.sh                      # cluster "kubenova", image kubenova:dev
#   KIND_CLUSTER=x IMAGE=kubenova:mine hack/kind-install.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster=${KIND_CLUSTER:-kubenova}
image=${IMAGE:-kubenova:dev}
namespace=${NAMESPACE:-kubenova-system}
context="kind-$cluster"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-install: $tool is required" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 2m
fi
docker build -t "$image" "$root"
kind load docker-image "$image" --name "$cluster"

# Every kind node is a (simulated) hypervisor host.
kubectl --context "$context" label node --all kubenova.io/hypervisor=true --overwrite
helm upgrade --install kubenova "$root/charts/kubenova" \
  --kube-context "$context" --namespace "$namespace" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=Never \
  --set agent.libvirtUri=test:///default --set agent.storage=none --set agent.domainType=qemu \
  --wait --timeout 5m
kubectl --context "$context" get hosts
echo "kind-install: done; try: kubectl --context $context apply -f $root/examples/flavors.yaml"
