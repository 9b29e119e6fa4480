"""Shared plumbing every foodmesh service is built on."""
