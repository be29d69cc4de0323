"""The request body limit both APIs put in front of their routes (api/enterprise/middleware.py,
api/province/audit.py): a body over the limit is refused with 413 without reading beyond the limit,
at once when ``Content-Length`` declares it, or as soon as a streamed (chunked) body passes it.

Each API keeps its own refusal (its error shape, its audit detail, its metrics); only the counting
is here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from api.asgi import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` once the body passes the limit: nothing more is read."""


def declared_over(scope: Scope, limit: int) -> bool:
    """A ``Content-Length`` header says more than ``limit`` bytes (an unreadable one says nothing)."""
    for k, v in scope.get("headers") or ():
        if k == b"content-length":
            try:
                if int(v) > limit:
                    return True
            except ValueError:
                pass
    return False


async def run_limited(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int, refuse: Callable[[], Awaitable[None]]
) -> None:
    """Run ``app`` with a ``receive`` that stops the request once more than ``limit`` bytes of body
    came in; ``refuse()`` then sends the 413, unless the app had started its answer already (no
    second answer can follow the first)."""
    seen = 0
    started = False

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
        return message

    async def tracking(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, limited, tracking)
    except BodyTooLarge:
        if not started:
            await refuse()
