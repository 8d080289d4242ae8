"""Demos of sine: command line (demo.py), web app (app.py) and their drawing (visualize.py)."""
