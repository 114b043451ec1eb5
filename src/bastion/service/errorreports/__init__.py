"""Error reports, service side: signed batch ingest, buckets (fingerprint v1), retention, operator API.

docs/error-reports.md "Service"; docs/adr/0015-error-buckets-and-retention.md.
"""
