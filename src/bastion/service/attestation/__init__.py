"""Attestation: challenges, EAT verification and device certificate issuance."""
