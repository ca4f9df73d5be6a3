"""`glasschat serve`: the engine behind an OpenAI-compatible HTTP API (Starlette on uvicorn).

The pieces, in the order a request meets them: `routes` (HTTP, auth, errors), `validate`
(the JSON body becomes a `ServedRequest`), `line` (one request at a time, the rest wait
in a bounded queue), a `backend.ServeBackend` (the model: `engine_backend`, which renders
each request to ids for the engine's cache service and reads its turn through
`turn_events`; `app_backend`, the same inside the app with `glasschat --serve`, started by
`app_server`; or a test's fake), `stop_strings`, `replies` (OpenAI's JSON shapes) and
`served_store` (saving).
"""
