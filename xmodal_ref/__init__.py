"""xmodal reference package."""
