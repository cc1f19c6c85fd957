"""jobs.tune.tweaks: libcst source rewrites (and parameter changes) that tweak a model between attempts."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.classify.classifier import classify_file
from jobs.errors import UserError
from jobs.tune.tweaks import (
    LADDERS,
    PROFILE_LADDERS,
    PROFILES,
    TWEAK_NAMES,
    TWEAKS,
    TweakResult,
    apply_tweak,
    declared_params,
    reads_params,
    registry,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "classify"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def tweak(name: str, source: str, params: dict | None = None) -> TweakResult:
    """Apply a tweak that must apply; the result must still be valid Python."""
    result = apply_tweak(name, source, params or {})
    assert result is not None, f"{name} did not apply"
    ast.parse(result.source)
    assert "\n" not in result.description
    return result


def added_lines(before: str, after: str) -> list[str]:
    """Lines of `after` that are not in `before`; every line of `before` must still be there."""
    remaining = before.splitlines()
    added = []
    for line in after.splitlines():
        if line in remaining:
            remaining.remove(line)
        else:
            added.append(line)
    assert remaining == [], f"lines lost: {remaining}"
    return added


# --- the registry ----------------------------------------------------------------------------

# Values a script may declare, or --param give, that no parameter form can change.
ODD_VALUES = [None, "text", [1, 2], True, 0, -1, 1e308, 10**400, float("nan"), {"a": 1}]


def param_keys() -> list[str]:
    """Every parameter a parameter form reads or sets."""
    keys: set[str] = set()
    for record in TWEAKS.values():
        if record.param:
            keys.update(record.param.keys, *record.param.also)
    return sorted(keys)


def test_registry_names_are_unique_and_the_ladders_derive_from_the_records():
    assert TWEAK_NAMES == tuple(TWEAKS) and len(set(TWEAK_NAMES)) == len(TWEAK_NAMES)
    assert all(record.name == name for name, record in TWEAKS.items())
    with pytest.raises(ValueError, match="registered twice: add_dense"):
        registry._by_name(TWEAKS["add_dense"], TWEAKS["add_dense"])
    assert set(PROFILE_LADDERS) == set(PROFILES)
    for (kind, framework), names in PROFILE_LADDERS.items():
        assert names, f"{kind}/{framework} has an empty ladder"
        for name in names:
            assert (kind, framework) in TWEAKS[name].profiles, f"{name} is on the {kind}/{framework} ladder"
    for kind, names in LADDERS.items():  # the view by kind: the profile each kind had before PyTorch
        assert names in (PROFILE_LADDERS.get((kind, "keras")), PROFILE_LADDERS.get((kind, "sklearn")))


def test_every_record_is_complete_and_its_profiles_and_rungs_are_valid():
    rungs: dict[str, list[int]] = {}
    for name, record in TWEAKS.items():
        frameworks = {framework for _, framework in record.profiles}
        assert record.profiles and set(record.profiles) <= set(PROFILES), name
        assert record.description and "\n" not in record.description, name
        assert record.label and record.label != name and registry.label(name) == record.label, \
            f"{name} needs a label in words, as the 'why' of an attempt shows it"
        assert record.rewrites or record.param, f"{name} has neither a rewrite nor a parameter form"
        assert set(record.rewrites) <= frameworks, f"{name} rewrites a framework it does not apply to"
        assert record.param or set(record.rewrites) == frameworks, f"{name} has no way to tweak a profile"
        assert set(record.ladder) <= frameworks, f"{name} is on a ladder of a framework it does not apply to"
        for framework, rung in record.ladder.items():
            rungs.setdefault(framework, []).append(rung)
        if record.param:
            assert record.param.keys and all(key == key.lower() for key in record.param.keys), name
    for framework, numbers in rungs.items():  # 1, 2, … n: one tweak per rung
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), framework


def test_profiles_are_what_classify_says_of_real_models():
    """The registry's (kind, framework) names are the classifier's: each profile is the verdict
    on one of the classifier's fixtures."""
    verdicts = {(c.kind, c.framework) for c in map(classify_file, sorted(FIXTURES.glob("*.py")))}
    assert set(PROFILES) <= verdicts


def test_every_tweak_skips_a_file_with_nothing_to_change():
    for name in TWEAK_NAMES:
        assert apply_tweak(name, "print('hello')\n", {}) is None  # skipped, not faked
        assert apply_tweak(name, "import torch\nprint('hello')\n", {}) is None


@pytest.mark.parametrize("name", TWEAK_NAMES)
def test_every_tweak_takes_any_script_reading_pushtune_params(name):
    """Parameter mode never raises: nothing declared, every form's keys declared with values no
    change applies to, odd values given, or PUSHTUNE_PARAMS read straight from the environment."""
    keys = param_keys()
    scripts = [
        "from jobs import kit\np = kit.params()\n",
        "import os\nraw = os.environ.get('PUSHTUNE_PARAMS')\n",
        "from jobs import kit\np = kit.params(" + ", ".join(f"{key}=None" for key in keys) + ")\n",
        "from jobs import kit\np = kit.params(" + ", ".join(f"{key.upper()}='x'" for key in keys) + ")\n",
    ]
    for script in scripts:
        for value in ODD_VALUES:
            for given in ({}, {key: value for key in keys}, {key.upper(): value for key in keys}):
                result = apply_tweak(name, script, given)
                if result is not None:
                    assert result.source == script and result.description.endswith("(parameter)")


def test_unknown_tweak_is_a_value_error_and_bad_source_a_user_error():
    with pytest.raises(ValueError, match="unknown tweak"):
        apply_tweak("make_it_better", "x = 1\n", {})
    with pytest.raises(UserError, match="does not parse"):
        apply_tweak("double_epochs", "def broken(:\n", {})


# --- add_dense ------------------------------------------------------------------------------

SEQUENTIAL = src('''
    from tensorflow import keras
    from tensorflow.keras import layers

    model = keras.Sequential([
        keras.Input(shape=(8,)),
        layers.Dense(16,   activation="relu"),  # hidden: odd spacing kept
        # the output layer
        layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
''')


