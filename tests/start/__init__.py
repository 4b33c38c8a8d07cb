"""Chapter 00: its reference and mutants."""
