"""Chapter 06: references, mutants and the imbalance recipe."""
