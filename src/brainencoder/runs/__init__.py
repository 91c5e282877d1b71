"""The run folder: checkpoints, reading runs back, ensembles and soups."""
