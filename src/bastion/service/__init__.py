"""The Bastion Security Service: attestation, device certificates, fleet records."""
