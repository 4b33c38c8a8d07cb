"""Chapter 03: references and mutants (mini-CLIP is exercised by the alignment recipes and notebooks)."""
