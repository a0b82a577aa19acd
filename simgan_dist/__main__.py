"""`python -m simgan_dist`: the `simgan` command."""

from simgan_dist.cli import main

main()
