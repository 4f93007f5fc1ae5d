"""gpu-rehearsal's benchmark: the same workload on every target, mirrored onto the planned PC.

Cloud-agnostic by design: a target is an endpoint plus facts about its hardware.
"""
