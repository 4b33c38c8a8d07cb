"""Chapter 10 · scaling: contrastive training across processes, and beyond one device's memory (being built)."""
