"""The web dashboard, served by ``mailvet serve`` at ``/``: server-rendered pages
(Jinja2), CSS of its own, SVG charts drawn on the server, small hand-written scripts.

``mailvet.dashboard.mount.install(app)`` adds its routers, its static files and its
error pages to the API app. Nothing is loaded from another host: the pages work with
no internet.
"""
