#!/bin/sh
# Has every package a requirements file installs (pins and what they pull in) a binary wheel for
# Python VERSION on Linux x86_64, on the default index alone? pip's dry run resolves it with
# --isolated (no pip configuration, no PIP_* variables: no private index, as on a machine that
# sees only the public index) and --only-binary=:all:, and nothing is installed.
#   scripts/check-wheels.sh 3.13                      # requirements.txt
#   scripts/check-wheels.sh 3.11 dockerfiles/requirements-torch.txt
# multi_key_dict (python-jenkins needs it) is published as a source archive only; it is pure
# Python and builds on any version, so it is built into a wheel here first.
set -eu
version=${1:?usage: scripts/check-wheels.sh PYTHON_VERSION [REQUIREMENTS_FILE]}
requirements=${2:-requirements.txt}
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$python" -m pip --isolated wheel --quiet --no-deps --wheel-dir "$tmp/sdist-only" multi_key_dict==2.0.3
set -- --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
       --platform linux_x86_64
for glibc_minor in $(seq 5 41); do  # manylinux_2_5 … manylinux_2_41 (Debian trixie's glibc)
    set -- "$@" --platform "manylinux_2_${glibc_minor}_x86_64"
done
"$python" -m pip --isolated install --dry-run --ignore-installed --quiet --only-binary=:all: \
    --find-links "$tmp/sdist-only" --python-version "$version" "$@" --target "$tmp/target" \
    --report "$tmp/report.json" -r "$requirements"
"$python" - "$tmp/report.json" "$version" "$requirements" <<'PY'
import json
import sys

report, version, requirements = sys.argv[1:]
wheels = sorted(item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.load(open(report))["install"])
for wheel in wheels:
    print(wheel)
print(f"{requirements}: {len(wheels)} packages, each a wheel for Python {version}")
PY
