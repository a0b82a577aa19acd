"""Hyperparameter search with Ray Tune over whole training runs."""