def test_add_dense_in_a_sequential_list_keeps_comments_and_spacing():
    result = tweak("add_dense", SEQUENTIAL)
    lines = result.source.splitlines()
    assert '    layers.Dense(16,   activation="relu"),  # hidden: odd spacing kept' in lines
    new = lines.index('    layers.Dense(16, activation="relu"),')
    assert lines[new + 1] == "    # the output layer"
    assert lines[new + 2] == '    layers.Dense(3, activation="softmax"),'
    assert added_lines(SEQUENTIAL, result.source) == ['    layers.Dense(16, activation="relu"),']
    assert result.description == "add Dense(16, relu) before the output layer (line 8)"
    assert result.params == {}


def test_add_dense_single_line_list_without_hidden_layer_uses_128():
    source = "model = Sequential([Flatten(), Dense(10, activation='softmax')])\n"
    result = tweak("add_dense", source)
    assert result.source == (
        "model = Sequential([Flatten(), Dense(128, activation='relu'), Dense(10, activation='softmax')])\n")
    assert "Dense(128, relu)" in result.description


def test_add_dense_width_from_units_keyword_and_non_literal_falls_back():
    by_keyword = tweak("add_dense", "m = Sequential([Dense(units=48), Dropout(0.2), Dense(10)])\n")
    assert "Dense(units=48), Dropout(0.2), Dense(48, activation=\"relu\"), Dense(10)" in by_keyword.source
    by_variable = tweak("add_dense", "m = Sequential(layers=[Dense(WIDTH), Dense(10)])\n")
    assert "Dense(WIDTH), Dense(128, activation=\"relu\"), Dense(10)" in by_variable.source


ADD_CHAIN = src('''
    from keras.models import Sequential
    from keras.layers import Dense, Flatten


    def build():
        net = Sequential()
        net.add(Flatten(input_shape=(4, 4)))
        net.add(Dense(32, activation='relu'))

        # output
        net.add(Dense(10, activation='softmax'))
        return net
''')


def test_add_dense_in_an_add_chain_inserts_a_statement_with_receiver_and_indentation():
    result = tweak("add_dense", ADD_CHAIN)
    lines = result.source.splitlines()
    hidden = "    net.add(Dense(32, activation='relu'))"
    new = lines.index(hidden, lines.index(hidden) + 1)
    assert lines[new + 1:new + 4] == ["", "    # output", "    net.add(Dense(10, activation='softmax'))"]
    assert added_lines(ADD_CHAIN, result.source) == ["    net.add(Dense(32, activation='relu'))"]
    assert result.description == "add Dense(32, relu) before the output layer (line 11)"


FUNCTIONAL = src('''
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(8,))
    h = tf.keras.layers.Dense(24, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(3, activation="softmax")(h)  # head
    model = tf.keras.Model(inputs, outputs)
''')


def test_add_dense_in_a_functional_chain_feeds_the_output_from_the_new_layer():
    result = tweak("add_dense", FUNCTIONAL)
    assert added_lines(FUNCTIONAL, result.source) == ['h = tf.keras.layers.Dense(24, activation="relu")(h)']
    lines = result.source.splitlines()
    new = lines.index('h = tf.keras.layers.Dense(24, activation="relu")(h)')
    assert lines[new + 1] == 'outputs = tf.keras.layers.Dense(3, activation="softmax")(h)  # head'


@pytest.mark.parametrize("dense", ["Dense", "layers.Dense", "tf.keras.layers.Dense", "L.Dense"])
def test_add_dense_spells_the_layer_like_the_file(dense):
    source = f"x = {dense}(64)(inputs)\noutputs = {dense}(10)(x)\n"
    result = tweak("add_dense", source)
    assert result.source.splitlines() == [
        f"x = {dense}(64)(inputs)", f'x = {dense}(64, activation="relu")(x)', f"outputs = {dense}(10)(x)"]


def test_add_dense_acts_on_the_model_whose_output_layer_is_last_in_the_file():
    source = src('''
        first = Sequential([Dense(8), Dense(2)])
        second = Sequential()
        second.add(Dense(64))
        second.add(Dense(5))
    ''')
    result = tweak("add_dense", source)
    assert result.source.startswith("first = Sequential([Dense(8), Dense(2)])\n")
    assert result.source.splitlines()[2:] == [
        "second.add(Dense(64))", 'second.add(Dense(64, activation="relu"))', "second.add(Dense(5))"]
    assert "(line 4)" in result.description


@pytest.mark.parametrize("source", [
    "from sklearn.svm import SVC\nmodel = SVC()\n",
    "model = Sequential([Conv2D(8, 3), Flatten()])\n",
    "model = Model(inputs, Dense(10)(Flatten()(inputs)))\n",  # no recognisable output assignment
])
def test_add_dense_skips_files_without_a_recognisable_output_layer(source):
    assert apply_tweak("add_dense", source, {}) is None


# --- widen_dense ----------------------------------------------------------------------------

NARROW = src('''
    from tensorflow import keras
    from tensorflow.keras import layers

    model = keras.Sequential([
        keras.Input(shape=(8,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(3,   activation="relu"),  # bottleneck: odd spacing kept
        # the output layer
        layers.Dense(10, activation="softmax"),
    ])
''')


def test_widen_dense_widens_the_narrowest_hidden_layer_up_to_the_output_width():
    result = tweak("widen_dense", NARROW)
    assert result.source == NARROW.replace('Dense(3,   activation="relu"),', 'Dense(10,   activation="relu"),')
    assert result.description == "widen Dense 3 → 10 (line 7)"
    assert (result.old, result.new, result.params) == (3, 10, {})


@pytest.mark.parametrize(("layers", "widened"), [
    ("Dense(16), Dense(10)", "Dense(32), Dense(10)"),
    ("Dense(units=8), Dense(N_CLASSES)", "Dense(units=16), Dense(N_CLASSES)"),
    ("Dense(WIDTH), Dense(5), Dense(2)", "Dense(WIDTH), Dense(10), Dense(2)"),
])
def test_widen_dense_doubles_a_literal_width(layers, widened):
    assert tweak("widen_dense", f"m = Sequential([{layers}])\n").source == f"m = Sequential([{widened}])\n"


def test_widen_dense_in_an_add_chain_and_a_functional_chain():
    chain = tweak("widen_dense", ADD_CHAIN)
    assert chain.source == ADD_CHAIN.replace("net.add(Dense(32,", "net.add(Dense(64,")
    assert chain.description == "widen Dense 32 → 64 (line 8)"
    functional = tweak("widen_dense", FUNCTIONAL)
    assert functional.source == FUNCTIONAL.replace("Dense(24,", "Dense(48,")


