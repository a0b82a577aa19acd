"""Locations over fsspec, the tar reader, the shard format and run storage."""
