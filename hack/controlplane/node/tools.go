//go:build tools

// Package tools pins the commands a real node adds to the control plane. It is built inside
// a copy of ../kube's module (build-node.sh), so kubelet and kube-scheduler come from the very
// module set that builds kube-apiserver.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
