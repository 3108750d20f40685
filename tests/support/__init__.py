"""Shared test helpers that are not fixtures (servers the tests start)."""
