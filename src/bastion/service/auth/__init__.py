"""Operator authentication: API tokens, roles and the ``require_role`` dependency."""
