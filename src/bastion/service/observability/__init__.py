"""Health, readiness, metrics and the access log of the service (docs/adr/0019)."""
