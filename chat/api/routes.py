"""The HTTP side: `GET /v1/models` and `POST /v1/chat/completions` on Starlette, every error in OpenAI's shape.

A handler checks the key, validates the body and puts the request in the line; it
never waits on the model except through its ticket. A streamed reply starts once the
prompt is read (so a request the model refuses still gets a 400, not a broken stream),
then sends a chunk per token and `data: [DONE]`. A client that disconnects, streaming
or not, cancels its ticket: skipped if it was waiting, stopped within a step if not.
"""

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from typing import Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .backend import PromptRead, ReplyStep
from .line import Failed, Finished, Item, LineFull, RequestLine, Ticket
from .replies import DONE, Reply, event, finish_reason, models_list
from .validate import ApiError, chat_request, parse_body

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may sit on the tokens


def build_app(line: RequestLine, model: str, api_key: Optional[str] = None) -> Starlette:
    created = int(time.time())

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(
                status=401,
                message="Incorrect API key: send the header Authorization: Bearer KEY, with the key "
                "`glasschat serve --api-key` was given.",
                code="invalid_api_key",
            )

    async def models(request: Request) -> Response:
        check_key(request)
        return JSONResponse(models_list(model, created))

    async def completions(request: Request) -> Response:
        check_key(request)
        served = chat_request(parse_body(await request.body()))
        ticket = line.submit(served, asyncio.get_running_loop())
        watcher = asyncio.create_task(_cancel_on_disconnect(request, ticket))
        replies = ticket.replies()
        reply = Reply(model=model, top_logprobs=served.settings.top_logprobs)
        try:
            first = await replies.__anext__()  # the prompt read, or why it could not be
            if isinstance(first, Failed):
                raise first.error
            if served.stream:
                stream = _stream(reply, first, replies, ticket, watcher, served.include_usage)
                return StreamingResponse(stream, media_type="text/event-stream", headers=STREAM_HEADERS)
            return JSONResponse(await _whole(reply, first, replies))
        except BaseException:
            ticket.cancel()
            watcher.cancel()
            raise
        finally:
            if not served.stream:
                watcher.cancel()

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ],
        exception_handlers={
            ApiError: _api_error,
            LineFull: _line_full,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )


async def _whole(reply: Reply, prompt: PromptRead, replies: AsyncIterator[Item]) -> dict:
    async for item in replies:
        if isinstance(item, ReplyStep):
            reply.add(item)
        elif isinstance(item, Finished):
            finish = finish_reason(item.end, item.stopped_by_string)
            return reply.whole(finish, prompt, item.end.completion_tokens)
        elif isinstance(item, Failed):
            raise item.error
    raise ApiError(status=500, message="The reply ended without its end.", type="server_error")


async def _stream(
    reply: Reply,
    prompt: PromptRead,
    replies: AsyncIterator[Item],
    ticket: Ticket,
    watcher: asyncio.Task,
    include_usage: bool,
) -> AsyncIterator[str]:
    try:
        yield event(reply.chunk({"role": "assistant", "content": ""}))
        async for item in replies:
            if isinstance(item, ReplyStep):
                yield event(reply.chunk({"content": item.text}, item))
            elif isinstance(item, Finished):
                yield event(reply.chunk({}, finish=finish_reason(item.end, item.stopped_by_string)))
                if include_usage:
                    yield event(reply.usage_chunk(prompt, item.end.completion_tokens))
            elif isinstance(item, Failed):
                yield event(item.error.body())  # headers are gone: the error travels in the stream
        yield DONE
    finally:
        # Whether it ended or the client left (Starlette cancels this generator): a reply
        # still running is stopped at its next step; one that ended is not affected.
        ticket.cancel()
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, ticket: Ticket) -> None:
    """Wait for the client to go away, and cancel its ticket then (the body has been read: only that can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    ticket.cancel()


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _line_full(request: Request, exc: Exception) -> Response:
    error = ApiError(
        status=429,
        message="The server is busy: as many requests are waiting as it holds (glasschat serve --queue). Try again.",
        code="queue_full",
        type="rate_limit_error",
    )
    return JSONResponse(error.body(), status_code=429, headers={"Retry-After": "1"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    message = f"{where}: {exc.detail}. This server has GET /v1/models and POST /v1/chat/completions."
    error = ApiError(status=exc.status_code, message=message, type="invalid_request_error")
    return JSONResponse(error.body(), status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    error = ApiError(status=500, message=f"Internal error ({type(exc).__name__}: {exc}).", type="server_error")
    return JSONResponse(error.body(), status_code=500)
