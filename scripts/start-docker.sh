#!/usr/bin/env bash
# Start a Docker engine when none answers, then wait (bounded) until `docker info` answers.
# Idempotent: does nothing when an engine already answers. Needs root to start dockerd.
#   scripts/start-docker.sh [--timeout SECONDS]   (default 60; log: $DOCKERD_LOG or /tmp/dockerd.log)
set -euo pipefail

timeout=60
if [[ "${1:-}" == "--timeout" ]]; then timeout="${2:?--timeout needs a number of seconds}"; fi
log="${DOCKERD_LOG:-/tmp/dockerd.log}"

answers() { docker info >/dev/null 2>&1; }

if answers; then
    echo "start-docker: a Docker engine already answers"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-docker: dockerd is not installed (Debian: apt-get install -y docker.io)" >&2
    exit 1
fi
if [[ -n "${DOCKER_HOST:-}" && "${DOCKER_HOST}" != unix:///var/run/docker.sock ]]; then
    echo "start-docker: DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local dockerd for it" >&2
    exit 1
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1 && systemctl start docker >/dev/null 2>&1; then
        echo "start-docker: started docker with systemctl"
    else
        echo "start-docker: starting dockerd (log: $log)"
        # setsid: the daemon outlives this script and the shell that ran it.
        setsid dockerd >"$log" 2>&1 < /dev/null &
    fi
fi
for ((waited = 0; waited < timeout; waited++)); do
    if answers; then
        echo "start-docker: the Docker engine answers (after ${waited} s)"
        exit 0
    fi
    sleep 1
done
echo "start-docker: no answer from the Docker engine after ${timeout} s; see $log" >&2
tail -n 20 "$log" >&2 2>/dev/null || true
exit 1
