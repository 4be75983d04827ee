"""Buyer protocol adapters: pure request builders and answer parsers (no I/O)."""
