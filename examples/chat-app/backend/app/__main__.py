"""`python -m app`: serve the backend with uvicorn on $HOST:$PORT (default 0.0.0.0:8000)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.config import Config, ConfigError
from app.main import create_app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"chat-app backend: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
