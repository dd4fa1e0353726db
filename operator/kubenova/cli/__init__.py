"""Command-line tools for kubenova's users and admins (`kubectl vm`). They speak to the API
server only through `kubectl`, so every kubeconfig, context and credential plugin works."""
