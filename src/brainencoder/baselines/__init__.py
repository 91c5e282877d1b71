"""Baseline encoders fitted on the same features and splits."""
