"""Algorithm 1's loop, the engines, dist, checkpoints, runs, logging and the Ray Train adapter."""
