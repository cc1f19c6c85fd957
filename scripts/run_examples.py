"""`make run`: the example models through the loop, as a user would run them.

Each example starts below its threshold on purpose, so the run shows the loop tweaking and
retraining: the Keras, scikit-learn and PyTorch profiles (the torch examples need torch, which
`make install` puts in the venv; with PUSHTUNE_RUNTIME=docker they run in the torch image). The
face example needs the ORL faces (PUSHTUNE_DATA, default ../shared/data/att_faces); without them
it is skipped with a note.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The local runtime by default: with `--runtime auto`, a machine with Docker would first build the
# runtime images (minutes). `PUSHTUNE_RUNTIME=docker make run` runs the examples in containers.
RUNTIME = os.environ.get("PUSHTUNE_RUNTIME", "local")

EXAMPLES = [
    ("models/regression_logistic.py", ["--threshold", "0.95"]),
    ("models/notebook_digits.ipynb", ["--threshold", "0.93"]),  # a notebook: C×10 in its %%time cell
    ("models/ann_digits.py", ["--threshold", "0.9"]),
    ("models/plain_keras_digits.py", ["--threshold", "0.9"]),  # no pushtune import: captured by the launcher
    ("models/torch_digits_mlp.py", ["--threshold", "0.9"]),  # SGD's rate far too high: ÷10
    ("models/torch_digits_cnn.py", ["--threshold", "0.9"]),  # too few epochs: more, warm-started
    ("models/face_vgg16.py", ["--threshold", "0.9", "--data", "{data}"]),
]


def main() -> int:
    data = Path(os.environ.get("PUSHTUNE_DATA") or ROOT.parent / "shared/data/att_faces")
    worst = 0
    for model, args in EXAMPLES:
        if "{data}" in args and not data.is_dir():
            print(f"== {model}: skipped, no face data at {data} (set PUSHTUNE_DATA)\n", flush=True)
            continue
        command = [sys.executable, "-m", "jobs", "run", model, "--runtime", RUNTIME,
                   *(a.format(data=data) for a in args)]
        print(f"== pushtune run {' '.join(command[4:])}", flush=True)
        code = subprocess.call(command, cwd=ROOT)
        print(flush=True)
        worst = max(worst, 0 if code in (0, 3) else code)
    print("history: pushtune runs   ·   one run: pushtune show RUN_ID   ·   reports: .pushtune/runs/*/report.html")
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
