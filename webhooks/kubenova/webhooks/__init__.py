"""Admission webhooks: validation, defaults, quota and rate limits for kubenova kinds.
Does I/O."""
