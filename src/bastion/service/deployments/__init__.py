"""Deployments: a set of app images for a device group, and their per-device state."""
