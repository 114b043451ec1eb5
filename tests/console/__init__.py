"""Console tests (in-process and in Chromium)."""
