"""Domain basics: the group vertex space, regions and metrics."""
