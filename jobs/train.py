"""Entry point for `ray job submit ... -- python jobs/train.py --config CONFIG.yaml [--set k=v]`.

A job resumes its run when it is retried or resubmitted: `--resume-if-exists` is added unless the
command line has `--resume RUN_DIR`, so the config must name its run (run.name)."""

import sys

from simgan_dist.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--resume" not in args and "--resume-if-exists" not in args:
        args.append("--resume-if-exists")
    # Under `ray job submit`, RAY_ADDRESS is set and ray.init() joins that cluster.
    main(["train", *args])
