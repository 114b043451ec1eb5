"""Bastion: an open, self-hostable platform that secures connected devices for life."""

__version__ = "0.1.0"
