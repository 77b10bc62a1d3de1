# The OpenHands agent-server image of k8s/base/openhands/ (ghcr.io/promptship/openhands-agent-server:1.57.0):
# openhands-agent-server from scripts/openhands.requirements.lock (the pins `scripts/openhands.sh install` uses),
# the tools the agent's terminal needs (git, tmux), a non-root user. No promptship code, no credentials: the pod
# starts it with k8s/base/openhands/launch.py (a ConfigMap) and its session key from a projected Secret file.
# (No Docker engine runs on the development machines or in .ci/run: build it where one runs.)
#   docker build -f scripts/openhands.Dockerfile -t ghcr.io/promptship/openhands-agent-server:1.57.0 .
FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends git tmux ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --shell /bin/bash agent
ENV VIRTUAL_ENV=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY scripts/openhands.requirements.lock /tmp/openhands.requirements.lock
RUN pip install --no-cache-dir uv==0.13.8 && uv venv /opt/venv \
    && uv pip sync --no-cache --python /opt/venv/bin/python /tmp/openhands.requirements.lock \
    && /opt/venv/bin/python -c "import openhands.agent_server" && rm /tmp/openhands.requirements.lock
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
WORKDIR /var/lib/openhands
USER 10001:10001
EXPOSE 3000
CMD ["python", "-m", "openhands.agent_server", "--host", "127.0.0.1", "--port", "3000"]
