"""The HTTP route of the project's Starlette apps (the collector's door, the UI)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import Route as _StarletteRoute
from starlette.types import Receive, Scope, Send


class Route(_StarletteRoute):
    """:class:`starlette.routing.Route` whose 405 answer lists the allowed methods sorted in
    its ``Allow`` header (``GET, HEAD``; ``OPTIONS, POST``). Starlette joins a set there,
    whose order varies between processes with Python's string hashing."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            headers = {"Allow": ", ".join(sorted(self.methods))}
            if "app" in scope:  # inside a Starlette app: its exception handlers answer
                raise HTTPException(status_code=405, headers=headers)
            await PlainTextResponse("Method Not Allowed", status_code=405, headers=headers)(scope, receive, send)
            return
        await super().handle(scope, receive, send)
