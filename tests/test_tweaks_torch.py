"""jobs.tune.tweaks on PyTorch scripts: libcst rewrites of the epoch loop, the optimizer and its rate,
and the Linear layers of an nn.Sequential. The rewritten scripts are run with torch: the model is
built, trained for its epochs (a forward and backward pass each) and inspected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.tune.tweaks import PROFILE_LADDERS, apply_tweak
from test_tweaks import src, tweak

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "classify"


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) line pairs where the two sources differ, for sources with the same line count."""
    pairs = zip(before.splitlines(), after.splitlines(), strict=True)
    return [(old, new) for old, new in pairs if old != new]


# --- models: each trains on random data for its epochs, counting them --------------------------

MLP = src('''
    import torch
    from torch import nn, optim

    EPOCHS = 3  # under-trained on purpose

    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 32),  # hidden
        nn.ReLU(),
        nn.Dropout(0.1),
        # the output layer
        nn.Linear(32, 10),
    )
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.5, nesterov=False)

    x, y = torch.randn(16, 8, 8), torch.randint(0, 10, (16,))
    epochs_run = 0
    for epoch in range(EPOCHS):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        epochs_run += 1
''')

CNN = src('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))


    model = Net()
    optimizer = torch.optim.Adam(model.parameters())

    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    epochs_run = 0
    for epoch in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        epochs_run += 1
''')

BARE_NAMES = src('''
    import torch
    from torch.nn import BatchNorm1d, Linear, ReLU, Sequential
    from torch.nn.functional import cross_entropy
    from torch.optim import SGD

    HIDDEN = 16
    NUM_EPOCHS = 2

    model = Sequential(Linear(20, HIDDEN), BatchNorm1d(HIDDEN), ReLU(), Linear(HIDDEN, 8), ReLU(), Linear(8, 3))
    optimizer = SGD(model.parameters(), 0.05)

    x, y = torch.randn(16, 20), torch.randint(0, 3, (16,))
    epochs_run = 0
    for epoch in range(1, NUM_EPOCHS + 1):
        optimizer.zero_grad()
        cross_entropy(model(x), y).backward()
        optimizer.step()
        epochs_run += 1
''')

MODELS = {"mlp": MLP, "cnn": CNN, "bare_names": BARE_NAMES}
CLASSES = {"mlp": 10, "cnn": 10, "bare_names": 3}


# --- the rewrites, read as text ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rate"), [
    ("divide_learning_rate_by_10", "0.001"), ("multiply_learning_rate_by_10", "0.1"),
    ("halve_learning_rate", "0.005"), ("double_learning_rate", "0.02"),
])
def test_learning_rate_of_a_torch_optimizer(name, rate):
    result = tweak(name, MLP)
    assert changed_lines(MLP, result.source) == [(
        "optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.5, nesterov=False)",
        f"optimizer = optim.SGD(model.parameters(), lr={rate}, momentum=0.5, nesterov=False)")]
    assert result.description.endswith(f" 0.01 → {rate} (line 14)")
    assert (result.old, result.new) == (0.01, float(rate))


def test_learning_rate_positional_constant_and_default():
    positional = tweak("multiply_learning_rate_by_10", BARE_NAMES)
    assert "optimizer = SGD(model.parameters(), 0.5)\n" in positional.source
    constant = tweak("divide_learning_rate_by_10", src('''
        import torch
        LR = 3e-3  # tuned
        opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.01)
    '''))
    assert constant.source.splitlines()[1] == "LR = 0.0003  # tuned"
    assert constant.description == "divide learning rate by 10 LR 0.003 → 0.0003 (line 2)"
    default = tweak("divide_learning_rate_by_10", CNN)
    assert "optimizer = torch.optim.Adam(model.parameters(), lr=0.0001)\n" in default.source
    assert default.description == "divide learning rate by 10 Adam default 0.001 → 0.0001 (line 17)"


@pytest.mark.parametrize("source", [
    "import torch\nopt = torch.optim.Adam(model.parameters(), lr=args.lr)\n",  # computed
    "import torch\nopt = torch.optim.Adam(**settings)\n",
    "import torch\nsched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)\n",
    "import torch\nopt = Adam(model.parameters())\n",  # not torch's Adam: not imported
])
def test_learning_rate_skips_without_a_torch_rate(source):
    for name in ("divide_learning_rate_by_10", "multiply_learning_rate_by_10"):
        assert apply_tweak(name, source, {}) is None


def test_a_keras_file_keeps_the_keras_learning_rate_rewrite():
    keras_file = "import keras\nopt = keras.optimizers.Adam()\n"
    assert tweak("multiply_learning_rate_by_10", keras_file).source == (
        "import keras\nopt = keras.optimizers.Adam(learning_rate=0.01)\n")


def test_use_adam_switches_sgd_at_adams_rate_dropping_what_adam_does_not_take():
    result = tweak("use_adam", MLP)
    assert changed_lines(MLP, result.source) == [(
        "optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.5, nesterov=False)",
        "optimizer = optim.Adam(model.parameters(), lr=0.001)")]
    assert result.description == "switch optimizer SGD → Adam, lr 0.01 → 0.001 (line 14)"
    assert apply_tweak("use_adam", result.source, {}) is None  # already Adam: nothing to switch


def test_use_adam_imports_adam_beside_a_bare_sgd_and_replaces_a_positional_rate():
    result = tweak("use_adam", BARE_NAMES)
    assert "from torch.optim import SGD, Adam\n" in result.source
    assert "optimizer = Adam(model.parameters(), 0.001)\n" in result.source
    aliased = tweak("use_adam", "from torch.optim import SGD as S, Adam as A\nopt = S(params)\n")
    assert aliased.source == "from torch.optim import SGD as S, Adam as A\nopt = A(params, lr=0.001)\n"


def test_use_sgd_keeps_the_layout_and_the_arguments_sgd_takes():
    source = src('''
        import torch
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=3e-4,
            betas=(0.9, 0.99),
            weight_decay=1e-4,  # regularise
        )
    ''')
    result = tweak("use_sgd", source)
    assert result.source == src('''
        import torch
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=0.01,
            weight_decay=1e-4,  # regularise
            momentum=0.9,
        )
    ''')
    assert result.description == "switch optimizer AdamW → SGD, lr 0.0003 → 0.01 (line 2, momentum=0.9)"


@pytest.mark.parametrize("source", [
    "import torch\nopt = torch.optim.SGD(model.parameters(), lr=args.lr)\n",  # computed rate
    "import torch\nopt = torch.optim.SGD(model.parameters(), 0.1, 0.9)\n",  # positional momentum
    "import torch\nopt = torch.optim.SGD(**settings)\n",
    "import torch\nopt = torch.optim.RMSprop(model.parameters())\n",
    "from torch.optim import SGD\nAdam = 3\nopt = SGD(params)\n",  # Adam means something else
])
def test_use_adam_skips_what_it_cannot_switch(source):
    assert apply_tweak("use_adam", source, {}) is None


@pytest.mark.parametrize(("loop", "expected", "description"), [
    ("EPOCHS = 3\nfor epoch in range(EPOCHS):\n    pass\n", "EPOCHS = 6\n", "double epochs EPOCHS 3 → 6 (line 1)"),
    ("epochs = 3\nfor epoch in range(epochs):\n    pass\n", "epochs = 6\n", "double epochs epochs 3 → 6 (line 1)"),
    ("for epoch in range(5):\n    pass\n", "range(10)", "double epochs range 5 → 10 (line 1)"),
    ("for epoch in range(0, 5):\n    pass\n", "range(0, 10)", "double epochs range 5 → 10 (line 1)"),
    ("N = 4\nfor epoch in range(1, N + 1):\n    pass\n", "N = 8\n", "double epochs N 4 → 8 (line 1)"),
    ("for ep_epoch in range(start_epoch, 5):\n    pass\n", "range(start_epoch, 10)",
     "double epochs range 5 → 10 (line 1)"),
])
def test_double_epochs_in_an_epoch_loop(loop, expected, description):
    source = "import torch\n" + loop
    result = tweak("double_epochs", source)
    assert expected in result.source
    assert result.description == description.replace("(line 1)", "(line 2)")


@pytest.mark.parametrize("loop", [
    "for epoch in range(1, 6):\n    pass\n",  # doubling the stop would not double the epochs
    "for i in range(5):\n    pass\n",  # not an epoch loop
    "for epoch in range(n):\n    pass\n",
    "STEPS = 4\nfor epoch in range(STEPS):\n    pass\nprint(STEPS)\n",  # STEPS means more than the epochs
])
def test_double_epochs_skips_other_loops(loop):
    assert apply_tweak("double_epochs", "import torch\n" + loop, {}) is None


def test_double_epochs_counts_every_site():
    result = tweak("double_epochs", "import torch\nEPOCHS = 2\nfor epoch in range(EPOCHS):\n    pass\n"
                                    "for epoch in range(3):\n    pass\n")
    assert (result.old, result.new, result.sites) == (2, 4, 2)


def test_add_dense_adds_a_linear_and_relu_as_wide_as_the_hidden_layer():
    result = tweak("add_dense", MLP)
    assert "    nn.Dropout(0.1),\n    nn.Linear(32, 32),\n    nn.ReLU(),\n    # the output layer\n" in result.source
    assert result.description == "add Linear(32, 32) + ReLU before the output layer (line 12)"


def test_add_dense_without_a_hidden_layer_sets_the_output_input_to_the_new_width():
    result = tweak("add_dense", CNN)
    assert ("nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10))"
            in result.source)
    assert result.description == (
        "add Linear(8 * 4 * 4, 128) + ReLU before the output layer (line 10, its in_features 8 * 4 * 4 → 128)")


def test_add_dense_uses_an_imported_relu_or_imports_one():
    assert "Linear(8, 8), ReLU(), Linear(8, 3))" in tweak("add_dense", BARE_NAMES).source
    bare = "from torch.nn import Linear, Sequential\nmodel = Sequential(Linear(4, 2))\n"
    assert tweak("add_dense", bare).source == (
        "from torch.nn import Linear, ReLU, Sequential\nmodel = Sequential(Linear(4, 128), ReLU(), Linear(128, 2))\n")


@pytest.mark.parametrize("source", [
    (FIXTURES / "torch_cnn.py").read_text(),  # a Linear kept as a module attribute
    (FIXTURES / "adversarial" / "cnn_pytorch.py").read_text(),  # LazyLinear
    "import torch\nfrom keras.layers import Dense\nmodel = Sequential([Dense(4), Dense(1)])\n",
])
def test_add_dense_skips_linear_layers_outside_a_sequential(source):
    assert apply_tweak("add_dense", source, {}) is None


def test_widen_dense_widens_the_narrowest_hidden_linear_and_the_next_input():
    result = tweak("widen_dense", MLP)
    assert changed_lines(MLP, result.source) == [
        ("    nn.Linear(64, 32),  # hidden", "    nn.Linear(64, 64),  # hidden"),
        ("    nn.Linear(32, 10),", "    nn.Linear(64, 10),")]
    assert result.description == "widen Linear 32 → 64 (line 8), Linear in_features 32 → 64 (line 12)"


def test_widen_dense_follows_norm_layers_and_constants():
    result = tweak("widen_dense", BARE_NAMES)  # narrowest: Linear(HIDDEN, 8), up to 16
    assert "Linear(HIDDEN, 16), ReLU(), Linear(16, 3))" in result.source
    normed = tweak("widen_dense", "import torch.nn as nn\n"
                   "m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(8, 2))\n")
    assert "nn.Linear(4, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Linear(16, 2)" in normed.source
    constant = tweak("widen_dense",
                     "from torch import nn\nH = 8\nm = nn.Sequential(nn.Linear(4, H), nn.Linear(H, 2))\n")
    assert constant.source.splitlines()[1] == "H = 16"
    assert constant.description == "widen H 8 → 16 (line 2)"


@pytest.mark.parametrize("source", [
    "from torch import nn\nm = nn.Sequential(nn.Linear(4, 8), nn.Unflatten(1, (2, 4)), nn.Linear(8, 2))\n",
    "from torch import nn\nm = nn.Sequential(nn.Linear(4, 8), nn.Linear(w, 2))\n",
    "from torch import nn\nm = nn.Sequential(nn.Linear(4, w), nn.Linear(w, 2))\n",
    "from torch import nn\nm = nn.Sequential(nn.Linear(4, 2))\n",
    "from torch import nn\nN = 3\nm = nn.Sequential(nn.Linear(4, N), nn.Linear(N, N))\n",  # the output's width
])
def test_widen_dense_skips_when_the_next_layer_cannot_follow(source):
    assert apply_tweak("widen_dense", source, {}) is None


def test_keras_only_tweaks_skip_torch_files():
    for name in ("add_dropout", "halve_batch_size", "batch_size_32"):
        assert apply_tweak(name, "import torch\nloader = DataLoader(ds, batch_size=64)\n", {}) is None


# --- parameter mode --------------------------------------------------------------------------

PARAMS_SCRIPT = src('''
    import torch
    from jobs import kit

    p = kit.params(optimizer="sgd", lr=0.05, momentum=0.0, epochs=3, dense_width=32)
