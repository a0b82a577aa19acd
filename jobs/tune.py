"""Entry point for `ray job submit ... -- python jobs/tune.py --config BASE.yaml --search S.yaml`."""

import sys

from simgan_dist.cli import main

if __name__ == "__main__":
    # Under `ray job submit`, RAY_ADDRESS is set and ray.init() joins that cluster.
    main(["tune", *sys.argv[1:]])
