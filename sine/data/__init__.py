"""Importing this package registers the datasets."""
from . import datasets  # noqa: F401
