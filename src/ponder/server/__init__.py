"""`ponder serve`'s HTTP server: OpenAI-compatible completions whose requests can run strategies.

Modules: `app` (routes, middleware, `create_app`), `service` (request to work), `execution`
(strategies under a deadline, complete usage), `streaming`, `selection` (which strategy, pure),
`schemas` (the wire models), `wire` (response bodies and chunks), `admission` (the bounded queue),
`auth`, `metrics`, `errors`, `config`. Needs the `server` extra (fastapi, uvicorn).
"""
