"""Chapter 04: references, mutants and the temporal, adversarial and conditional-GAN recipes."""
