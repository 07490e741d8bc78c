"""Bulk identifier uploads: NDJSON or CSV (optionally gzip) streamed to disk, staged in the
database in batches, then applied to the partner's records in one short transaction."""
