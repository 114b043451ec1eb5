"""Tenant CAs: creation, sealing under the master key, loading for signing."""
