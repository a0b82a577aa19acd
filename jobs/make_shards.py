"""Entry point for `ray job submit ... -- python jobs/make_shards.py digits --out shards`."""

import sys

from simgan_dist.cli import main

if __name__ == "__main__":
    main(["shards", "build", *sys.argv[1:]])
