"""Attacks on real nodes (issue: hostile peers and anonymous clients); see tests/SECURITY.md."""
