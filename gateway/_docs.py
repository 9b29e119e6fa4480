"""Interactive API docs at ``/docs``: Swagger UI served from the ``swagger-ui-bundle`` wheel.

Nothing is loaded from a CDN: the page, its scripts and styles all come from this
process, so the docs work offline and under a strict Content-Security-Policy
(no inline script: the initializer is its own file).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]

__all__ = ["DOCS_HTML", "DOCS_INIT_JS", "asset"]

DOCS_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>foodmesh API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

DOCS_INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""

_SUFFIXES = (".js", ".css", ".png", ".map")


@cache
def _assets() -> dict[str, Path]:
    root = Path(swagger_ui_bundle.swagger_ui_path)
    return {p.name: p for p in root.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES)}


def asset(name: str) -> Path | None:
    """The vendored file ``name`` (only files of the bundle's folder, by exact name)."""
    return _assets().get(name)