def test_widen_dense_takes_the_narrowest_hidden_layer_of_any_model_never_an_output():
    source = "a = Sequential([Dense(4), Dense(2)])\nb = Sequential([Dense(6), Dense(1)])\n"
    assert tweak("widen_dense", source).source == (
        "a = Sequential([Dense(8), Dense(2)])\nb = Sequential([Dense(6), Dense(1)])\n")


@pytest.mark.parametrize("source", [
    "model = Sequential([Flatten(), Dense(10, activation='softmax')])\n",  # only the output
    "model = Sequential([Dense(WIDTH), Dense(10)])\n",  # hidden width not a literal
    "from sklearn.svm import SVC\nmodel = SVC()\n",
])
def test_widen_dense_skips_without_a_hidden_literal_width(source):
    assert apply_tweak("widen_dense", source, {}) is None


# --- add_dropout ----------------------------------------------------------------------------


def test_add_dropout_in_a_sequential_list_keeps_comments_and_spacing():
    result = tweak("add_dropout", SEQUENTIAL)
    lines = result.source.splitlines()
    new = lines.index("    layers.Dropout(0.3),")
    assert lines[new - 1] == '    layers.Dense(16,   activation="relu"),  # hidden: odd spacing kept'
    assert lines[new + 1:new + 3] == ["    # the output layer", '    layers.Dense(3, activation="softmax"),']
    assert added_lines(SEQUENTIAL, result.source) == ["    layers.Dropout(0.3),"]
    assert result.description == "add Dropout(0.3) before the output layer (line 8)"
    assert (result.old, result.new) == (None, None)


def test_add_dropout_in_an_add_chain_imports_dropout_beside_dense():
    result = tweak("add_dropout", ADD_CHAIN)
    lines = result.source.splitlines()
    assert lines[1] == "from keras.layers import Dense, Dropout, Flatten"
    new = lines.index("    net.add(Dropout(0.3))")
    assert lines[new - 1] == "    net.add(Dense(32, activation='relu'))"
    assert lines[new + 1:new + 4] == ["", "    # output", "    net.add(Dense(10, activation='softmax'))"]
    assert result.description == "add Dropout(0.3) before the output layer (line 11)"


def test_add_dropout_in_a_functional_chain_feeds_the_output_from_the_dropout():
    result = tweak("add_dropout", FUNCTIONAL)
    assert added_lines(FUNCTIONAL, result.source) == ["h = tf.keras.layers.Dropout(0.3)(h)"]
    lines = result.source.splitlines()
    new = lines.index("h = tf.keras.layers.Dropout(0.3)(h)")
    assert lines[new + 1] == 'outputs = tf.keras.layers.Dense(3, activation="softmax")(h)  # head'


@pytest.mark.parametrize("prefix", ["layers.", "keras.layers.", "tf.keras.layers.", "L."])
def test_add_dropout_spells_the_layer_like_the_dense(prefix):
    source = f"model = Sequential([{prefix}Dense(8), {prefix}Dense(2)])\n"
    assert tweak("add_dropout", source).source == (
        f"model = Sequential([{prefix}Dense(8), {prefix}Dropout(0.3), {prefix}Dense(2)])\n")


@pytest.mark.parametrize(("imports", "imports_after"), [
    ("from tensorflow.keras.layers import Dense", "from tensorflow.keras.layers import Dense, Dropout"),
    ("from keras.layers import Flatten, Dense", "from keras.layers import Flatten, Dense, Dropout"),
    ("from keras.layers import (\n    Dense,  # fully connected\n    Flatten,\n)",
     "from keras.layers import (\n    Dense, Dropout,  # fully connected\n    Flatten,\n)"),
    ("from keras.layers import Dense\nfrom keras.layers import Dropout",
     "from keras.layers import Dense\nfrom keras.layers import Dropout"),  # already importable
])
def test_add_dropout_with_a_bare_dense_makes_dropout_importable(imports, imports_after):
    result = tweak("add_dropout", f"{imports}\n\nmodel = Sequential([Dense(8), Dense(2)])\n")
    assert result.source == f"{imports_after}\n\nmodel = Sequential([Dense(8), Dropout(0.3), Dense(2)])\n"


def test_add_dropout_when_a_dropout_is_elsewhere_than_right_before_the_output():
    source = "m = Sequential([Dense(64), Dropout(0.2), Dense(32), Dense(10)])\nfrom keras.layers import *\n"
    assert "Dense(32), Dropout(0.3), Dense(10)" in tweak("add_dropout", source).source


@pytest.mark.parametrize("source", [
    "model = Sequential([layers.Dense(8), layers.Dropout(0.5), layers.Dense(2)])\n",
    "from keras.layers import Dense, Dropout\nnet.add(Dense(8))\nnet.add(Dropout(0.2))\n# out\nnet.add(Dense(2))\n",
    "h = layers.Dense(8)(x)\nh = layers.Dropout(0.4)(h)\ny = layers.Dense(2)(h)\n",
    "from mylib import Dense\nmodel = Sequential([Dense(8), Dense(2)])\n",  # not a Keras Dense
    "model = Sequential([Dense(8), Dense(2)])\n",  # Dense from nowhere: Dropout neither
    "from keras.layers import Dense as D\nmodel = Sequential([Dense(8), Dense(2)])\n",
    "model = Sequential([Conv2D(8, 3), Flatten()])\n",
])
def test_add_dropout_skips_a_second_dropout_and_an_unimportable_one(source):
    assert apply_tweak("add_dropout", source, {}) is None



# --- epochs and batch size ------------------------------------------------------------------


def test_double_epochs_in_fit_keeps_the_rest_of_the_line():
    source = "model.fit(x,  y, epochs=5,   batch_size=32)  # train\n"
    result = tweak("double_epochs", source)
    assert result.source == "model.fit(x,  y, epochs=10,   batch_size=32)  # train\n"
    assert result.description == "double epochs 5 → 10 (line 1)"


def test_double_epochs_doubles_a_used_module_constant():
    source = src('''
        EPOCHS = 5  # keep short

        model.fit(x, y, epochs=EPOCHS)
    ''')
    result = tweak("double_epochs", source)
    assert result.source.splitlines()[0] == "EPOCHS = 10  # keep short"
    assert "epochs=EPOCHS" in result.source
    assert result.description == "double epochs EPOCHS 5 → 10 (line 1)"
    loop = tweak("double_epochs", "NUM_EPOCHS = 3\nfor epoch in range(NUM_EPOCHS):\n    step()\n")
    assert loop.source.startswith("NUM_EPOCHS = 6\n")


