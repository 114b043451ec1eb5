"""Image packages: build, sign, parse and verify OS, bootloader and app images."""
