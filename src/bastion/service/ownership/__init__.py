"""Device ownership: claims with proof (a claim challenge or a vendor voucher), unclaim, release, history."""
