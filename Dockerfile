# ttft-router: the proxy, installed from the hash-pinned runtime lock, run as a non-root user.
# Build:  docker build -t ttft-router .
#         docker build --build-arg WITH_LITELLM=true -t ttft-router:litellm .   # kind: litellm
# Run:    docker run -p 8080:8080 \
#           -v "$PWD/config.yaml:/etc/ttft-router/config.yaml:ro" \
#           -v "$PWD/policies:/etc/ttft-router/policies:ro" \
#           -e TTFT_ROUTER_API_KEY -e TTFT_ROUTER_ADMIN_KEY ttft-router
# Compose and Kubernetes: deploy/ and docs/deployment.md.
# requirements-runtime.lock is requirements.lock without the dev and plots extras and without
# litellm (same pins and hashes); requirements-litellm.lock is what the litellm extra adds.
# Both are written by scripts/runtime-lock.py.

# TODO(digest): pin the base image by digest, `FROM python:3.11-slim@sha256:<digest>` in both
# stages, with the digest of the image you have vetted (`docker buildx imagetools inspect
# python:3.11-slim`). It could not be looked up where this file was written (no access to an
# image registry), and a made-up digest would be worse than none.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG WITH_LITELLM=false
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements-runtime.lock requirements-litellm.lock ./
RUN python -m venv /venv \
 && /venv/bin/pip install --require-hashes --no-deps -r requirements-runtime.lock \
 && if [ "$WITH_LITELLM" = "true" ]; then \
      /venv/bin/pip install --require-hashes --no-deps -r requirements-litellm.lock; fi
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN /venv/bin/pip install --no-deps --no-build-isolation . \
 && /venv/bin/python -c "import proxy.cli, proxy.server"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True \
    PATH=/venv/bin:$PATH
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin ttft
COPY --from=build /venv /venv
# Default policies; mount the deployment's own over /etc/ttft-router (config + policies).
COPY policies /etc/ttft-router/policies
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# SIGTERM drains streams for server.shutdown_drain_s (default 25 s), flushes samples, exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["ttft-router"]
CMD ["serve", "--config", "/etc/ttft-router/config.yaml", "--host", "0.0.0.0", "--port", "8080"]
