"""Alembic migrations of the Security Service schema (run by :func:`bastion.service.db.migrate`)."""
