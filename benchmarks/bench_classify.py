"""Static classification speed: `classify_paths` over 1,000 generated, realistic model scripts.

Each file is a mix of Keras CNN/ANN, PyTorch CNN/MLP and scikit-learn scripts (50–300 lines: data
loading, helper functions, training, reporting). Timed on one core, best of a few runs; the
target is under 2 s for the 1,000 files. The agreement with the kind each file was generated as,
and that of the old `grep Conv2D` rule, are reported too.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from jobs.classify.classifier import classify_paths

FILES = 1000
RUNS = 7
TARGET_SECONDS = 2.0

KERAS_HEADERS = [
    "import tensorflow as tf\nlayers = tf.keras.layers\nModel, Sequential = tf.keras.Model, tf.keras.Sequential\n",
    "from tensorflow import keras\nfrom tensorflow.keras import layers\n"
    "from tensorflow.keras.models import Model, Sequential\n",
    "import keras\nfrom keras import Model, Sequential, layers\n",
]
HEADERS = {
    "keras_cnn": KERAS_HEADERS,
    "keras_ann": KERAS_HEADERS,
    "torch": ["import torch\nimport torch.nn as nn\n", "import torch\nfrom torch import nn\n"],
    "sklearn": ["import numpy as np\n"],
}

KERAS_CNN_MODEL = '''
def build_model(input_shape, n_classes, filters={filters}):
    """Convolutional classifier; tweaked by the tuning loop."""
    inputs = layers.Input(shape=input_shape)
    x = inputs
    for block in range({blocks}):
        x = layers.Conv2D(filters * 2 ** block, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense({units}, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return Model(inputs, outputs)
'''

KERAS_ANN_MODEL = '''
def build_model(input_shape, n_classes):
    # a dense network; the CNN variant (Conv2D blocks) was slower on this data
    model = Sequential()
    for width in ({units}, {units2}):
        model.add(layers.Dense(width, activation="relu"))
        model.add(layers.BatchNormalization())
    model.add(layers.Dense(n_classes, activation="softmax"))
    return model
'''

TORCH_CNN_MODEL = '''
class Net(nn.Module):
    def __init__(self, n_classes={n_classes}):
        super().__init__()
        self.conv1 = nn.Conv2d(1, {filters}, 3, padding=1)
        self.conv2 = nn.Conv2d({filters}, {filters2}, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear({filters2} * 14 * 11, n_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))
'''

TORCH_MLP_MODEL = '''
class Net(nn.Module):
    def __init__(self, n_features={units}, n_classes={n_classes}):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, {units2}), nn.ReLU(), nn.Dropout(0.2), nn.Linear({units2}, n_classes)
        )

    def forward(self, x):
        return self.layers(x)

    def init_weights(self, module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
'''

SKLEARN_LINEAR_MODEL = '''
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def build_model(C={c}):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter={iters}))
'''

SKLEARN_FOREST_MODEL = '''
from sklearn.ensemble import RandomForestClassifier


def build_model(n_estimators={units}):
    # not a Conv2D network: a forest on flattened pixels
    return RandomForestClassifier(n_estimators=n_estimators, random_state=0)
'''

KINDS = {  # template: (header key, model source, kind it must get)
    "keras_cnn": ("keras_cnn", KERAS_CNN_MODEL, "cnn"),
    "keras_ann": ("keras_ann", KERAS_ANN_MODEL, "ann"),
    "torch_cnn": ("torch", TORCH_CNN_MODEL, "cnn"),
    "torch_mlp": ("torch", TORCH_MLP_MODEL, "ann"),
    "sklearn_linear": ("sklearn", SKLEARN_LINEAR_MODEL, "regression"),
    "sklearn_forest": ("sklearn", SKLEARN_FOREST_MODEL, "unsupported"),
}

HELPER = '''

def helper_{n}(values, scale={scale}):
    """Normalise a batch of values (step {n} of the preprocessing)."""
    total = 0.0
    for value in values:
        total += float(value) * scale
    mean = total / max(len(values), 1)
    return [float(value) - mean for value in values]
'''

FOOTER = '''

def load_data(root=os.environ.get("PUSHTUNE_DATA", "data")):
    images, labels = [], []
    for label, person in enumerate(sorted(os.listdir(root))):
        for name in sorted(os.listdir(os.path.join(root, person))):
            images.append(os.path.join(root, person, name))
            labels.append(label)
    return images, labels


if __name__ == "__main__":
    data, labels = load_data()
    model = build_model{call}
    print("accuracy:", 0.0)
'''


def generate(directory: Path, count: int, seed: int = 0) -> dict[str, str]:
    """Write `count` model scripts; returns {path: kind it was generated as}."""
    rng = random.Random(seed)
    expected: dict[str, str] = {}
    for number in range(count):
        template = rng.choice(sorted(KINDS))
        header_key, model, kind = KINDS[template]
        values = {
            "filters": rng.choice((16, 32)), "filters2": rng.choice((32, 64)), "blocks": rng.randint(1, 3),
            "units": rng.choice((64, 128, 256)), "units2": rng.choice((32, 64)), "n_classes": 40,
            "c": rng.choice((0.1, 1.0)), "iters": rng.choice((200, 500)),
        }
        parts = [f'"""Generated model script {number} ({template})."""\n\nimport os\n',
                 rng.choice(HEADERS[header_key]), model.format(**values)]
        target_lines = rng.randint(50, 300)
        helpers = 0
        while sum(part.count("\n") for part in parts) + 16 < target_lines:
            parts.append(HELPER.format(n=helpers, scale=rng.random()))
            helpers += 1
        call = "((56, 46, 1), 40)" if template in ("keras_cnn", "keras_ann") else "()"
        parts.append(FOOTER.format(call=call))
        path = directory / f"model_{number:04d}_{template}.py"
        path.write_text("".join(parts))
        expected[str(path)] = kind
    return expected


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        expected = generate(directory, FILES)
        sizes = [Path(p).read_text().count("\n") for p in expected]
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(affinity)})  # one core, as specified
        try:
            timings, cpu_timings = [], []
            for _ in range(RUNS):
                started, started_cpu = time.perf_counter(), time.process_time()
                results = classify_paths([directory])
                timings.append(time.perf_counter() - started)
                cpu_timings.append(time.process_time() - started_cpu)
        finally:
            os.sched_setaffinity(0, affinity)
        grep_right = sum(
            ("Conv2D" in Path(path).read_text()) == (kind == "cnn") for path, kind in expected.items()
        )
    best = min(timings)
    right = sum(result.kind == expected[result.path] for result in results)
    kinds = Counter(result.kind for result in results)
    verdict = "meets" if best < TARGET_SECONDS else "MISSES"
    return "\n".join([
        "## classify",
        "",
        f"`classify_paths` on {len(results)} generated model scripts ({min(sizes)}–{max(sizes)} lines; "
        f"Keras CNN/ANN, PyTorch CNN/MLP, scikit-learn linear/forest), one core, best of {RUNS} runs.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| total time (best) | {best:.3f} s ({verdict} the < {TARGET_SECONDS:.0f} s target) |",
        f"| throughput | {len(results) / best:,.0f} files/s |",
        f"| all runs (wall) | {', '.join(f'{t:.3f}' for t in timings)} s |",
        f"| CPU time (best) | {min(cpu_timings):.3f} s |",
        f"| load average at the end (shared machine) | {os.getloadavg()[0]:.1f} |",
        f"| kinds found | {', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))} |",
        f"| agreement with the generated kind | {right}/{len(results)} |",
        f"| agreement of the old `grep Conv2D` rule (cnn or not) | {grep_right}/{len(expected)} |",
    ])


if __name__ == "__main__":
    print(main())
