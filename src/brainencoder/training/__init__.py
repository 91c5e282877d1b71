"""Training configuration and loop."""
