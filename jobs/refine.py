"""Entry point for `ray job submit ... -- python jobs/refine.py --checkpoint C --input I --output O [--gpu ...]`."""

import sys

from simgan_dist.cli import main

if __name__ == "__main__":
    main(["refine", *sys.argv[1:]])
