"""Kubernetes plumbing shared by the operator, the node agent and the webhooks: API clients
with retries, JSON logs carrying a trace id, and Lease records. Does I/O (except `leases`'
decision functions, which are pure); holds no domain logic."""
