"""The public Python API (re-exported by ``artfs``): see docs/python.md.

``registry.py`` (``Registry``), ``version.py`` (``Version``, ``File``), ``fileobj.py``
(``Version.open``), ``draft.py`` (``Draft``), ``sync.py`` (the background trio loop that
every synchronous call is bridged to), ``fsspec_fs.py`` (the ``artfs://`` filesystem).
"""
