"""Development mode and sideloading: the device capability file and the local device API."""
