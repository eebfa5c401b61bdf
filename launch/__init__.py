"""Command-line entry points and cluster placement."""
