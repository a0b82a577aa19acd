"""simgan-dist: S+U learning (SimGAN) on Ray Train + DeepSpeed."""
