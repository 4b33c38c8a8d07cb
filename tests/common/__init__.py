"""Tests of the helpers that recipes share."""
