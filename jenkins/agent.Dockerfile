# A pushtune build agent: the official inbound agent (remoting, connecting to the controller over
# WebSocket), the Docker CLI and pushtune. Builds run here, never on the controller: every job
# of the chain is tied to the label `pushtune` (jenkins/jobs/), which the agents of
# jenkins/casc/jenkins.yaml carry. Attempts run in containers of the engine the agent reaches
# (the host's socket, or DOCKER_HOST), driven by pushtune's Docker SDK; the CLI is there for
# people and scripts on the agent.
# Build from the repository root:  docker build -f jenkins/agent.Dockerfile -t pushtune/agent .
# (/.dockerignore keeps jenkins/secrets/ and local state out of the build context.)
#
#   INBOUND_AGENT_TAG  the jenkins/inbound-agent tag, pinned (remoting 3355.v388858a_47b_33,
#                      image build 5, JDK 21; jenkinsci/docker-agent docker-bake.hcl names the
#                      tags REMOTING-BUILD-jdkN). Remoting talks to older and newer controllers.
#   DOCKER_CLI_IMAGE   where the static `docker` binary comes from. The CLI negotiates the API
#                      version down to the engine's; Debian's docker.io (20.10) is too old for
#                      engines 29+, which refuse API versions below 1.44.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL
#                      pip's index: docker-compose.yml passes on the build host's (unset: the
#                      default index). pip's configuration files of the build host are not seen.
#   PIP_OPTIONS        any other pip options.
# apt uses the base image's sources.
ARG INBOUND_AGENT_TAG=3355.v388858a_47b_33-5-jdk21
ARG DOCKER_CLI_IMAGE=docker:29-cli

FROM ${DOCKER_CLI_IMAGE} AS docker-cli

FROM jenkins/inbound-agent:${INBOUND_AGENT_TAG}

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker

# pushtune in its own virtualenv, on PATH for the builds: the core (pyproject.toml) and psycopg for
# PostgreSQL (PUSHTUNE_DB), at the versions requirements.txt pins (-c: pins only what is
# installed). No TensorFlow, torch or scikit-learn: attempts train in the runtime images, so
# RUNTIME=local cannot train on an agent. Debian's python3 (trixie: 3.13; docs/install.md).
COPY requirements.txt pyproject.toml README.md /opt/pushtune/src/
COPY jobs /opt/pushtune/src/jobs
COPY notify /opt/pushtune/src/notify
COPY jenkins/jobs /opt/pushtune/src/jenkins/jobs
COPY dockerfiles /opt/pushtune/src/dockerfiles
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_OPTIONS=""
RUN python3 -m venv /opt/pushtune/venv \
 && /opt/pushtune/venv/bin/pip install --no-cache-dir $PIP_OPTIONS \
        -c /opt/pushtune/src/requirements.txt '/opt/pushtune/src[postgres]' \
 && ln -s /opt/pushtune/venv/bin/pushtune /usr/local/bin/pushtune \
 && /usr/local/bin/docker --version \
 && install -d -o jenkins -g jenkins /var/lib/pushtune /srv/pushtune/artifacts

COPY jenkins/agent-entrypoint.sh /usr/local/bin/pushtune-agent
RUN chmod 0755 /usr/local/bin/pushtune-agent

USER jenkins
# PUSHTUNE_HOME: this agent's own files. PUSHTUNE_ARTIFACTS: runs' outputs, checkpoints and
# reports, on storage every agent mounts at this same path (docker-compose.yml: one named
# volume; across machines: NFS). copy: the engine may not see the agent's paths (the agent is a
# container; the engine may be remote), so files go in and out through the Docker API.
ENV PUSHTUNE_HOME=/var/lib/pushtune \
    PUSHTUNE_ARTIFACTS=/srv/pushtune/artifacts \
    PUSHTUNE_DOCKER_TRANSFER=copy
ENTRYPOINT ["/usr/local/bin/pushtune-agent"]