''')


def test_optimizer_switch_in_parameter_mode_brings_its_rate():
    adam = tweak("use_adam", PARAMS_SCRIPT)
    assert adam.source == PARAMS_SCRIPT
    assert adam.params == {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "epochs": 3, "dense_width": 32}
    assert adam.description == "set optimizer sgd → adam, lr 0.05 → 0.001 (parameter)"
    sgd = tweak("use_sgd", PARAMS_SCRIPT, {"optimizer": "Adam"})
    assert (sgd.params["optimizer"], sgd.params["lr"], sgd.params["momentum"]) == ("SGD", 0.01, 0.9)
    assert apply_tweak("use_sgd", PARAMS_SCRIPT, {}) is None  # sgd already
    assert apply_tweak("use_adam", PARAMS_SCRIPT, {"optimizer": "rmsprop"}) is None


# --- the rewritten scripts run ---------------------------------------------------------------

RUN_SCRIPT = '''
import json, sys
import torch
torch.manual_seed(0)
results = {}
for path in sys.argv[1:]:
    namespace = {"__name__": "model"}
    exec(compile(open(path).read(), path, "exec"), namespace)
    model, optimizer = namespace["model"], namespace["optimizer"]
    model.eval()
    with torch.no_grad():
        output = model(namespace["x"])  # a forward pass on the trained model
    group = optimizer.param_groups[0]
    results[path] = {
        "linear": [[m.in_features, m.out_features] for m in model.modules() if isinstance(m, torch.nn.Linear)],
        "layers": [type(m).__name__ for m in model.modules() if not list(m.children())],
        "optimizer": type(optimizer).__name__, "lr": group["lr"], "momentum": group.get("momentum"),
        "epochs": namespace["epochs_run"], "output": list(output.shape),
        "finite": bool(torch.isfinite(output).all()),
    }
