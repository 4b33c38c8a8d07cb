"""Chapter 05: mutants and the sentiment model recipe."""
