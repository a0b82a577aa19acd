"""Entry point for `ray job submit ... -- python jobs/train.py --config CONFIG.yaml [--set k=v]`."""

import sys

from simgan_dist.cli import main

if __name__ == "__main__":
    # Under `ray job submit`, RAY_ADDRESS is set and ray.init() joins that cluster.
    main(["train", *sys.argv[1:]])