@pytest.mark.parametrize("source", [
    "model.fit(x, y, epochs=args.epochs)\n",
    "model.fit(x, y)\n",
    "EPOCHS = 5\n",  # defined, never used
    "model.fit(x, y, epochs=2.5)\n",  # not a count
])
def test_double_epochs_skips_without_an_int_literal(source):
    assert apply_tweak("double_epochs", source, {}) is None


def test_halve_batch_size():
    result = tweak("halve_batch_size", "model.fit(x, y, batch_size=32, epochs=3)\n")
    assert result.source == "model.fit(x, y, batch_size=16, epochs=3)\n"
    assert result.description == "halve batch size 32 → 16 (line 1)"
    assert tweak("halve_batch_size", "model.fit(x, y, batch_size=5)\n").source == "model.fit(x, y, batch_size=2)\n"
    assert apply_tweak("halve_batch_size", "model.fit(x, y, batch_size=1)\n", {}) is None
    inference = "features = base.predict(images, batch_size=64)\nmodel.fit(features, y, batch_size=64)\n"
    assert tweak("halve_batch_size", inference).source == (
        "features = base.predict(images, batch_size=64)\nmodel.fit(features, y, batch_size=32)\n")
    assert apply_tweak("halve_batch_size", "scores = model.evaluate(x, y, batch_size=8)\n", {}) is None
    assert apply_tweak("halve_batch_size", "model.fit(x, y)\n", {}) is None


def test_batch_size_32_caps_training_batch_sizes_only():
    source = "model.fit(x,  y, batch_size=1347,  epochs=3)  # full batch\n"
    result = tweak("batch_size_32", source)
    assert result.source == "model.fit(x,  y, batch_size=32,  epochs=3)  # full batch\n"
    assert result.description == "set batch size 1347 → 32 (line 1)"
    assert (result.old, result.new) == (1347, 32)
    constant = tweak("batch_size_32", "BATCH_SIZE = 256  # big\nmodel.fit(x, y, batch_size=BATCH_SIZE)\n")
    assert constant.source == "BATCH_SIZE = 32  # big\nmodel.fit(x, y, batch_size=BATCH_SIZE)\n"
    inference = "p = model.predict(x, batch_size=512)\nmodel.fit(x, y, batch_size=64)\n"
    assert tweak("batch_size_32", inference).source == (
        "p = model.predict(x, batch_size=512)\nmodel.fit(x, y, batch_size=32)\n")


@pytest.mark.parametrize("source", [
    "model.fit(x, y, batch_size=32)\n",
    "model.fit(x, y, batch_size=8)\n",
    "scores = model.evaluate(x, y, batch_size=1024)\n",
    "model.fit(x, y)\n",
])
def test_batch_size_32_skips_at_or_below_32_and_inference(source):
    assert apply_tweak("batch_size_32", source, {}) is None


def test_double_epochs_result_says_old_new_and_how_many_sites():
    single = tweak("double_epochs", "model.fit(x, y, epochs=2)\n")
    assert (single.old, single.new, single.sites) == (2, 4, 1)
    two = tweak("double_epochs", "EPOCHS = 3\nmodel.fit(x, y, epochs=EPOCHS)\nhead.fit(x, y, epochs=5)\n")
    assert (two.old, two.new, two.sites) == (3, 6, 2)  # old and new: the first site
    in_params = tweak("double_epochs", "from jobs import kit\np = kit.params(epochs=2)\n")
    assert (in_params.old, in_params.new, in_params.sites) == (2, 4, 1)
    halved = tweak("halve_batch_size", "model.fit(x, y, batch_size=64)\n")
    assert (halved.old, halved.new, halved.sites) == (64, 32, 0)
    assert (tweak("add_dense", SEQUENTIAL).old, tweak("add_dense", SEQUENTIAL).sites) == (None, 0)



# --- learning rate --------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "halved", "doubled"), [
    ("Adam(learning_rate=0.001)", "Adam(learning_rate=0.0005)", "Adam(learning_rate=0.002)"),
    ("optimizers.SGD(lr=1e-2, momentum=0.9)", "optimizers.SGD(lr=0.005, momentum=0.9)",
     "optimizers.SGD(lr=0.02, momentum=0.9)"),
    ("keras.optimizers.RMSprop(3e-4)", "keras.optimizers.RMSprop(0.00015)", "keras.optimizers.RMSprop(0.0006)"),
])
def test_learning_rate_of_an_optimizer_constructor(call, halved, doubled):
    source = f"model.compile(optimizer={call},  loss='mse')  # compile\n"
    expected = "model.compile(optimizer={},  loss='mse')  # compile\n"
    assert tweak("halve_learning_rate", source).source == expected.format(halved)
    assert tweak("double_learning_rate", source).source == expected.format(doubled)


def test_learning_rate_description_and_constant():
    result = tweak("halve_learning_rate", "LR = 1e-3\nopt = Adam(learning_rate=LR)\n")
    assert result.source == "LR = 0.0005\nopt = Adam(learning_rate=LR)\n"
    assert result.description == "halve learning rate LR 0.001 → 0.0005 (line 1)"


@pytest.mark.parametrize(("imports", "spelling", "added_import"), [
    ("from tensorflow import keras", "keras.optimizers.Adam", None),
    ("import tensorflow as tf", "tf.keras.optimizers.Adam", None),
    ("import keras", "keras.optimizers.Adam", None),
    ("from tensorflow.keras import optimizers", "optimizers.Adam", None),
    ("from keras.optimizers import Adam", "Adam", None),
    ("from tensorflow.keras import layers, models", "optimizers.Adam", "from tensorflow.keras import optimizers"),
    ("from keras.layers import Dense", "optimizers.Adam", "from keras import optimizers"),
])
def test_string_optimizer_becomes_its_class_spelled_for_the_imports(imports, spelling, added_import):
    source = f"{imports}\n\nmodel.compile(optimizer='adam', loss='mse')\n"
    result = tweak("halve_learning_rate", source)
    assert f"model.compile(optimizer={spelling}(learning_rate=0.0005), loss='mse')" in result.source
    if added_import:
        assert result.source.startswith(f"{imports}\n{added_import}\n\n")
    else:
        assert result.source.count("import") == imports.count("import")
    assert result.description.startswith("halve learning rate 0.001 → 0.0005 (line 3")


