"""The static model-file classifier (jobs/classify/classifier.py) and `pushtune classify`."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.classify.classifier import Classification, classify_file, classify_paths, classify_source
from jobs.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "classify"
ADVERSARIAL = FIXTURES / "adversarial"


def classify(source: str) -> Classification:
    return classify_source(textwrap.dedent(source).lstrip("\n"))


def check(source: str, kind: str, framework: str, reason: str) -> None:
    result = classify(source)
    assert (result.kind, result.framework, result.reason) == (kind, framework, reason)


# --- name resolution: the import styles real files use -----------------------------------------

IMPORT_STYLES = {
    "tf.keras attribute chain": (
        """
        import tensorflow as tf
        model = tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3), tf.keras.layers.Dense(2)])
        """, "cnn", "keras", "Conv2D call at line 2"),
    "keras layers module alias": (
        """
        import keras
        from keras import layers as L
        model = keras.Sequential([L.Dense(16), L.Dense(1)])
        """, "ann", "keras", "Dense layers only (first at line 3)"),
    "star import": (
        """
        from tensorflow.keras.layers import *
        from tensorflow.keras.models import Sequential
        model = Sequential([Conv2D(8, 3), Flatten(), Dense(2)])
        """, "cnn", "keras", "Conv2D call at line 3"),
    "import keras then keras.layers": (
        """
        import keras

        model = keras.Sequential()
        model.add(keras.layers.Dense(3))
        """, "ann", "keras", "Dense layers only (first at line 4)"),
    "applications base": (
        """
        from tensorflow.keras.applications import VGG16
        base = VGG16(include_top=False, weights=None)
        """, "cnn", "keras", "VGG16 base at line 2"),
    "applications via module": (
        """
        import keras
        base = keras.applications.ResNet50V2(include_top=False)
        """, "cnn", "keras", "ResNet50V2 base at line 2"),
    "sklearn module alias": (
        """
        import sklearn.linear_model as lm
        model = lm.Ridge(alpha=0.5)
        """, "regression", "sklearn", "Ridge (sklearn.linear_model) at line 2"),
    "from sklearn import linear_model": (
        """
        from sklearn import linear_model
        model = linear_model.LogisticRegression()
        """, "regression", "sklearn", "LogisticRegression (sklearn.linear_model) at line 2"),
    "import torch.nn as nn": (
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(2))
        """, "cnn", "pytorch", "Conv2d call at line 2"),
    "from torch.nn import Conv2d": (
        """
        from torch.nn import Conv2d
        layer = Conv2d(1, 4, 3)
        """, "cnn", "pytorch", "Conv2d call at line 2"),
    "from torch import nn": (
        """
        from torch import nn
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        """, "ann", "pytorch", "Linear layers only (first at line 2)"),
    "import torch, full path": (
        """
        import torch
        layer = torch.nn.ConvTranspose2d(4, 1, 3)
        """, "cnn", "pytorch", "ConvTranspose2d call at line 2"),
    "alias by assignment": (
        """
        import tensorflow as tf
        L = tf.keras.layers
        Conv = L.Conv3D
        block = Conv(8, 3)
        """, "cnn", "keras", "Conv3D call at line 4"),
    "layer class passed, not called": (
        """
        import functools
        from keras import layers
        SameConv = functools.partial(layers.SeparableConv2D, padding="same")
        """, "cnn", "keras", "SeparableConv2D passed at line 3"),
    "keras 1 names": (
        """
        from keras.layers import Convolution1D
        layer = Convolution1D(8, 3)
        """, "cnn", "keras", "Convolution1D call at line 2"),
    "try/except ImportError fallback": (
        """
        try:
            import tensorflow as tf
        except ImportError:
            tf = None
        layer = tf.keras.layers.Conv2DTranspose(8, 3)
        """, "cnn", "keras", "Conv2DTranspose call at line 5"),
}


@pytest.mark.parametrize("name", IMPORT_STYLES)
def test_import_styles_resolve(name):
    check(*IMPORT_STYLES[name])


# --- where models are built ---------------------------------------------------------------------


