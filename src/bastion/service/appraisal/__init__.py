"""Appraisal policy per device group: the boot rules a tenant relaxes (ADR 0014)."""
