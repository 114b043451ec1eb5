"""Atomic, durable file writes for device state (re-exported from :mod:`bastion.images.fileio`)."""

from __future__ import annotations

from bastion.images.fileio import (
    COPY_CHUNK_BYTES,
    atomic_write_bytes,
    atomic_writer,
    copy_stream,
    fsync_dir,
    remove_tree,
)

__all__ = ["COPY_CHUNK_BYTES", "atomic_write_bytes", "atomic_writer", "copy_stream", "fsync_dir", "remove_tree"]
