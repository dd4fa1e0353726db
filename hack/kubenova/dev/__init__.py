"""Developer tooling: the locally built control plane (`kubenova-dev cluster up|down|env`)
and the certificates it needs. Does I/O; nothing in the product imports it."""
