"""artfs: a versioned artifact registry for machine learning, mounted as a filesystem."""

__version__ = "0.1.0"
