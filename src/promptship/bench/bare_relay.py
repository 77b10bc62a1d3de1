"""The floor of a second HTTP hop in Python: a relay with the gateway service's stack (uvicorn, Starlette, an
``httpx.AsyncClient`` on the loop) that forwards a chat request to the provider and its answer back as the
bytes come, and does nothing else — no key, gate, routing, ledger or scan. ``python -m
promptship.bench.gateway`` runs it as a process of its own beside the service, so that what the service costs
over a bare hop is measured apart from what any Python hop costs.

``python -m promptship.bench.bare_relay --port P --upstream http://127.0.0.1:N`` (127.0.0.1 only)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence


def relay_app(upstream: str):  # -> Starlette
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    http = httpx.AsyncClient(base_url=upstream, timeout=30)

    async def chat(request: Request) -> Response:
        body = await request.body()
        upstream_request = http.build_request(
            "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        response = await http.send(upstream_request, stream=True)

        async def relayed() -> AsyncIterator[bytes]:
            try:
                async for received in response.aiter_raw():
                    yield received
            finally:
                await response.aclose()

        kind = response.headers.get("content-type", "application/json")
        return StreamingResponse(relayed(), status_code=response.status_code, media_type=kind)

    async def health(request: Request) -> Response:
        return Response("ok")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)])


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from promptship.servers.webhook import listening_socket

    parser = argparse.ArgumentParser(prog="python -m promptship.bench.bare_relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the provider's base URL (without /v1)")
    args = parser.parse_args(argv)
    sock = listening_socket("127.0.0.1", args.port)
    config = uvicorn.Config(relay_app(args.upstream), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