print(json.dumps(results))
'''

# model -> tweak -> what the rewritten model must show (beside its forward pass)
EXPECTED = {
    "mlp": {
        "pushed": {"linear": [[64, 32], [32, 10]], "optimizer": "SGD", "lr": 0.01, "momentum": 0.5, "epochs": 3},
        "add_dense": {"linear": [[64, 32], [32, 32], [32, 10]]},
        "widen_dense": {"linear": [[64, 64], [64, 10]]},
        "double_epochs": {"epochs": 6},
        "divide_learning_rate_by_10": {"lr": 0.001},
        "multiply_learning_rate_by_10": {"lr": 0.1},
        "use_adam": {"optimizer": "Adam", "lr": 0.001, "momentum": None},
    },
    "cnn": {
        "pushed": {"linear": [[128, 10]], "optimizer": "Adam", "lr": 0.001, "momentum": None, "epochs": 2},
        "add_dense": {"linear": [[128, 128], [128, 10]]},
        "double_epochs": {"epochs": 4},
        "divide_learning_rate_by_10": {"lr": 0.0001},
        "multiply_learning_rate_by_10": {"lr": 0.01},
        "use_sgd": {"optimizer": "SGD", "lr": 0.01, "momentum": 0.9},
    },
    "bare_names": {
        "pushed": {"linear": [[20, 16], [16, 8], [8, 3]], "optimizer": "SGD", "lr": 0.05, "momentum": 0, "epochs": 2},
        "add_dense": {"linear": [[20, 16], [16, 8], [8, 8], [8, 3]]},
        "widen_dense": {"linear": [[20, 16], [16, 16], [16, 3]]},
        "double_epochs": {"epochs": 4},
        "multiply_learning_rate_by_10": {"lr": 0.5},
        "use_adam": {"optimizer": "Adam", "lr": 0.001, "momentum": None},
    },
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every model, as pushed, tweaked once per tweak in EXPECTED, and tweaked by its whole
    PyTorch ladder in turn, run in one subprocess: {(model, tweak or "pushed" or "ladder"): result}."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("torch_models")
    paths: dict[str, tuple[str, str]] = {}
    for label, source in MODELS.items():
        variants = {"pushed": source}
        variants.update({name: tweak(name, source).source for name in EXPECTED[label] if name != "pushed"})
        ladder_source = source
        for name in PROFILE_LADDERS[("ann", "pytorch")]:
            if result := apply_tweak(name, ladder_source, {}):
                ladder_source = result.source
        variants["ladder"] = ladder_source
        for variant, text in variants.items():
            path = folder / f"{label}.{variant}.py"
            path.write_text(text)
            paths[str(path)] = (label, variant)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT, *paths], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {paths[path]: value for path, value in results.items()}


@pytest.mark.parametrize(("label", "variant"), [
    (label, variant) for label, expected in EXPECTED.items() for variant in expected
])
def test_tweaked_torch_models_train_and_run_forward_with_the_described_changes(runs, label, variant):
    result = runs[(label, variant)]
    assert result["output"] == [16, CLASSES[label]] and result["finite"]
    expected = {**EXPECTED[label]["pushed"], **EXPECTED[label][variant]}
    for key, value in expected.items():
        assert result[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    if variant == "add_dense":
        assert result["layers"][-2:] == ["ReLU", "Linear"]


@pytest.mark.parametrize("label", MODELS)
def test_a_model_tweaked_by_the_whole_ladder_still_trains_and_runs_forward(runs, label):
    pushed, tweaked = runs[(label, "pushed")], runs[(label, "ladder")]
    assert tweaked["output"] == [16, CLASSES[label]]
    assert tweaked["epochs"] == 2 * pushed["epochs"]
    assert len(tweaked["linear"]) == len(pushed["linear"]) + 1


PARAMS_MODEL = src('''
    import torch
    from torch import nn
    from jobs import kit

    p = kit.params(optimizer="sgd", lr=0.05, momentum=0.0, epochs=2, dense_width=8)
    model = nn.Sequential(nn.Linear(4, p["dense_width"]), nn.ReLU(), nn.Linear(p["dense_width"], 2))
    if p["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=p["lr"])

    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    epochs_run = 0
    for epoch in range(p["epochs"]):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        epochs_run += 1
''')


def test_a_script_reading_pushtune_params_trains_with_the_tweaked_parameters(tmp_path):
    pytest.importorskip("torch")
    params: dict = {}
    for name in ("use_adam", "widen_dense", "double_epochs", "multiply_learning_rate_by_10"):
        result = tweak(name, PARAMS_MODEL, params)
        assert result.source == PARAMS_MODEL
        params = result.params
    assert params == {"optimizer": "adam", "lr": 0.01, "momentum": 0.0, "epochs": 4, "dense_width": 16}
    path = tmp_path / "model.py"
    path.write_text(PARAMS_MODEL)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSHTUNE_PARAMS": json.dumps(params)}
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])[str(path)]
    assert (result["optimizer"], result["lr"], result["epochs"]) == ("Adam", 0.01, 4)
    assert result["linear"] == [[4, 16], [16, 2]] and result["output"] == [16, 2]
