"""Tests of the seeded generators and loaders in xmodal_ref.data."""
