"""Fixtures for the real redis service (see scripts/)."""
