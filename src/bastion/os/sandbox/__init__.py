"""Sandboxes: a policy object turned into a bubblewrap command line (see docs/compartments.md)."""
