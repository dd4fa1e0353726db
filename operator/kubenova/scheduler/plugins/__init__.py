"""Filter and score plugins in the kube-scheduler style, one concern per module: each Filter
answers for one host with `None` (passes) or the `Reason` it removes the host for; each Score
returns a raw number per host that `normalize` maps to 0..100 before the pool's weight
multiplies it (Nova's weighers). PreFilters compute per-VM facts once per cycle. Pure."""
