"""Chapter 07: references, mutants and the generation recipes."""
