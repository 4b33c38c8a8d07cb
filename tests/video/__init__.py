"""Chapter 08: references, mutants and the video recipe."""
