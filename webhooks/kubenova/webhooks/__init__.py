"""Admission webhooks: validation, defaults, quota and rate limits for kubenova kinds.

Pure (kept so by the import-linter contract): `rules`, `defaults`, `ratelimit`, `review`,
`jsonpatch`, `registration`. I/O: `catalog`, `admission`, `server`, `metrics` and the entry
point `python -m kubenova.webhooks`. The quota ledger they charge is `kubenova.quota`, shared
with the operator.
"""
