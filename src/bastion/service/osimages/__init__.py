"""Known-good OS images: the reference values attestation compares against."""
