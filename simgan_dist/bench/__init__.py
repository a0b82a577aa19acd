"""Benchmarks behind `simgan bench`: nothing in the package imports them but the CLI."""