def test_model_built_inside_a_function_called_under_main():
    check("""
        import keras


        def build(n_classes):
            return keras.Sequential([keras.layers.Dense(n_classes)])


        if __name__ == "__main__":
            build(10)
        """, "ann", "keras", "Dense layers only (first at line 5)")


def test_function_defined_before_its_imports_resolves_like_at_run_time():
    # The body runs after the module finished importing, so `layers` is keras by then.
    check("""
        def build():
            return layers.Conv2D(8, 3)

        from keras import layers
        build()
        """, "cnn", "keras", "Conv2D call at line 2")


def test_subclassed_keras_model_with_layers_in_init():
    result = classify_file(FIXTURES / "keras_subclassed.py")
    assert (result.kind, result.framework, result.reason) == ("cnn", "keras", "Conv2D call at line 8")


def test_subclassed_torch_module_with_layers_in_init():
    result = classify_file(FIXTURES / "torch_cnn.py")
    assert (result.kind, result.framework, result.reason) == ("cnn", "pytorch", "Conv2d call at line 10")


def test_class_attribute_is_not_visible_from_methods():
    # Python scoping: `Conv2D` inside the method is the module-level user function, not the class attr.
    check("""
        from keras import layers

        def Conv2D(*args):
            return args

        class Net:
            Conv2D = layers.Conv2D

            def build(self):
                return Conv2D(8, 3)
        """, "unsupported", "keras",
        "no model is built (Conv2D at line 3 is user-defined, not a library layer)")


def test_nested_sequential_with_star_imports():
    result = classify_file(FIXTURES / "nested_sequential.py")
    assert (result.kind, result.reason) == ("cnn", "Conv1D call at line 5")


def test_conv_inside_functional_call_chain():
    check("""
        from keras import layers, Input, Model
        inputs = Input((28, 28, 1))
        x = layers.Conv2D(8, 3)(inputs)
        model = Model(inputs, layers.Dense(2)(layers.Flatten()(x)))
        """, "cnn", "keras", "Conv2D call at line 3")


def test_lambda_and_comprehension_bodies_are_seen():
    check("""
        from torch import nn
        make = lambda width: nn.Linear(width, width)
        blocks = [nn.Conv1d(c, c, 3) for c in (4, 8)]
        """, "cnn", "pytorch", "Conv1d call at line 3")


# --- precedence ---------------------------------------------------------------------------------


def test_precedence_cnn_over_ann_over_regression():
    check("""
        from sklearn.linear_model import LogisticRegression
        from keras import layers
        baseline = LogisticRegression()
        head = layers.Dense(10)
        body = layers.Conv2D(8, 3)
        """, "cnn", "keras", "Conv2D call at line 5")
    check("""
        from sklearn.linear_model import LogisticRegression
        from keras import layers
        baseline = LogisticRegression()
        head = layers.Dense(10)
        """, "ann", "keras", "Dense layers only (first at line 4)")
    check("""
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.svm import SVR
        models = [RandomForestClassifier(), SVR()]
        """, "regression", "sklearn", "SVR (sklearn.svm) at line 3")


def test_first_convolution_is_named():
    check("""
        from keras import layers
        a = layers.Dense(3)
        b = layers.DepthwiseConv2D(3)
        c = layers.Conv2D(8, 3)
        """, "cnn", "keras", "DepthwiseConv2D call at line 3")


# --- scikit-learn -------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator, family", [
    ("LinearRegression", "linear_model"), ("Lasso", "linear_model"), ("ElasticNetCV", "linear_model"),
    ("SGDRegressor", "linear_model"), ("LinearSVC", "svm"), ("SVC", "svm"),
])
def test_linear_and_svm_estimators_are_regression(estimator, family):
    check(f"""
        from sklearn.{family} import {estimator}
        model = {estimator}()
        """, "regression", "sklearn", f"{estimator} (sklearn.{family}) at line 2")


