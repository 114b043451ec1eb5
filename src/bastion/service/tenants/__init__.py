"""Tenants: creation with their CA and first admin token."""
