"""The fleet: device claim (with proof), unclaim, release, list, show and revoke."""
