"""The operator console: server-rendered pages at ``/console``, live through SSE.

Pages read the read models through the same use cases as the JSON API
(``application``), act through the same use cases, and log in people with an API
key once (then a session cookie). Nothing is fetched from a CDN: the one script and
the one stylesheet are in ``static/``.
"""

from api.console.routes import ConsoleState, install_console

__all__ = ["ConsoleState", "install_console"]
