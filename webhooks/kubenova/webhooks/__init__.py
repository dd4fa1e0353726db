"""Admission webhooks: validation, defaults, quota and rate limits for kubenova kinds.

Pure (kept so by the import-linter contract): `rules`, `defaults`, `quota_math`, `ratelimit`,
`review`, `jsonpatch`, `registration`. I/O: `catalog`, `store`, `quota`, `admission`,
`server`, `metrics`, `quota_controller` and the entry point `python -m kubenova.webhooks`.
The operator calls `quota.release_charge()` and `quota.recount_namespace()`.
"""
