"""Chapter 02: references, mutants and the attention demo."""
