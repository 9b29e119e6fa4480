"""Server side of foodmesh: shared runtime plus one package per service."""
