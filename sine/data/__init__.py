"""Importing this package registers the datasets."""
