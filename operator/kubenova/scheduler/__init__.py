"""kubenova's scheduler core: the in-memory indexed capacity cache, filter and score plugins,
the scheduling framework (filter → score → reserve, assume / confirm / forget), the queue of
pending VMs, reservations of popular flavors, pool status and the re-balance planner.

Pure: no kopf, no Kubernetes client, no libvirt, no aiohttp, no I/O and no wall clock — time
comes from an injected clock and randomness from an injected `random.Random`. The operator
feeds it events (through `adapt`, which turns API models into the plain types of `model`) and
acts on its decisions.
"""
