"""The REST API and the web view for subscribers (`skystream api`): scoring uploads, archived alerts,
object histories and the model registry, as JSON (stream/api/openapi.py) and as plain HTML pages.

``app`` holds the aiohttp application (``create_app(settings)``) and its routes; ``queries`` what they
read from the archive and the registry; ``pages`` the HTML; ``plots`` the figures (matplotlib PNGs).
"""
