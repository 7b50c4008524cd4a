"""Moved to ``hotpipe.storage.init``; kept while benchmarks migrate."""

from hotpipe.storage.init import CHUNK_ROWS, init_rows

__all__ = ["CHUNK_ROWS", "init_rows"]
