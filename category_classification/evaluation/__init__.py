"""Metrics and the files every trainer writes (metrics.json, results, PNGs)."""
