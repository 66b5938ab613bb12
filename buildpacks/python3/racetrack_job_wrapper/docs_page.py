"""The Swagger UI page of a job, loading only the assets bundled next to the wrapper.

URLs stay as the caller gives them (relative), so the page works behind a path prefix.
"""

from __future__ import annotations

import html
import json

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" type="text/css" href="{css}">
<link rel="icon" type="image/png" href="{favicon}" sizes="32x32">
<style>
html {{ box-sizing: border-box; overflow-y: scroll; }}
*, *:before, *:after {{ box-sizing: inherit; }}
body {{ margin: 0; background: #fafafa; }}
</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}" charset="utf-8"></script>
<script>
window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: {openapi_url},
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null
  }});
}};
</script>
</body>
</html>
"""


def swagger_ui_page(*, title: str, openapi_url: str, assets_url: str) -> str:
    """A complete HTML page; Swagger UI validates nothing online (`validatorUrl: null`)."""
    return _PAGE.format(
        title=html.escape(title),
        css=_asset(assets_url, "swagger-ui.css"),
        favicon=_asset(assets_url, "favicon-32x32.png"),
        bundle=_asset(assets_url, "swagger-ui-bundle.js"),
        openapi_url=_js_string(openapi_url),
    )


def _asset(assets_url: str, name: str) -> str:
    """`docs/assets` + `swagger-ui.css`, escaped for an HTML attribute; never made absolute."""
    base = assets_url.rstrip("/")
    if assets_url and not base:  # "/" itself: the root
        return html.escape(f"/{name}", quote=True)
    return html.escape(f"{base}/{name}" if base else name, quote=True)


def _js_string(value: str) -> str:
    """A JS string literal that cannot end the <script> element or open an HTML comment."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