@pytest.mark.parametrize(("name", "rate"), [("sgd", "0.02"), ("rmsprop", "0.002"), ("adagrad", "0.002")])
def test_string_optimizer_default_rates(name, rate):
    source = f'import keras\nmodel.compile("{name}", loss="mse")\n'
    result = tweak("double_learning_rate", source)
    assert f"learning_rate={rate})" in result.source


@pytest.mark.parametrize("source", [
    "import keras\nmodel.compile(optimizer=my_optimizer, loss='mse')\n",
    "import keras\nmodel.compile(optimizer='unknown_thing', loss='mse')\n",
    "x = 1\n",
])
def test_learning_rate_skips_when_there_is_no_rate_to_change(source):
    assert apply_tweak("halve_learning_rate", source, {}) is None
    assert apply_tweak("double_learning_rate", source, {}) is None


@pytest.mark.parametrize(("call", "divided"), [
    ("Adam(learning_rate=0.001)", "Adam(learning_rate=0.0001)"),
    ("optimizers.SGD(lr=1e-2, momentum=0.9)", "optimizers.SGD(lr=0.001, momentum=0.9)"),
    ("keras.optimizers.RMSprop(3e-4)", "keras.optimizers.RMSprop(3e-05)"),
])
def test_divide_learning_rate_by_10_of_an_optimizer_constructor(call, divided):
    source = f"model.compile(optimizer={call},  loss='mse')  # compile\n"
    result = tweak("divide_learning_rate_by_10", source)
    assert result.source == f"model.compile(optimizer={divided},  loss='mse')  # compile\n"
    assert result.description.startswith("divide learning rate by 10 ")


def test_divide_learning_rate_by_10_writes_out_string_and_default_rates():
    source = "from tensorflow import keras\n\nmodel.compile(optimizer='sgd', loss='mse')\n"
    result = tweak("divide_learning_rate_by_10", source)
    assert "model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.001), loss='mse')" in result.source
    assert result.description == (
        "divide learning rate by 10 0.01 → 0.001 (line 3, optimizer 'sgd' → keras.optimizers.SGD)")
    assert (result.old, result.new) == (0.01, 0.001)
    default = tweak("divide_learning_rate_by_10", "import keras\nopt = keras.optimizers.Adam()\n")
    assert default.source == "import keras\nopt = keras.optimizers.Adam(learning_rate=0.0001)\n"
    constant = tweak("divide_learning_rate_by_10", "LR = 3e-3  # tuned\nopt = Adam(learning_rate=LR)\n")
    assert constant.source.startswith("LR = 0.0003  # tuned\n")


@pytest.mark.parametrize("source", [
    "import keras\nmodel.compile(optimizer=my_optimizer, loss='mse')\n",
])
def test_divide_learning_rate_by_10_skips_without_a_rate(source):
    assert apply_tweak("divide_learning_rate_by_10", source, {}) is None



# --- scikit-learn ---------------------------------------------------------------------------

PIPELINE = src('''
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(
        solver="lbfgs",  # the default solver
    ))
''')


def test_c_times_10_adds_c_to_an_estimator_in_a_pipeline():
    result = tweak("c_times_10", PIPELINE)
    assert '    solver="lbfgs",  # the default solver\n    C=10.0,\n))\n' in result.source
    assert result.description == "C ×10: LogisticRegression default 1.0 → 10.0 (line 5, added C=10.0)"


def test_c_times_10_multiplies_a_literal_inside_grid_search():
    source = 'search = GridSearchCV(SVC(C=0.5,  kernel="rbf"), {"gamma": [0.1, 1.0]})\n'
    result = tweak("c_times_10", source)
    assert result.source == 'search = GridSearchCV(SVC(C=5.0,  kernel="rbf"), {"gamma": [0.1, 1.0]})\n'
    assert result.description == "C ×10: SVC 0.5 → 5.0 (line 1)"


def test_alpha_div_10_literal_and_defaults_without_float_noise():
    assert tweak("alpha_div_10", "model = Lasso(alpha=0.3)\n").source == "model = Lasso(alpha=0.03)\n"
    assert tweak("alpha_div_10", "model = Ridge()\n").source == "model = Ridge(alpha=0.1)\n"
    sgd = tweak("alpha_div_10", "model = Pipeline([('s', StandardScaler()), ('m', SGDRegressor(penalty='l2'))])\n")
    assert "SGDRegressor(penalty='l2', alpha=1e-05)" in sgd.source


def test_double_max_iter_literal_and_defaults():
    assert tweak("double_max_iter", "m = LinearSVC(max_iter=500)\n").source == "m = LinearSVC(max_iter=1000)\n"
    assert tweak("double_max_iter", PIPELINE).source.count("max_iter=200") == 1
    elastic = tweak("double_max_iter", "m = ElasticNet(alpha=0.5)\n")
    assert elastic.source == "m = ElasticNet(alpha=0.5, max_iter=2000)\n"


@pytest.mark.parametrize(("name", "source"), [
    ("c_times_10", "m = RandomForestClassifier(n_estimators=10)\n"),
    ("c_times_10", "m = LogisticRegression(C=strength)\n"),
    ("alpha_div_10", "m = LinearRegression()\n"),
    ("alpha_div_10", "m = Ridge(**settings)\n"),  # alpha may be in there: adding it could clash
    ("double_max_iter", "m = SVC(max_iter=-1)\n"),  # -1 means no limit
    ("double_max_iter", "m = Ridge()\n"),
])
def test_sklearn_tweaks_skip_when_not_applicable(name, source):
    assert apply_tweak(name, source, {}) is None


def test_sklearn_rewrites_still_build_the_estimators():
    source = src('''
        from sklearn.linear_model import LogisticRegression, SGDRegressor
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        classifier = make_pipeline(StandardScaler(), LogisticRegression(
            solver="lbfgs",  # the default solver
        ))
        regressor = SGDRegressor(penalty="l2")
        search = GridSearchCV(SVC(C=2, kernel="rbf"), {"gamma": [0.1, 1.0]})
    ''')
    for name in LADDERS["regression"]:
        source = tweak(name, source).source
    namespace: dict = {}
    exec(compile(source, "model.py", "exec"), namespace)
    logistic = namespace["classifier"].steps[-1][1]
    assert (logistic.C, logistic.max_iter) == (10.0, 200)
    assert (namespace["regressor"].alpha, namespace["regressor"].max_iter) == (1e-05, 2000)
    assert namespace["search"].estimator.C == 20


