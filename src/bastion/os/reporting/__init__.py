"""Failure reporting on the device: capture, a persistent coalescing queue, signed uploads (docs/error-reports.md)."""
