"""App-signing keys (public halves) and uploaded app image packages."""