def test_c_div_10_alpha_times_10_and_max_iter_times_10_literals_and_defaults():
    c_default = tweak("c_div_10", PIPELINE)
    assert '    solver="lbfgs",  # the default solver\n    C=0.1,\n))\n' in c_default.source
    assert c_default.description == "C ÷10: LogisticRegression default 1.0 → 0.1 (line 5, added C=0.1)"
    c_literal = tweak("c_div_10", 'search = GridSearchCV(SVC(C=5,  kernel="rbf"), grid)\n')
    assert c_literal.source == 'search = GridSearchCV(SVC(C=0.5,  kernel="rbf"), grid)\n'
    assert c_literal.description == "C ÷10: SVC 5 → 0.5 (line 1)"
    alpha = tweak("alpha_times_10", "model = Lasso(alpha=0.3)  # sparse\n")
    assert alpha.source == "model = Lasso(alpha=3.0)  # sparse\n"
    assert alpha.description == "alpha ×10: Lasso 0.3 → 3.0 (line 1)"
    assert tweak("alpha_times_10", "model = SGDRegressor()\n").source == "model = SGDRegressor(alpha=0.001)\n"
    max_iter = tweak("max_iter_times_10", "m = LinearSVC(max_iter=500)\n")
    assert max_iter.source == "m = LinearSVC(max_iter=5000)\n"
    assert max_iter.description == "max_iter ×10: LinearSVC 500 → 5000 (line 1)"
    elastic = tweak("max_iter_times_10", "m = ElasticNet(alpha=0.5)\n")
    assert elastic.source == "m = ElasticNet(alpha=0.5, max_iter=10000)\n"


@pytest.mark.parametrize(("name", "source"), [
    ("c_div_10", "m = RandomForestClassifier(n_estimators=10)\n"),
    ("c_div_10", "m = LogisticRegression(C=strength)\n"),
    ("alpha_times_10", "m = LinearRegression()\n"),
    ("alpha_times_10", "m = Ridge(**settings)\n"),
    ("max_iter_times_10", "m = SVC(max_iter=-1)\n"),
    ("max_iter_times_10", "m = Ridge()\n"),
])
def test_reverse_sklearn_tweaks_skip_when_not_applicable(name, source):
    assert apply_tweak(name, source, {}) is None


def test_reverse_sklearn_rewrites_still_build_the_estimators():
    source = src('''
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.svm import SVC

        classifier = LogisticRegression(C=2.0)
        regressor = Ridge()
        svm = SVC()
    ''')
    for name in ("c_div_10", "alpha_times_10", "max_iter_times_10"):
        source = tweak(name, source).source
    namespace: dict = {}
    exec(compile(source, "model.py", "exec"), namespace)
    assert (namespace["classifier"].C, namespace["classifier"].max_iter) == (0.2, 1000)
    assert namespace["regressor"].alpha == 10.0
    assert namespace["svm"].C == 0.1



# --- parameter mode -------------------------------------------------------------------------

PARAMS_SCRIPT = src('''
    from jobs import kit

    p = kit.params(EPOCHS=5, learning_rate=1e-3, batch_size=32, dense_layers=0, name="faces")
    print(p)
''')


@pytest.mark.parametrize(("name", "key", "new", "description"), [
    ("double_epochs", "EPOCHS", 10, "set EPOCHS 5 → 10 (parameter)"),
    ("halve_learning_rate", "learning_rate", 0.0005, "set learning_rate 0.001 → 0.0005 (parameter)"),
    ("double_learning_rate", "learning_rate", 0.002, "set learning_rate 0.001 → 0.002 (parameter)"),
    ("halve_batch_size", "batch_size", 16, "set batch_size 32 → 16 (parameter)"),
    ("add_dense", "dense_layers", 1, "set dense_layers 0 → 1 (parameter)"),
])
def test_parameter_mode_changes_the_declared_parameter_not_the_source(name, key, new, description):
    result = tweak(name, PARAMS_SCRIPT)
    assert result.source == PARAMS_SCRIPT
    assert result.params == {**declared_params(PARAMS_SCRIPT), key: new}
    assert result.description == description


def test_parameter_mode_overlays_current_params_case_insensitively():
    result = tweak("double_epochs", PARAMS_SCRIPT, {"epochs": 7, "LR": 0.004})
    assert result.params["EPOCHS"] == 14 and "epochs" not in result.params
    assert result.description == "set EPOCHS 7 → 14 (parameter)"
    rate = tweak("halve_learning_rate", PARAMS_SCRIPT, {"LR": 0.004})
    assert rate.params["learning_rate"] == 0.002


def test_parameter_mode_skips_absent_parameters_and_never_edits_source():
    for name in LADDERS["regression"]:
        assert apply_tweak(name, PARAMS_SCRIPT, {}) is None
    assert apply_tweak("halve_batch_size", PARAMS_SCRIPT, {"batch_size": 1}) is None
    env_reader = src('''
        import json, os
        params = json.loads(os.environ.get("PUSHTUNE_PARAMS") or "{}")
        model = Ridge(alpha=params.get("alpha", 1.0))
        model.fit(x, y, epochs=5)
    ''')
    assert apply_tweak("double_epochs", env_reader, {}) is None  # no declared epochs, no source edit
    result = tweak("alpha_div_10", env_reader, {"alpha": 0.5})
    assert result.params == {"alpha": 0.05} and result.source == env_reader
    sklearn_params = tweak("c_times_10", "from jobs.kit import params\np = params(C=1, max_iter=100)\n")
    assert sklearn_params.params == {"C": 10, "max_iter": 100}


