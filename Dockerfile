# The promptship image: worker, webhook receiver and LLM gateway (one image, three commands).
# Multi-stage: dependencies resolved from requirements.lock with uv in a builder, copied into a slim runtime
# that runs as a non-root user. (No Docker engine runs on the development machines: CI builds it.)
# The product only: the sandbox (sandbox/, distribution promptship-sandbox) is neither copied nor installed.
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy VIRTUAL_ENV=/opt/venv
RUN pip install --no-cache-dir uv==0.13.8 && uv venv /opt/venv
WORKDIR /src
COPY requirements.lock overrides.txt ./
RUN uv pip sync --no-cache requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
COPY tasks ./tasks
RUN uv pip install --no-cache --no-deps . && python -m compileall -q /opt/venv/lib || true

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin promptship
COPY --from=build /opt/venv /opt/venv
COPY prefect.yaml /app/prefect.yaml
ENV PATH=/opt/venv/bin:$PATH LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONUNBUFFERED=1 PROMPTSHIP_HOME=/tmp/promptship
WORKDIR /app
USER 10001:10001
EXPOSE 4000 8080
CMD ["promptship", "--help"]
