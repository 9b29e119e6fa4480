"""Typed async clients for the foodmesh services."""
