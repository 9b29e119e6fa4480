# syntax=docker/dockerfile:1
# One image for every foodmesh process: `foodmesh serve <service>` (eta, pricing, catalog,
# location, dispatch, order, gateway, dashboard) and `foodmesh migrate` (the init container).
#
#   docker build -t foodmesh:0.1.0 .
#   docker run --rm foodmesh:0.1.0 order            # = foodmesh serve order
#
# The base is pinned by version tag AND digest (a tag can be re-pushed, a digest cannot).
# Re-check the digest when bumping: `docker buildx imagetools inspect python:3.11.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

# ---------------------------------------------------------------- builder: wheels, then a venv
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the package needs to build: no tests, no state, no .env (see .dockerignore too).
COPY pyproject.toml README.md constraints.txt ./
COPY foodmesh ./foodmesh
COPY servers ./servers
COPY gateway ./gateway
COPY clients ./clients
COPY dashboard ./dashboard
# Wheels of foodmesh and every runtime dependency (no dev extra) at the versions the test
# suite passed with (constraints.txt), then an isolated venv installed from those wheels only.
RUN python -m pip wheel --wheel-dir /wheels -c constraints.txt . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels foodmesh \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/pip uninstall -y pip

# ---------------------------------------------------------------- model: the first ETA model
# Trained on the generated city (20,000 simulated deliveries drawn from the same model of
# the city the simulator lives in), so production serves a trained model from the first
# request; `foodmesh retrain-eta` beside the ETA service replaces it with better ones learnt
# from the platform's own deliveries (k8s/base/eta).
FROM ${PYTHON_IMAGE} AS model
COPY --from=builder /opt/venv /opt/venv
RUN OMP_WAIT_POLICY=PASSIVE /opt/venv/bin/foodmesh --state-dir /tmp/foodmesh train-eta \
      --source sim --orders 20000 --out /opt/foodmesh/models

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="foodmesh" \
      org.opencontainers.image.description="foodmesh services: foodmesh serve <service>" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FOODMESH_HOST=0.0.0.0 \
    FOODMESH_STATE_DIR=/tmp/foodmesh
# Not development mode (no FOODMESH_DEV): a process refuses to start without a real
# FOODMESH_AUTH_SECRET (>= 32 bytes); the dev overlay sets FOODMESH_DEV=1.
COPY --from=builder /opt/venv /opt/venv
COPY --from=model /opt/foodmesh/models /opt/foodmesh/models
# A fixed numeric uid/gid (no passwd entry needed): Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
# gRPC services 7051-7057, metrics 9101-9107, gateway 8080, dashboard 8090.
EXPOSE 7051 7052 7053 7054 7055 7056 7057 9101 9102 9103 9104 9105 9106 9107 8080 8090
# Exec form: no shell at run time; SIGTERM reaches the Python process (graceful drain).
ENTRYPOINT ["foodmesh", "serve"]
CMD ["gateway"]
