"""Staged rollouts: stages, soak, halt rules, automatic advance and halt, resume and abort (docs/adr/0017)."""
