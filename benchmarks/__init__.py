"""Timing scripts; each prints what it measured and on which machine."""
