# ttft-router: the proxy, installed from the hash-pinned lock file.
# Build:  docker build -t ttft-router .
# Run:    docker run -p 8080:8080 -v $PWD/config.yaml:/etc/ttft-router/config.yaml \
#           -e TTFT_ROUTER_API_KEY=... ttft-router
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
WORKDIR /app

COPY requirements.lock pyproject.toml README.md ./
COPY proxy ./proxy
COPY policies ./policies
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
 && /venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && useradd --system --uid 10001 ttft

USER ttft
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["/venv/bin/ttft-router"]
CMD ["serve", "--config", "/etc/ttft-router/config.yaml", "--host", "0.0.0.0", "--port", "8080"]
