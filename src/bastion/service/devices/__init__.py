"""The fleet: device claim, list, show and revoke."""
