"""Experiments with trained models: adapting a new subject, in-silico exploration."""
