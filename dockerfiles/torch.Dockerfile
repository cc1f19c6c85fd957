# The torch image: PyTorch models, convolutional and dense (the cnn/pytorch and ann/pytorch
# profiles, jobs/train/profiles.py): the CPU build of torch, NumPy, Pillow, scikit-learn; no TensorFlow.
# Built by `pushtune images build torch` (jobs/train/images.py), which assembles the build context:
# this file, dockerfiles/requirements-torch.txt, jobs/ (what model scripts import) and wheelhouse/
# (wheels for --offline, else empty).
#   online:  BASE_IMAGE=python:3.11-slim (the default), PIP_OPTIONS="" (pip from the configured index)
#   offline: BASE_IMAGE=pushtune/base:bookworm, PIP_OPTIONS="--no-index --find-links /wheelhouse"
# torch==2.13.0 is the CPU build 2.13.0+cpu when pip's index serves it (docs/install.md).
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the virtualenv. The wheelhouse stays in this stage, out of the final image.
# Each stage starts with what sets its image apart: Docker's classic builder follows the newest
# of several cached steps that look alike, so a step shared by all images right after FROM would
# send one image's build down another image's cache branch.
FROM ${BASE_IMAGE} AS deps
COPY dockerfiles/requirements-torch.txt /tmp/requirements.txt
COPY wheelhouse/ /wheelhouse/
ARG PIP_OPTIONS=""
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        $PIP_OPTIONS -r /tmp/requirements.txt \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# Stage 2: the runtime image. pushtune runs containers as the invoking user's uid:gid, which
# may have no passwd entry: HOME and the tools' config dirs point at /tmp, and /work (the
# working directory; the attempt's model.py is mounted there) is writable by anyone.
FROM ${BASE_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/pushtune \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin pushtune \
 && mkdir -p /work /output /data /cache && chmod 1777 /work /output /cache
COPY jobs/ /opt/pushtune/jobs/
USER 1000:1000
WORKDIR /work
CMD ["python", "model.py"]
