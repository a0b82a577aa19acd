"""The networks, losses, history buffer and pixel mapping: pure torch, no Ray or DeepSpeed."""
