"""Device update status reports (signed by the device) and the update history they build."""
