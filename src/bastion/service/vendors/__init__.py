"""Trusted silicon vendor CAs (service-wide, managed locally)."""
