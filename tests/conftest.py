"""Shared test fixtures: nothing here talks to Docker unless a test asks for it."""
