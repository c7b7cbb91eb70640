"""Shared plumbing: one-line user errors, model-folder metadata, devices."""
