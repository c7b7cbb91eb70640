"""Classify web product offers (WDC LSPC 2020) into categories.

Library modules live here beside the thin scripts that call them; see README.md for the pipeline.
"""

__version__ = "0.1.0"
