"""Where pushtune's own files are: the checkout (or installed tree) holding `jobs/`, `jenkins/`
and `dockerfiles/`."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