def test_linear_model_inside_pipeline_and_grid_search():
    result = classify_file(FIXTURES / "sklearn_logreg.py")
    assert (result.kind, result.framework, result.reason) == (
        "regression", "sklearn", "LogisticRegression (sklearn.linear_model) at line 9")
    check("""
        from sklearn.pipeline import Pipeline
        from sklearn.model_selection import GridSearchCV
        import sklearn.svm
        search = GridSearchCV(Pipeline([("svr", sklearn.svm.SVR())]), {"svr__C": [1, 10]})
        """, "regression", "sklearn", "SVR (sklearn.svm) at line 4")


@pytest.mark.parametrize("module, estimator", [
    ("ensemble", "RandomForestClassifier"), ("neighbors", "KNeighborsClassifier"),
    ("cluster", "KMeans"), ("ensemble", "HistGradientBoostingRegressor"), ("tree", "DecisionTreeClassifier"),
])
def test_other_estimators_are_unsupported_and_named(module, estimator):
    check(f"""
        from sklearn.{module} import {estimator}

        model = {estimator}()
        """, "unsupported", "sklearn",
        f"scikit-learn {estimator} ({module}) at line 3 is not a linear model")


def test_sklearn_without_an_estimator_builds_no_model():
    check("""
        from sklearn.preprocessing import StandardScaler
        scaled = StandardScaler().fit_transform([[1.0], [2.0]])
        """, "unsupported", "sklearn", "no model is built")


# --- what must not count ------------------------------------------------------------------------


def test_layer_names_in_comments_strings_and_docstrings_do_not_count():
    check('''
        """A Conv2D network (one day)."""
        import keras
        # model.add(keras.layers.Conv2D(32, 3))
        print("keras.layers.Conv2D(32, 3)")
        ''', "unsupported", "keras", "layer names only in comments or strings (Conv2D at line 1)")


def test_unused_layer_import_does_not_count():
    check("""
        from keras.layers import Conv2D, Dense
        print("nothing built")
        """, "unsupported", "keras", "layer names only in unused imports (Conv2D at line 1)")
    result = classify_file(ADVERSARIAL / "ann_unused_conv_import.py")
    assert (result.kind, result.reason) == ("ann", "Dense layers only (first at line 5)")


def test_reassignment_shadows_the_imported_layer():
    check("""
        from keras.layers import Dense

        def my_func(units):
            return units

        Dense = my_func
        hidden = Dense(64)
        """, "unsupported", "keras",
        "no model is built (Dense at line 7 is user-defined, not a library layer)")


def test_user_defined_conv2d_function_and_class():
    result = classify_file(ADVERSARIAL / "unsupported_user_defined_conv2d.py")
    assert (result.kind, result.framework, result.reason) == (
        "unsupported", "none",
        "no model is built (Conv2D at line 4 is user-defined, not a library layer)")
    check("""
        class Conv2D:
            pass

        layer = Conv2D()
        """, "unsupported", "none",
        "no model is built (Conv2D at line 1 is user-defined, not a library layer)")


def test_local_parameter_named_like_a_module_is_not_the_library():
    check("""
        from keras import layers

        def build(layers):
            return layers.Conv2D(8, 3)
        """, "unsupported", "keras", "no model is built (Conv2D at line 4 is not a call of a library layer)")


def test_library_name_used_without_import_is_not_the_library():
    check("""
        model = keras.Sequential([keras.layers.Conv2D(8, 3)])
        """, "unsupported", "none", "no model is built (Conv2D at line 1 is not a call of a library layer)")


def test_isinstance_check_on_a_conv_class_builds_nothing():
    result = classify_file(ADVERSARIAL / "ann_isinstance_conv.py")
    assert (result.kind, result.framework, result.reason) == (
        "ann", "pytorch", "Linear layers only (first at line 7)")


def test_other_network_layers_are_unsupported():
    result = classify_file(FIXTURES / "keras_lstm.py")
    assert (result.kind, result.framework, result.reason) == (
        "unsupported", "keras", "Embedding layer at line 4: not a dense or convolutional network")


