"""The 401 a browser gets: a small page saying how to get a token and hand it to the browser.

Programs get the JSON 401 as before; only a request whose `Accept` asks for `text/html` (what a
browser sends when it opens a job's `/docs`) gets the page. Everything echoed is escaped.
"""

from __future__ import annotations

import html

from router.auth import AUTH_HEADER

MAX_ACCEPT_CHARS = 4096  # of the Accept header looked at (browsers send about 100)
MAX_MEDIA_RANGES = 64
COOKIE_PATH = "/pub/job/"


def wants_html(accept: str) -> bool:
    """Whether `accept` lists `text/html` (with a q above 0): a browser opening a page."""
    for media_range in accept[:MAX_ACCEPT_CHARS].split(",")[:MAX_MEDIA_RANGES]:
        media_type, *parameters = media_range.split(";")
        if media_type.strip().lower() != "text/html":
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def unauthorized_page(
    *, job: str, version: str, reason: str, request_id: str, token_command: str
) -> str:
    """The page: why (the same reason the JSON carries), how to get a token, how to set the
    cookie the router reads (`X-Racetrack-Auth`, for job paths only), and a form that sets it."""
    e = html.escape
    cookie = f"{AUTH_HEADER}=TOKEN; path={COOKIE_PATH}; SameSite=Strict"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>401: {e(job)} {e(version)} needs a token</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em;line-height:1.5}}
code,pre{{background:#f3f3f3;padding:.1em .3em}}pre{{padding:.6em;overflow-x:auto}}</style>
</head>
<body>
<h1>{e(job)} {e(version)} needs a Racetrack token</h1>
<p>The router answered 401: {e(reason)}</p>
<h2>1. Get your token</h2>
<pre>{e(token_command)}</pre>
<h2>2. Give it to this browser</h2>
<p>The router reads the token from the <code>{e(AUTH_HEADER)}</code> header or from the cookie of
that name (it never passes either on to the job). Paste the token here to set the cookie for job
pages, then this page reloads:</p>
<form id="token-form">
<input id="token" type="password" autocomplete="off" placeholder="rt_..." size="50" required>
<button type="submit">Set the cookie</button>
</form>
<p>Or set it in the browser's console (replace <code>TOKEN</code>):</p>
<pre>document.cookie = "{e(cookie)}"</pre>
<p>Programs send the header instead: <code>{e(AUTH_HEADER)}: TOKEN</code>.</p>
<p><small>request id {e(request_id)}</small></p>
<script>
document.getElementById("token-form").addEventListener("submit", function (event) {{
  event.preventDefault();
  var token = document.getElementById("token").value.trim();
  var secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "{AUTH_HEADER}=" + encodeURIComponent(token)
    + "; path={COOKIE_PATH}; SameSite=Strict" + secure;
  location.reload();
}});
</script>
</body>
</html>
"""
