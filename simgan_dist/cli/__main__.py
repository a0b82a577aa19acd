"""`python -m simgan_dist.cli`: the `simgan` command."""

from simgan_dist.cli import main

main()