@pytest.mark.parametrize("source, reason, framework", [
    ("from tensorflow import keras\nmodel = keras.models.load_model('m.keras')\n",
     "model only loaded from disk (load_model at line 2)", "keras"),
    ("import torch\nnet = torch.load('m.pt')\n", "model only loaded from disk (torch.load at line 2)", "pytorch"),
    ("import joblib\nfrom sklearn.metrics import accuracy_score\nclf = joblib.load('m.joblib')\n",
     "model only loaded from disk (joblib.load at line 3)", "sklearn"),
])
def test_model_only_loaded_from_disk(source, reason, framework):
    result = classify_source(source)
    assert (result.kind, result.framework, result.reason) == ("unsupported", framework, reason)


def test_plain_python_builds_no_model():
    check("import os\nprint(os.getcwd())\n", "unsupported", "none", "no model is built")


# --- text that is not Python --------------------------------------------------------------------


def test_syntax_errors_name_their_line():
    check("""
        import keras

        print "Conv2D"
        """, "unsupported", "none", "syntax error at line 3")
    result = classify_file(ADVERSARIAL / "unsupported_python2_conv.py")
    assert (result.kind, result.framework, result.reason) == ("unsupported", "none", "syntax error at line 6")


def test_empty_and_blank_files():
    assert classify_source("").reason == "empty file"
    assert classify_source(b"  \n\n").reason == "empty file"
    assert classify_source(b"").kind == "unsupported"


def test_binary_content():
    png_header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    result = classify_source(png_header + b"Conv2D(8, 3)")
    assert (result.kind, result.framework, result.reason) == ("unsupported", "none", "binary content")
    undecodable = bytes(range(128, 256)) * 40
    assert classify_source(undecodable).reason == "binary content"


def test_latin1_coding_line_is_honoured():
    source = "# -*- coding: latin-1 -*-\n# modèle à couches denses\nimport keras\nm = keras.layers.Dense(2)\n"
    result = classify_source(source.encode("latin-1"))
    assert (result.kind, result.reason) == ("ann", "Dense layers only (first at line 4)")


def test_invalid_utf8_is_not_python_source():
    body = "# modèle\nimport keras\nm = keras.layers.Conv2D(2, 3)\n".encode("latin-1")
    declared = classify_source(b"# coding: utf-8\n" + body)
    assert (declared.kind, declared.reason) == ("unsupported", "not valid utf-8 source (declared encoding)")
    undeclared = classify_source(body)
    assert (undeclared.kind, undeclared.reason) == ("unsupported", "not valid utf-8 source (default encoding)")


def test_utf8_bom_and_unknown_encoding():
    assert classify_source(b"\xef\xbb\xbfimport keras\nkeras.layers.Dense(1)\n").kind == "ann"
    assert classify_source(b"# coding: klingon\nx = 1\n").reason == "unknown source encoding declared (klingon)"


def test_exported_notebook_with_ipython_lines():
    result = classify_file(FIXTURES / "notebook_export.py")
    assert (result.kind, result.framework, result.reason) == ("cnn", "keras", "Conv2D call at line 25")


def test_notebook_with_a_real_syntax_error_reports_that_line():
    check("""
        # In[1]:
        !pip install keras
        %matplotlib inline
        import keras
        model = keras.Sequential([
        """, "unsupported", "none", "syntax error at line 5")


def test_ten_megabyte_file_is_read_whole(tmp_path):
    padding_line = "# " + "training log, epoch 1: loss 0.1234 accuracy 0.98 " * 3 + "\n"
    data_line = "    0.125, 0.250, 0.375, 0.500, 0.625, 0.750, 0.875, 1.000,\n"
    lines = ["import keras\n"] + [padding_line] * 45_000 + ['TABLE = """\n'] + [data_line] * 70_000 + ['"""\n']
    model_line = len(lines) + 1
    lines.append("model = keras.Sequential([keras.layers.Conv2D(8, 3)])\n")
    path = tmp_path / "big_model.py"
    path.write_text("".join(lines))
    assert path.stat().st_size > 10 * 2**20
    result = classify_file(path)
    assert (result.kind, result.reason) == ("cnn", f"Conv2D call at line {model_line}")


# --- files and directories ----------------------------------------------------------------------


def test_as_dict_shape():
    result = classify_file(FIXTURES / "torch_mlp.py")
    assert result.as_dict() == {
        "path": str(FIXTURES / "torch_mlp.py"), "kind": "ann", "framework": "pytorch",
        "reason": "Linear layers only (first at line 5)",
    }


