"""The registry's read-only web page under ``/ui/`` (docs/api.md, "Web page").

``routes.py``: the Starlette routes (auth, pages); ``views.py``: what each page shows,
computed from registry records (pure); ``layout.py``: the lineage graph's layered layout
and SVG (pure); ``templates/``: Jinja2; ``static/``: one stylesheet and one small script.
"""

from .routes import ui_routes

__all__ = ["ui_routes"]
