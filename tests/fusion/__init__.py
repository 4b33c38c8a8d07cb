"""Chapter 01: references, mutants and the fusion experiment."""
