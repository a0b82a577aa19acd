"""Offline refinement of shard corpora, exactly once, on a pool of Ray actors."""
