"""Chapter 09: references, mutants and the tiny-LLaVA recipe."""
