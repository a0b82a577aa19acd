"""The S+U protocol on digits, label-free scores and image grids."""
