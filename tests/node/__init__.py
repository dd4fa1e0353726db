"""The chart on real Kubernetes nodes (kubenova-dev node): kubelets, containerd, the built image."""