def test_declared_params_reads_literals_only():
    source = src('''
        import jobs.kit as k
        p = k.params(epochs=5, lr=-1e-3, name='x', shuffle=True, seed=None, sizes=[32, 64],
                     pair=(1, 2), width=compute(), mapping={"a": 1}, **extra)
    ''')
    assert declared_params(source) == {
        "epochs": 5, "lr": -0.001, "name": "x", "shuffle": True, "seed": None, "sizes": [32, 64],
        "pair": [1, 2],
    }
    assert declared_params("x = params(epochs=5)\n") == {}  # not jobs.kit's params
    assert declared_params("import os\nos.getenv('PUSHTUNE_PARAMS')\n") == {}


@pytest.mark.parametrize(("source", "expected"), [
    ("from jobs import kit\np = kit.params(epochs=3)\n", True),
    ("from jobs import kit as K\np = K.params()\n", True),
    ("from jobs.kit import params\np = params(epochs=3)\n", True),
    ("from jobs.kit import params as hp\np = hp(epochs=3)\n", True),
    ("import jobs.kit as k\np = k.params()\n", True),
    ("import jobs.kit\np = jobs.kit.params()\n", True),
    ("import os\nraw = os.environ['PUSHTUNE_PARAMS']\n", True),
    ("import os\nraw = os.environ.get('PUSHTUNE_PARAMS', '{}')\n", True),
    ("import os\nraw = os.getenv('PUSHTUNE_PARAMS')\n", True),
    ("from os import environ\nraw = environ['PUSHTUNE_PARAMS']\n", True),
    ("from jobs import kit\nkit.report(accuracy=0.9)\n", False),
    ("def params(**kw):\n    return kw\np = params(epochs=3)\n", False),
    ("import os\nraw = os.environ.get('PUSHTUNE_OUTPUT')\n", False),
    ("print('PUSHTUNE_PARAMS')\n", False),
])
def test_reads_params_variants(source, expected):
    assert reads_params(source) is expected


NEW_PARAMS_SCRIPT = src('''
    from jobs.kit import params

    p = params(lr=0.01, batch_size=128, dense_width=64, dropout=0, C=1.0, alpha=0.5, max_iter=100)
''')


@pytest.mark.parametrize(("name", "key", "old", "new", "description"), [
    ("divide_learning_rate_by_10", "lr", 0.01, 0.001, "set lr 0.01 → 0.001 (parameter)"),
    ("widen_dense", "dense_width", 64, 128, "set dense_width 64 → 128 (parameter)"),
    ("add_dropout", "dropout", 0, 0.2, "set dropout 0 → 0.2 (parameter)"),
    ("batch_size_32", "batch_size", 128, 32, "set batch_size 128 → 32 (parameter)"),
    ("c_div_10", "C", 1.0, 0.1, "set C 1.0 → 0.1 (parameter)"),
    ("alpha_times_10", "alpha", 0.5, 5.0, "set alpha 0.5 → 5.0 (parameter)"),
    ("max_iter_times_10", "max_iter", 100, 1000, "set max_iter 100 → 1000 (parameter)"),
])
def test_new_tweaks_in_parameter_mode(name, key, old, new, description):
    result = tweak(name, NEW_PARAMS_SCRIPT)
    assert result.source == NEW_PARAMS_SCRIPT
    assert result.params == {**declared_params(NEW_PARAMS_SCRIPT), key: new}
    assert (result.description, result.old, result.new, result.sites) == (description, old, new, 0)


def test_add_dropout_parameter_rises_in_tidy_steps_up_to_half():
    seen, params = [], {"dropout": 0.0}
    while result := apply_tweak("add_dropout", NEW_PARAMS_SCRIPT, params):
        params = result.params
        seen.append(params["dropout"])
    assert seen == [0.2, 0.3, 0.4, 0.5]  # 0.2 + 0.1 is 0.30000000000000004 in floats
    assert apply_tweak("add_dropout", NEW_PARAMS_SCRIPT, {"dropout": 0.45}) is None  # 0.55: too much


def test_new_tweaks_in_parameter_mode_skip_and_never_edit_source():
    assert apply_tweak("batch_size_32", NEW_PARAMS_SCRIPT, {"batch_size": 32}) is None
    assert apply_tweak("widen_dense", NEW_PARAMS_SCRIPT, {"dense_width": 0}) is None
    keras_with_params = src('''
        from jobs import kit
        from keras.layers import Dense

        p = kit.params(epochs=3)
        model = Sequential([Dense(4), Dense(10)])
        model.fit(x, y, batch_size=1347)
    ''')
    for name in ("widen_dense", "add_dropout", "batch_size_32", "divide_learning_rate_by_10"):
        assert apply_tweak(name, keras_with_params, {}) is None  # no such parameter: no source edit



# --- rewritten Keras models really build ----------------------------------------------------

KERAS_MODELS = {
    "sequential": (SEQUENTIAL, ("add_dense", "halve_learning_rate")),
    "add_chain": (src('''
        from keras import Input
        from keras.models import Sequential
        from keras.layers import Dense

        model = Sequential()
        model.add(Input(shape=(6,)))
        model.add(Dense(12, activation='relu'))
        # output
        model.add(Dense(4, activation='softmax'))
        model.compile(optimizer='sgd', loss='categorical_crossentropy')
    '''), ("add_dense", "double_learning_rate")),
    "functional": (
        FUNCTIONAL + "model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3), loss='mse')\n",
        ("add_dense", "halve_learning_rate")),
    "tf_keras_names": (src('''
        from tensorflow.keras import layers, models

        model = models.Sequential([layers.Input(shape=(5,)), layers.Dense(7), layers.Dense(2)])
        model.compile(optimizer="rmsprop", loss="mse")
    '''), ("add_dense", "halve_learning_rate")),
    # trained on 64 rows, so the steps per epoch tell the batch size
    "narrow_sequential": (src('''
        import numpy as np
        from tensorflow import keras
        from tensorflow.keras import layers

        model = keras.Sequential([
            keras.Input(shape=(4,)),
            layers.Dense(3, activation="relu"),  # bottleneck
            layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        history = model.fit(np.zeros((64, 4)), np.zeros(64), epochs=1, batch_size=1347, verbose=0)
    '''), ("widen_dense", "add_dropout", "divide_learning_rate_by_10", "batch_size_32")),
    "narrow_add_chain": (src('''
        import numpy as np
        from keras import Input
        from keras.models import Sequential
        from keras.layers import Dense
        from keras.optimizers import SGD

        model = Sequential()
        model.add(Input(shape=(6,)))
        model.add(Dense(16, activation='relu'))
        model.add(Dense(10, activation='softmax'))
        model.compile(optimizer=SGD(learning_rate=0.05), loss='categorical_crossentropy')
        history = model.fit(np.zeros((64, 6)), np.zeros((64, 10)), batch_size=64, verbose=0)
    '''), ("widen_dense", "add_dropout", "divide_learning_rate_by_10", "batch_size_32")),
    "narrow_functional": (src('''
        import tensorflow as tf

        inputs = tf.keras.Input(shape=(8,))
        h = tf.keras.layers.Dense(64, activation="relu")(inputs)
        h = tf.keras.layers.Dense(8, activation="relu")(h)
        outputs = tf.keras.layers.Dense(3, activation="softmax")(h)
        model = tf.keras.Model(inputs, outputs)
        model.compile(optimizer=tf.keras.optimizers.Adam(), loss="mse")
    '''), ("widen_dense", "add_dropout", "divide_learning_rate_by_10")),
}

