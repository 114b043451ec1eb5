"""Content-addressed blob store for images, deltas and TUF repositories."""
