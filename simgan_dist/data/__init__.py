"""Shard catalogs, per-rank batch streams, corpus builders and checks, simulators."""
