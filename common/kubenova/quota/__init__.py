"""The VM quota ledger, shared by the admission webhooks (which charge) and the operator (which
releases and recounts): `arithmetic` (pure), `store`, `ledger`, `releaser` (`python -m
kubenova.quota.releaser`) and `metrics`. Imports no component (an import-linter contract)."""
