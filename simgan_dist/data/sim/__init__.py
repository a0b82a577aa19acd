"""Simulators that make labeled synthetic images, and the bundled real digits."""