BUILD_SCRIPT = '''
import json, sys
import keras
results = {}
for path in sys.argv[1:]:
    namespace = {}
    exec(compile(open(path).read(), path, "exec"), namespace)
    model = namespace["model"]
    results[path] = {
        "dense_units": [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)],
        "learning_rate": float(model.optimizer.learning_rate),
        "layers": [type(layer).__name__ for layer in model.layers],
        "steps": namespace["history"].params["steps"] if "history" in namespace else None,
    }
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def built_models(tmp_path_factory) -> dict:
    """Each Keras model, as pushed and as tweaked, built and compiled in one subprocess."""
    folder = tmp_path_factory.mktemp("keras_models")
    paths = []
    for label, (source, names) in KERAS_MODELS.items():
        for name in names:
            source_after = tweak(name, source).source
            (folder / f"{label}.tweaked.py").write_text(source_after)
            source = source_after
        (folder / f"{label}.pushed.py").write_text(KERAS_MODELS[label][0])
        paths += [folder / f"{label}.pushed.py", folder / f"{label}.tweaked.py"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {Path(path).name: value for path, value in results.items()}


@pytest.mark.parametrize(("label", "pushed_units", "tweaked_units", "pushed_rate", "tweaked_rate"), [
    ("sequential", [16, 3], [16, 16, 3], 0.001, 0.0005),
    ("add_chain", [12, 4], [12, 12, 4], 0.01, 0.02),
    ("functional", [24, 3], [24, 24, 3], 0.001, 0.0005),
    ("tf_keras_names", [7, 2], [7, 7, 2], 0.001, 0.0005),
    ("narrow_sequential", [3, 10], [10, 10], 0.001, 0.0001),
    ("narrow_add_chain", [16, 10], [32, 10], 0.05, 0.005),
    ("narrow_functional", [64, 8, 3], [64, 16, 3], 0.001, 0.0001),
])
def test_tweaked_keras_models_build_with_the_described_changes(
        built_models, label, pushed_units, tweaked_units, pushed_rate, tweaked_rate):
    pushed, tweaked = built_models[f"{label}.pushed.py"], built_models[f"{label}.tweaked.py"]
    assert pushed["dense_units"] == pushed_units
    assert tweaked["dense_units"] == tweaked_units
    assert pushed["learning_rate"] == pytest.approx(pushed_rate)
    assert tweaked["learning_rate"] == pytest.approx(tweaked_rate)
    names = KERAS_MODELS[label][1]
    assert "Dropout" not in pushed["layers"]
    assert tweaked["layers"][-2:] == (["Dropout", "Dense"] if "add_dropout" in names else ["Dense", "Dense"])
    if "batch_size_32" in names:  # 64 rows: one batch as pushed, two of 32 once tweaked
        assert (pushed["steps"], tweaked["steps"]) == (1, 2)


# --- extreme literals and deep nesting: a tweak that cannot apply is skipped -------------------


def test_a_change_beyond_float_range_does_not_apply():
    source = "from sklearn.linear_model import LogisticRegression\nmodel = LogisticRegression(C=1e308)\n"
    assert apply_tweak("c_times_10", source, {}) is None
    assert tweak("c_div_10", source).new == 1e307
    infinite = "from sklearn.linear_model import Ridge\nmodel = Ridge(alpha=1e999)\n"  # a literal inf
    assert apply_tweak("alpha_div_10", infinite, {}) is None and apply_tweak("alpha_times_10", infinite, {}) is None
    big = "1" + "0" * 400  # an int Python takes, beyond float range
    huge = f"from sklearn.linear_model import Ridge\nmodel = Ridge(alpha={big}, max_iter={big})\n"
    for name in ("alpha_div_10", "alpha_times_10", "double_max_iter", "max_iter_times_10"):
        assert apply_tweak(name, huge, {}) is None
    in_params = "from jobs import kit\np = kit.params(C=1e308, epochs=10**400)\n"
    assert apply_tweak("c_times_10", in_params, {}) is None and apply_tweak("double_epochs", in_params, {}) is None
    assert apply_tweak("c_div_10", in_params, {}).params["C"] == 1e307


def test_a_source_too_deeply_nested_to_rewrite_skips_every_tweak():
    deep = ("from sklearn.linear_model import LogisticRegression\n"
            "model = LogisticRegression(C=1.0)\n"
            "x = " + "-" * 500 + "1\n")
    ast.parse(deep)  # Python runs it
    for name in TWEAK_NAMES:
        assert apply_tweak(name, deep, {}) is None
    assert tweak("c_times_10", deep.replace("-" * 500, "-" * 20)).new == 10.0


def test_a_long_boolean_chain_does_not_crash_the_process():
    # libcst's native parser nests `a and b and …`: 20,000 terms overflowed its stack (SIGSEGV)
    code = ("from jobs.tune.tweaks import apply_tweak\n"
            "source = 'from sklearn.svm import SVC\\nm = SVC(C=1.0)\\nx = ' + ' and '.join(['1'] * 20000) + '\\n'\n"
            "print(apply_tweak('c_times_10', source, {}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "None\n"), done.stderr[-2000:]


def test_add_dropout_after_a_layer_given_by_name():
    # found by tests/test_fuzz.py: the layer before the output was a name, not a call
    source = (FIXTURES / "nested_sequential.py").read_text()
    result = tweak("add_dropout", source)
    assert "feature_extractor, Dropout(0.3), Dense(1" in result.source
