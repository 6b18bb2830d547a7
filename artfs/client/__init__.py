"""Clients of the registry: over HTTP (``http.py``) or in-process (``local.py``)."""
