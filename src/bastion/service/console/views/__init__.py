"""The console's read side: queries and view models of its pages, free of HTTP and templates.

Each module takes a SQLAlchemy session, the caller's tenant id and the page's
parameters, and returns frozen dataclasses that a template renders. Every list
is paged and filtered in SQL, and every count is a ``GROUP BY``, so a page stays
fast with 100,000 devices (``benchmarks/console.py``).
"""
