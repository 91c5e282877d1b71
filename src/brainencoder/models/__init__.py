"""Trunk, head and encoder models."""