def test_unreadable_file_is_unsupported_and_others_continue(tmp_path):
    (tmp_path / "good.py").write_text("from torch import nn\nnet = nn.Linear(2, 2)\n")
    (tmp_path / "dangling.py").symlink_to(tmp_path / "missing-target.py")
    results = classify_paths([tmp_path])
    assert [(Path(r.path).name, r.kind) for r in results] == [("dangling.py", "unsupported"), ("good.py", "ann")]
    assert results[0].reason == "cannot read file: No such file or directory"
    assert classify_file(tmp_path).reason == "cannot read file: Is a directory"


def test_directories_are_walked_sorted_skipping_tool_dirs(tmp_path):
    for relative in ["b/model.py", "a.py", ".git/hook.py", ".venv/lib/site.py", "b/__pycache__/x.py",
                     "notes.txt", "c/d/deep.py"]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("import keras\nkeras.layers.Dense(1)\n")
    names = [Path(r.path).relative_to(tmp_path).as_posix() for r in classify_paths([tmp_path])]
    assert names == ["a.py", "b/model.py", "c/d/deep.py"]
    # A file named twice (directly and through its directory) is classified once.
    again = classify_paths([tmp_path / "a.py", tmp_path])
    assert [r.path for r in again].count(str(tmp_path / "a.py")) == 1


