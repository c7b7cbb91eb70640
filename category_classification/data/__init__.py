"""Reading offers and building datasets: sources, offer text, splits, the builder."""
