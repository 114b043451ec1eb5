"""The library that apps import. It reaches the OS only over its unix socket (later issue)."""
