"""Device capabilities: issue, list and revoke per-device capability files (docs/api.md)."""
