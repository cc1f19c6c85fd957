# The serving image: `python -m jobs.serve.server` (the server behind `pushtune serve`) answering
# POST /models/NAME/predict with the production version of each model, on port 8000.
# It needs the run store (PUSHTUNE_DB, or pushtune.db under PUSHTUNE_HOME) and the models'
# directory (PUSHTUNE_ARTIFACTS/models) at the paths the controller recorded: see docs/serving.md.
# Build context (as `pushtune images build` assembles it for the other images): this file,
# dockerfiles/requirements-serve.txt, jobs/ and wheelhouse/ (wheels for offline builds, else empty).
#   online:  BASE_IMAGE=python:3.11-slim (the default), PIP_OPTIONS="" (pip from the configured index;
#            torch is the CPU build 2.13.0+cpu where it serves it: docs/install.md)
#   offline: BASE_IMAGE=pushtune/base:bookworm, PIP_OPTIONS="--no-index --find-links /wheelhouse"
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the virtualenv. The wheelhouse stays in this stage, out of the final image.
FROM ${BASE_IMAGE} AS deps
COPY dockerfiles/requirements-serve.txt /tmp/requirements.txt
COPY wheelhouse/ /wheelhouse/
ARG PIP_OPTIONS=""
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        $PIP_OPTIONS -r /tmp/requirements.txt \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# Stage 2: the server. It runs as uid 1000 unless `docker run --user` says otherwise (the uid
# that owns the store and the models' directory); HOME and the frameworks' config dirs are in /tmp.
FROM ${BASE_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/pushtune \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KERAS_HOME=/tmp/keras \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PUSHTUNE_HOME=/pushtune
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin pushtune \
 && mkdir -p /pushtune && chmod 1777 /pushtune
# The whole package (small): the server imports only jobs.serve, jobs.deploy, jobs.store and
# what they import, but a module they come to need must not break the image.
COPY jobs/ /opt/pushtune/jobs/
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "jobs.serve.server", "--host", "0.0.0.0", "--port", "8000"]
