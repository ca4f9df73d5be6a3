"""`glasschat serve`: the engine behind an OpenAI-compatible HTTP API (Starlette on uvicorn).

The pieces, in the order a request meets them: `routes` (HTTP, auth, errors), `validate`
(the JSON body becomes a `ServedRequest`), `line` (one request at a time, the rest wait
in a bounded queue), a `backend.ServeBackend` (the model: `engine_backend`, which reads
each turn through `turn_events`; or a test's fake), `stop_strings`, `replies` (OpenAI's
JSON shapes) and `served_store` (saving).
"""