@pytest.mark.timeout(20)
def test_symlink_loop_in_a_directory_does_not_hang(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.py").write_text("from torch import nn\nnn.Conv2d(1, 1, 1)\n")
    (tmp_path / "pkg" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "pkg" / "self").symlink_to(tmp_path / "pkg", target_is_directory=True)
    results = classify_paths([tmp_path])
    assert [(Path(r.path).name, r.kind) for r in results] == [("model.py", "cnn")]


def test_missing_path_raises_user_error(tmp_path):
    with pytest.raises(UserError, match=r"^no such file or directory: .*nothing-here\.py$"):
        classify_paths([FIXTURES / "keras_ann.py", tmp_path / "nothing-here.py"])


def bounded_classify(*paths: Path) -> subprocess.CompletedProcess:
    """`pushtune classify --json` in a child that can neither hang (30 s) nor take the machine's
    memory (2 GiB of address space) when it reads what it should not."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    return subprocess.run([sys.executable, "-m", "jobs", "classify", "--json", *map(str, paths)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=30, preexec_fn=limit_memory)


def test_fifos_and_devices_named_py_are_skipped_with_the_reason(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "zero.py").symlink_to("/dev/zero")
    (tmp_path / "model.py").write_text("from torch import nn\nnet = nn.Linear(2, 2)\n")

    done = bounded_classify(tmp_path, tmp_path / "pipe.py")

    assert done.returncode == 0, done.stderr
    rows = {Path(row["path"]).name: (row["kind"], row["reason"]) for row in json.loads(done.stdout)}
    assert rows == {
        "model.py": ("ann", "Linear layers only (first at line 2)"),
        "pipe.py": ("unsupported", "not a regular file (a FIFO)"),
        "zero.py": ("unsupported", "not a regular file (a character device)"),
    }


def test_a_file_too_large_for_a_script_is_not_read(tmp_path):
    limit = 32 * 2**20
    head = b"import keras\nkeras.layers.Dense(2)\n"
    too_big, just_fits = tmp_path / "weights.py", tmp_path / "just_fits.py"
    with open(too_big, "wb") as handle:
        handle.write(head)
        handle.truncate(limit + 1)  # sparse: no disk is used for it
    just_fits.write_bytes(head + b"#" * (limit - len(head) - 1) + b"\n")

    assert classify_file(too_big).reason == "file too large to be a model script (over 32 MiB)"
    assert classify_file(just_fits).kind == "ann"


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_missing_path_is_one_line_exit_2(cli, tmp_path):
    missing = tmp_path / "no-such-model.py"
    done = cli("classify", FIXTURES / "keras_cnn.py", missing)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"pushtune: error: no such file or directory: {missing}"]
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_json_output_shape(cli):
    done = cli("classify", "--json", FIXTURES, ADVERSARIAL / "cnn_pytorch.py")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    expected = [c.as_dict() for c in classify_paths([FIXTURES, ADVERSARIAL / "cnn_pytorch.py"])]
    assert rows == expected
    assert all(set(row) == {"path", "kind", "framework", "reason"} for row in rows)
    assert {row["kind"] for row in rows} == {"cnn", "ann", "regression", "unsupported"}


def test_cli_table_keeps_long_paths_whole_when_piped(cli, tmp_path):
    deep = tmp_path.joinpath(*[f"directory_level_{n}" for n in range(8)])
    deep.mkdir(parents=True)
    (deep / "a_model_with_a_rather_long_file_name.py").write_text("import torch\ntorch.nn.Linear(2, 2)\n")
    (deep / "broken.py").write_bytes(b"\x00\x01binary")
    done = cli("classify", tmp_path, env={"COLUMNS": "60"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    row = next(line for line in lines if "a_model_with" in line)
    assert str(deep / "a_model_with_a_rather_long_file_name.py") in row
    cells = re.split(r"\s{2,}", row.strip())
    assert cells == [str(deep / "a_model_with_a_rather_long_file_name.py"), "ann", "pytorch",
                     "Linear layers only (first at line 2)"]
    assert any("binary content" in line and "unsupported" in line for line in lines)
    assert "\x1b[" not in done.stdout  # no colour codes in a pipe


# --- the old rule -------------------------------------------------------------------------------

EXPECTED_KINDS = {  # the kind each adversarial file really builds
    "ann_conv_in_comments.py": "ann",
    "ann_conv_in_docstring.py": "ann",
    "ann_isinstance_conv.py": "ann",
    "ann_shadowed_conv.py": "ann",
    "ann_unused_conv_import.py": "ann",
    "cnn_alias_module.py": "cnn",
    "cnn_conv1d.py": "cnn",
    "cnn_keras1_names.py": "cnn",
    "cnn_notebook_magics.py": "cnn",
    "cnn_plain_conv2d.py": "cnn",
    "cnn_pytorch.py": "cnn",
    "cnn_vgg16_base.py": "cnn",
    "regression_svm_with_conv_comment.py": "regression",
    "unsupported_conv_in_strings.py": "unsupported",
    "unsupported_forest.py": "unsupported",
    "unsupported_loaded_model.py": "unsupported",
    "unsupported_python2_conv.py": "unsupported",
    "unsupported_user_defined_conv2d.py": "unsupported",
    "weights.bin.py": "unsupported",  # written by the test: binary bytes that contain "Conv2D"
}


def test_grep_conv2d_rule_is_wrong_where_the_classifier_is_right(tmp_path):
    corpus = tmp_path / "adversarial"
    corpus.mkdir()
    for fixture in ADVERSARIAL.glob("*.py"):
        (corpus / fixture.name).write_bytes(fixture.read_bytes())
    (corpus / "weights.bin.py").write_bytes(b"\x00\x00HDF\x00Conv2D\x00kernel\x00" + bytes(range(256)))
    assert sorted(p.name for p in corpus.iterdir()) == sorted(EXPECTED_KINDS)

    results = classify_paths([corpus])
    classifier_wrong = [r.path for r in results if r.kind != EXPECTED_KINDS[Path(r.path).name]]
    grep_wrong = [
        p.name for p in corpus.iterdir()
        if (b"Conv2D" in p.read_bytes()) != (EXPECTED_KINDS[p.name] == "cnn")
    ]
    assert classifier_wrong == []
    assert len(grep_wrong) >= len(EXPECTED_KINDS) // 2, grep_wrong


def test_a_thousand_nested_lambdas_are_too_deep_not_a_crash():
    # found by tests/test_fuzz.py: Python parses them; the analyser recursed per lambda
    result = classify("from sklearn.svm import SVC\nm = SVC()\nf = " + "lambda: " * 1000 + "1\n")
    assert (result.kind, result.reason) == ("unsupported", "source too deeply nested to analyse")
