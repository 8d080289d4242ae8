"""Importing this package registers the backbone and the meta-architecture."""
