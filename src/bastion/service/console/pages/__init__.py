"""Console pages, one module per page (each a ``router`` and, optionally, a ``NAV`` entry)."""
