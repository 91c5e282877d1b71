"""Scoring and showing runs: evaluate, submission, compare, figures, report."""
