"""Hostile-input tests (issue 6); a package so that its conftest does not shadow tests/conftest.py."""
