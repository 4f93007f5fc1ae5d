"""gpu-rehearsal's profile, catalog and orchestration (the `python -m rig` commands)."""
