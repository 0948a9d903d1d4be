"""A no-op ASGI app for bench/collect.py: reads the body, answers 200. The server's ceiling
on this machine for a request of the same size (``python -m uvicorn bench.collect_noop:app``
or ``granian --interface asgi bench.collect_noop:app``)."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def ok(request: Request) -> Response:
    await request.body()
    return Response(b"{}", media_type="application/json")


app = Starlette(routes=[Route("/v1/events", ok, methods=["POST"]), Route("/v1/traces", ok, methods=["POST"])])
