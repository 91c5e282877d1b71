"""Predictions: trunk features of a store, predictions over a store or new images."""
