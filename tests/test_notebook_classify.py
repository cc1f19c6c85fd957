"""Notebooks (`.ipynb`), notebook exports, pretrained bases and transformers (issue 16): what
jobs/classify/notebook.py turns them into and how jobs/classify/classifier.py classifies them. The notebooks are real:
written with nbformat's v4 API (and its v3 API for the old format)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from nbformat import v3, v4

from jobs.classify.classifier import Classification, classify_file, classify_paths, classify_source
from jobs.classify.notebook import NotebookError, code_of
from jobs.errors import UserError
from jobs.tune.tweaks import apply_tweak
from jobs.tune.tweaks.source import parse as tweaker_parse

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "classify"
PYTHON_KERNEL = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def cell(source: str):
    return v4.new_code_cell(textwrap.dedent(source).strip("\n"))


def markdown(source: str):
    return v4.new_markdown_cell(source)


def notebook(*cells, metadata: dict | None = None):
    return v4.new_notebook(cells=list(cells), metadata=PYTHON_KERNEL if metadata is None else metadata)


def write(tmp_path: Path, nb, name: str = "model.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def verdict(result: Classification) -> tuple[str, str, str]:
    return result.kind, result.framework, result.reason


KERAS_IMPORTS = """
    import tensorflow as tf
    from tensorflow.keras import layers
"""
KERAS_CNN = """
    model = tf.keras.Sequential([
        layers.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, 3, activation="relu"),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.001), loss="sparse_categorical_crossentropy")
"""
KERAS_ANN = """
    model = tf.keras.Sequential([
        layers.Input(shape=(20,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ])
"""


# --- raw notebooks ------------------------------------------------------------------------------


def test_raw_notebook_building_a_conv2d_network_is_a_cnn(tmp_path):
    path = write(tmp_path, notebook(markdown("# A CNN on MNIST"), cell(KERAS_IMPORTS), cell(KERAS_CNN)))
    assert verdict(classify_file(path)) == ("cnn", "keras", "Conv2D call at cell 3, line 3")


def test_magics_and_shell_lines_are_not_code_and_python_cell_magics_run_their_body(tmp_path):
    nb = notebook(
        markdown("Setup"),
        cell("""
            !pip install -q tensorflow
            %matplotlib inline
            %load_ext autoreload
            import matplotlib.pyplot as plt
        """),
        cell("""
            %%capture
            !pip install -q pillow
            import tensorflow as tf
            from tensorflow.keras import layers
        """),
        cell("""
            import sys
            if "google.colab" in sys.modules:
                !nvidia-smi
            files = !ls data
            plt?
        """),
        cell("%%time\n" + textwrap.dedent(KERAS_CNN).strip("\n")),
        cell("%%timeit -n 1\nmodel.predict(tf.zeros((1, 28, 28, 1)))"),
    )
    path = write(tmp_path, nb)
    assert verdict(classify_file(path)) == ("cnn", "keras", "Conv2D call at cell 5, line 4")

    code = code_of(path)
    assert code.cells == (1, 2, 3, 4, 5)
    assert code.notes == (
        "cell 2, line 1: shell line skipped (!pip install -q tensorflow)",
        "cell 2, line 2: magic skipped (%matplotlib inline)",
        "cell 2, line 3: magic skipped (%load_ext autoreload)",
        "cell 3, line 1: %%capture runs its body",
        "cell 3, line 2: shell line skipped (!pip install -q pillow)",
        "cell 4, line 3: shell line skipped (!nvidia-smi)",
        "cell 4, line 4: shell line skipped (files = !ls data)",
        "cell 4, line 5: help line skipped (plt?)",
        "cell 5, line 1: %%time runs its body",
        "cell 6, line 1: %%timeit runs its body",
    )
    assert "    ...  # ipython: !nvidia-smi\n" in code.source  # an indented block keeps a body
    assert "# ipython: %matplotlib inline\n" in code.source
    tweaker_parse(code.source)  # the tweaker reads the same text


def test_dense_only_notebook_is_an_ann(tmp_path):
    path = write(tmp_path, notebook(cell("!pip install tensorflow"), cell(KERAS_IMPORTS), cell(KERAS_ANN)))
    assert verdict(classify_file(path)) == ("ann", "keras", "Dense layers only (first at cell 3, line 3)")


def test_scikit_learn_notebook_is_a_regression(tmp_path):
    nb = notebook(
        cell("""
            %matplotlib inline
            import pandas as pd
            from sklearn.linear_model import LogisticRegression
        """),
        markdown("Fit"),
        cell("""
            clf = LogisticRegression(C=1.0, max_iter=200)
            clf.fit(X, y)
        """),
    )
    result = classify_file(write(tmp_path, nb))
    assert verdict(result) == ("regression", "sklearn", "LogisticRegression (sklearn.linear_model) at cell 3, line 1")


def test_cells_under_other_cell_magics_contribute_nothing(tmp_path):
    nb = notebook(
        cell(KERAS_IMPORTS),
        cell("""
            %%bash
            echo "layers.Conv2D(8, 3)"
        """),
        cell("""
            %%writefile conv_model.py
            from tensorflow.keras import layers
            block = layers.Conv2D(8, 3)
        """),
        cell("%%html\n<b>Conv2D</b>"),
        cell(KERAS_ANN),
    )
    path = write(tmp_path, nb)
    assert verdict(classify_file(path)) == ("ann", "keras", "Dense layers only (first at cell 5, line 3)")
    code = code_of(path)
    assert code.cells == (0, 4)
    assert code.notes == (
        "cell 2: %%bash cell left out (not Python)",
        "cell 3: %%writefile cell left out (not Python)",
        "cell 4: %%html cell left out (not Python)",
    )


def test_a_magic_looking_line_inside_a_string_is_left_alone(tmp_path):
    nb = notebook(cell('''
        %matplotlib inline
        from tensorflow.keras import layers
        HELP = """
        !this line is text
        %so is this one
        """
        conv = layers.Conv2D(8, 3)
    '''))
    code = code_of(write(tmp_path, nb))
    assert "\n!this line is text\n%so is this one\n" in code.source
    assert verdict(classify_source(code.source)) == ("cnn", "keras", "Conv2D call at line 8")


# --- notebooks that are not read ----------------------------------------------------------------


def test_empty_notebooks_have_no_code_cells(tmp_path):
    empty = write(tmp_path, notebook(), "empty.ipynb")
    assert verdict(classify_file(empty)) == ("unsupported", "none", "no code cells")
    blank = write(tmp_path, notebook(markdown("# Notes only"), v4.new_code_cell("   \n"), v4.new_raw_cell("x")),
                  "blank.ipynb")
    assert verdict(classify_file(blank)) == ("unsupported", "none", "no code cells")
    shell_only = write(tmp_path, notebook(cell("!pip install tensorflow")), "shell.ipynb")
    assert verdict(classify_file(shell_only)) == ("unsupported", "none", "no model is built")


def test_invalid_json_is_unsupported_and_says_so(tmp_path):
    text = nbformat.writes(notebook(cell(KERAS_IMPORTS), cell(KERAS_CNN)))
    truncated = tmp_path / "truncated.ipynb"
    truncated.write_text(text[: len(text) // 2])
    result = classify_file(truncated)
    assert result.kind == "unsupported" and result.framework == "none"
    assert result.reason.startswith("notebook is not valid JSON (line "), result.reason
    (tmp_path / "empty.ipynb").write_bytes(b"")
    assert classify_file(tmp_path / "empty.ipynb").reason == "notebook is not valid JSON (empty file)"
    (tmp_path / "latin1.ipynb").write_bytes('{"cells": "modèle"}'.encode("latin-1"))
    assert classify_file(tmp_path / "latin1.ipynb").reason == "notebook is not valid JSON (not UTF-8 text)"
    (tmp_path / "weights.ipynb").write_bytes(b"\x89HDF\x00\x00Conv2D" + bytes(range(256)))
    assert classify_file(tmp_path / "weights.ipynb").reason == "notebook is not valid JSON (binary content)"
    with pytest.raises(NotebookError, match=r"^notebook is not valid JSON") as raised:
        code_of(truncated)
    assert isinstance(raised.value, UserError)


def test_an_nbformat_3_notebook_is_unsupported_and_says_so(tmp_path):
    old = v3.new_notebook(worksheets=[v3.new_worksheet(cells=[
        v3.new_code_cell(input="from keras.layers import Conv2D\nlayer = Conv2D(8, 3)"),
    ])])
    path = tmp_path / "old.ipynb"
    path.write_text(nbformat.writes(old, version=3))
    assert json.loads(path.read_text())["nbformat"] == 3
    assert verdict(classify_file(path)) == ("unsupported", "none", "not an nbformat 4 notebook (nbformat 3)")
    for text, reason in [
        ("[]", "not an nbformat 4 notebook (the JSON is an array, not an object)"),
        ('{"cells": []}', "not an nbformat 4 notebook (no nbformat version)"),
        ('{"nbformat": 4, "nbformat_minor": 5}', "not a valid nbformat 4 notebook (no list of cells)"),
        ('{"nbformat": 4, "cells": [{"source": "x"}]}', "not a valid nbformat 4 notebook (cell 1 has no cell_type)"),
    ]:
        assert classify_source(text, "bad.ipynb").reason == reason


def test_a_notebook_in_another_language_is_not_python(tmp_path):
    r_kernel = {"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}}
    path = write(tmp_path, notebook(cell("model <- lm(y ~ x)"), metadata=r_kernel))
    assert verdict(classify_file(path)) == ("unsupported", "none", "notebook language is r, not Python")


def test_a_syntax_error_names_its_cell_and_line(tmp_path):
    nb = notebook(markdown("intro"), cell(KERAS_IMPORTS), cell("%matplotlib inline\nx = [1,\ny = 2 +\n"))
    assert classify_file(write(tmp_path, nb)).reason == "syntax error at cell 3, line 2"


def test_a_notebook_schema_bend_is_tolerated(tmp_path):
    """Colab and editors write cells without `outputs` or `metadata`: the code cells still count."""
    text = json.dumps({
        "nbformat": 4, "nbformat_minor": 0, "metadata": {},
        "cells": [{"cell_type": "code", "source": ["import torch.nn as nn\n", "net = nn.Conv2d(1, 4, 3)"]}],
    })
    assert verdict(classify_source(text, "colab.ipynb")) == ("cnn", "pytorch", "Conv2d call at cell 1, line 2")


# --- nbconvert exports --------------------------------------------------------------------------

# As `jupyter nbconvert --to script` writes a notebook whose model cell starts with %%time.
EXPORT = '''#!/usr/bin/env python
# coding: utf-8

# In[1]:


get_ipython().system('pip install -q tensorflow')
get_ipython().run_line_magic('matplotlib', 'inline')
import tensorflow as tf
from tensorflow.keras import layers


# In[2]:


get_ipython().run_cell_magic('time', '', 'model = tf.keras.Sequential([\\n    layers.Input(shape=(28, 28, 1)),\\n    layers.Conv2D(16, 3, activation="relu"),\\n    layers.Flatten(),\\n    layers.Dense(10, activation="softmax"),\\n])\\nmodel.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])\\n')


# In[3]:


get_ipython().run_cell_magic('bash', '', 'echo "Conv2D"\\n')


# In[ ]:


model.summary()
'''  # noqa: E501 (verbatim nbconvert output: a cell magic's body is one long line)


def test_nbconvert_export_with_run_cell_magic_is_read_through_the_magic(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(EXPORT)
    assert verdict(classify_file(path)) == ("cnn", "keras", "Conv2D call at line 16")
    code = code_of(path)
    assert 'layers.Conv2D(16, 3, activation="relu"),\n' in code.source
    assert "# ipython: get_ipython().system('pip install -q tensorflow')\n" in code.source
    assert "# ipython: get_ipython().run_cell_magic('bash', '', 'echo \"Conv2D\"\\n')\n" in code.source
    assert code.notes == (
        "line 7: shell line skipped (get_ipython().system('pip install -q tensorflow'))",
        "line 8: magic skipped (get_ipython().run_line_magic('matplotlib', 'inline'))",
        "line 16: %%time runs its body",
        "line 22: %%bash cell skipped (get_ipython().run_cell_magic('bash', '', 'echo \"Conv2D\"\\n'))",
    )
    lines = code.source.splitlines()
    conv_line = next(n for n, line in enumerate(lines, 1) if "Conv2D(16" in line)
    assert code.origin(conv_line) == (0, 16) and code.where(conv_line) == "line 16"
    assert code.origin(len(lines)) == (0, EXPORT.count("\n"))  # lines after the body keep theirs
    tweaker_parse(code.source)


def test_only_python_running_cell_magics_contribute_in_an_export():
    dense = "import keras\nm = keras.layers.Dense(2)\n"
    captured = dense + "get_ipython().run_cell_magic('capture', 'out', 'c = keras.layers.Conv2D(8, 3)\\n')\n"
    assert verdict(classify_source(captured)) == ("cnn", "keras", "Conv2D call at line 3")
    written = dense + "get_ipython().run_cell_magic('writefile', 'm.py', 'c = keras.layers.Conv2D(8, 3)\\n')\n"
    assert verdict(classify_source(written)) == ("ann", "keras", "Dense layers only (first at line 2)")


def test_the_matplotlib_line_agreement_classify_and_tweaker_read_the_same_text():
    """Issue 14: an export with `%matplotlib inline` left as a line classifies, and the text the
    classifier reads (code_of) is what the tweaker can parse and rewrite; the raw file is not."""
    path = FIXTURES / "notebook_export.py"
    raw = path.read_text()
    with pytest.raises(UserError, match="does not parse"):
        tweaker_parse(raw)
    code = code_of(path)
    assert code.source.count("\n") == raw.count("\n")  # line numbers stay
    assert "# ipython: %matplotlib inline\n" in code.source and "pass" not in code.source
    assert verdict(classify_file(path)) == verdict(classify_source(code.source, str(path)))
    tweaked = apply_tweak("add_dropout", code.source, {})
    assert tweaked is not None and "Dropout(0.3)" in tweaked.source


# --- pretrained bases ---------------------------------------------------------------------------

BASES = {
    "torch.hub torchvision": (
        """
        import torch
        import torch.nn as nn
        base = torch.hub.load('pytorch/vision:v0.10.0', 'resnet18', pretrained=True)
        base.fc = nn.Linear(512, 2)
        """, "cnn", "pytorch", "resnet18 (torch.hub) base at line 3"),
    "torch.hub keyword arguments": (
        """
        from torch import hub
        model = hub.load(repo_or_dir='NVIDIA/DeepLearningExamples:torchhub', model='nvidia_efficientnet_b0')
        """, "cnn", "pytorch", "nvidia_efficientnet_b0 (torch.hub) base at line 2"),
    "torch.hub model name in a constant": (
        """
        import torch
        ARCH = "densenet121"
        base = torch.hub.load("pytorch/vision", ARCH, weights="DEFAULT")
        head = torch.nn.Linear(1024, 5)
        """, "cnn", "pytorch", "densenet121 (torch.hub) base at line 3"),
    "torch.hub vision transformer": (
        """
        import torch
        vit = torch.hub.load('facebookresearch/deit:main', 'deit_tiny_patch16_224', pretrained=True)
        vit.head = torch.nn.Linear(192, 2)
        """, "unsupported", "pytorch", "transformer model (deit_tiny_patch16_224 (torch.hub) at line 2)"),
    "timm": (
        """
        import timm
        import torch.nn as nn
        model = timm.create_model('efficientnet_b0', pretrained=True, num_classes=0)
        head = nn.Linear(model.num_features, 10)
        """, "cnn", "pytorch", "efficientnet_b0 (timm) base at line 3"),
    "timm from import, name unknown": (
        """
        from timm import create_model
        from torch import nn
        model = create_model(args.arch, pretrained=True)
        head = nn.Linear(512, 10)
        """, "cnn", "pytorch", "timm.create_model base at line 3"),
    "TF Hub feature vector": (
        """
        import tensorflow as tf
        import tensorflow_hub as hub
        model = tf.keras.Sequential([
            hub.KerasLayer("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", trainable=False),
            tf.keras.layers.Dense(5),
        ])
        """, "cnn", "keras", "hub.KerasLayer(google/imagenet/mobilenet_v2_100_224/feature_vector) base at line 4"),
    "TF Hub URL in a variable": (
        """
        import tensorflow as tf
        import tensorflow_hub as hub
        feature_extractor_url = "https://tfhub.dev/google/tf2-preview/inception_v3/feature_vector/4"
        extractor = hub.KerasLayer(feature_extractor_url, input_shape=(299, 299, 3))
        model = tf.keras.Sequential([extractor, tf.keras.layers.Dense(5)])
        """, "cnn", "keras", "hub.KerasLayer(google/tf2-preview/inception_v3/feature_vector) base at line 4"),
    "TF Hub f-string URL": (
        """
        import tensorflow as tf
        from tensorflow_hub import KerasLayer
        size = 224
        base = KerasLayer(f"https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet1k_b0/feature_vector/{size}")
        head = tf.keras.layers.Dense(3)
        """, "cnn", "keras",
        "hub.KerasLayer(google/imagenet/efficientnet_v2_imagenet1k_b0/feature_vecto…) base at line 4"),
    "TF Hub text embedding is not a base": (
        """
        import tensorflow as tf
        import tensorflow_hub as hub
        embed = hub.KerasLayer("https://tfhub.dev/google/nnlm-en-dim50/2", input_shape=[], dtype=tf.string)
        model = tf.keras.Sequential([embed, tf.keras.layers.Dense(16), tf.keras.layers.Dense(1)])
        """, "ann", "keras", "Dense layers only (first at line 4)"),
    "torchvision get_model": (
        """
        import torchvision
        model = torchvision.models.get_model("mobilenet_v3_small", weights=None)
        """, "cnn", "pytorch", "mobilenet_v3_small base at line 2"),
}


@pytest.mark.parametrize("name", BASES)
def test_pretrained_bases_in_scripts(name):
    source, kind, framework, reason = BASES[name]
    assert verdict(classify_source(textwrap.dedent(source).lstrip("\n"))) == (kind, framework, reason)


def test_pretrained_bases_in_notebooks(tmp_path):
    hub_nb = notebook(
        cell("!pip install -q tensorflow-hub\nimport tensorflow as tf\nimport tensorflow_hub as hub"),
        cell('URL = "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5"'),
        cell("%%time\nmodel = tf.keras.Sequential([hub.KerasLayer(URL), tf.keras.layers.Dense(2)])"),
    )
    assert verdict(classify_file(write(tmp_path, hub_nb, "hub.ipynb"))) == (
        "cnn", "keras", "hub.KerasLayer(google/imagenet/resnet_v2_50/feature_vector) base at cell 3, line 2")
    timm_nb = notebook(cell("%pip install timm\nimport timm, torch"),
                       cell("model = timm.create_model('resnet50d', pretrained=True, num_classes=2)"))
    assert verdict(classify_file(write(tmp_path, timm_nb, "timm.ipynb"))) == (
        "cnn", "pytorch", "resnet50d (timm) base at cell 2, line 1")
    torch_hub_nb = notebook(cell("import torch"),
                            cell("model = torch.hub.load('pytorch/vision', 'vgg16', weights='DEFAULT')"))
    assert verdict(classify_file(write(tmp_path, torch_hub_nb, "torchhub.ipynb"))) == (
        "cnn", "pytorch", "vgg16 (torch.hub) base at cell 2, line 1")


# --- transformers -------------------------------------------------------------------------------


def test_a_transformers_model_with_a_linear_head_is_a_transformer(tmp_path):
    nb = notebook(
        cell("!pip install transformers\nimport torch.nn as nn\nfrom transformers import BertModel, BertTokenizer"),
        cell("""
            tokenizer = BertTokenizer.from_pretrained("bert-base-uncased")
            bert = BertModel.from_pretrained("bert-base-uncased")
            head = nn.Linear(768, 2)
        """),
    )
    assert verdict(classify_file(write(tmp_path, nb))) == (
        "unsupported", "pytorch", "transformer model (BertModel at cell 2, line 2)")


def test_a_transformers_model_with_a_convolution_is_a_cnn():
    source = textwrap.dedent("""
        import torch.nn as nn
        from transformers import AutoModel

        class TextCNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = AutoModel.from_pretrained("distilbert-base-uncased")
                self.conv = nn.Conv1d(768, 128, kernel_size=3)
                self.fc = nn.Linear(128, 2)
    """).lstrip("\n")
    assert verdict(classify_source(source)) == ("cnn", "pytorch", "Conv1d call at line 8")


@pytest.mark.parametrize("source, expected", [
    ("import transformers\n"
     "m = transformers.TFAutoModelForSequenceClassification.from_pretrained('distilbert-base-uncased')\n",
     ("unsupported", "keras", "transformer model (TFAutoModelForSequenceClassification at line 2)")),
    ("from transformers import BertConfig, BertForMaskedLM\nm = BertForMaskedLM(BertConfig())\n",
     ("unsupported", "pytorch", "transformer model (BertForMaskedLM at line 2)")),
    ("from transformers import AutoModelForImageClassification as A\nm = A.from_pretrained('microsoft/resnet-50')\n",
     ("cnn", "pytorch", "AutoModelForImageClassification('microsoft/resnet-50') base at line 2")),
    ("from transformers import ConvNextForImageClassification\n"
     "m = ConvNextForImageClassification.from_pretrained('x')\n",
     ("cnn", "pytorch", "ConvNextForImageClassification (transformers) base at line 2")),
    ("import tensorflow as tf\nimport tensorflow_hub as hub\n"
     "bert = hub.KerasLayer('https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/4')\n"
     "d = tf.keras.layers.Dense(1)\n",
     ("unsupported", "keras",
      "transformer model (hub.KerasLayer(tensorflow/bert_en_uncased_L-12_H-768_A-12) at line 3)")),
    ("from transformers import AutoTokenizer\ntok = AutoTokenizer.from_pretrained('bert-base-uncased')\n",
     ("unsupported", "none", "no model is built")),
])
def test_transformers_variants(source, expected):
    assert verdict(classify_source(source)) == expected


# --- the notebook API the runner and the tweaker reuse ------------------------------------------


def test_code_of_gives_the_cells_in_order_with_their_indices_and_lines(tmp_path):
    nb = notebook(markdown("# Title"), cell("%matplotlib inline\nimport keras"), markdown("text"),
                  v4.new_code_cell("m = keras.Sequential([keras.layers.Dense(4)])\n"))
    code = code_of(write(tmp_path, nb))
    assert code.is_notebook and code.cells == (1, 3)
    assert code.source == (
        "# %% pushtune cell 2\n# ipython: %matplotlib inline\nimport keras\n"
        "# %% pushtune cell 4\nm = keras.Sequential([keras.layers.Dense(4)])\n"
    )
    assert code.origins == ((1, 0), (1, 1), (1, 2), (3, 0), (3, 1))
    assert code.where(5) == "cell 4, line 1"
    assert code.split(code.source) == {1: "%matplotlib inline\nimport keras",
                                       3: "m = keras.Sequential([keras.layers.Dense(4)])\n"}
    assert code.notebook.cells[1].source == "%matplotlib inline\nimport keras"
    # a str is text: the notebook JSON is recognised, or said to be one
    text = nbformat.writes(nb)
    assert code_of(text).source == code.source == code_of(text, notebook=True).source
    assert not code_of("x = 1\n").is_notebook


def test_a_tweaked_notebook_source_splits_back_into_its_cells_with_the_magics(tmp_path):
    nb = notebook(
        markdown("# Train"),
        cell("!pip install -q tensorflow\n%matplotlib inline\n" + textwrap.dedent(KERAS_IMPORTS).strip()),
        cell("%%time\n" + textwrap.dedent(KERAS_CNN).strip()),
        cell("%%bash\nnvidia-smi"),
        cell("model.fit(x, y, epochs=5)\n"),
    )
    code = code_of(write(tmp_path, nb))
    tweaked = apply_tweak("add_dense", code.source, {})
    assert tweaked is not None
    halved = apply_tweak("halve_learning_rate", tweaked.source, {})
    assert halved is not None
    cells = code.split(halved.source)
    assert sorted(cells) == [1, 2, 4]  # the %%bash cell (3) and the markdown stay as they are
    assert cells[1] == nb.cells[1].source  # untouched, magics and shell lines included
    assert cells[4] == nb.cells[4].source
    model_cell = cells[2].splitlines()
    assert model_cell[0] == "%%time"
    assert "layers.Dense(128, activation=\"relu\")," in cells[2] and "learning_rate=0.0005" in cells[2]
    assert len(model_cell) == len(nb.cells[2].source.splitlines()) + 1  # one layer added
    # the tweaked notebook is a valid notebook
    rebuilt = nbformat.from_dict(json.loads(nbformat.writes(nb)))
    for index, source in cells.items():
        rebuilt.cells[index].source = source
    nbformat.validate(rebuilt)
    assert code_of(nbformat.writes(rebuilt)).source == halved.source


def test_split_refuses_a_source_that_lost_a_cell_marker(tmp_path):
    code = code_of(write(tmp_path, notebook(cell("a = 1"), cell("b = 2"))))
    with pytest.raises(ValueError, match="marker of cell 2"):
        code.split(code.source.replace("# %% pushtune cell 2\n", ""))


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.lists(st.sampled_from(["%", "%%", "!", "?", "time", "bash", " ", "\n", "\r", "x", "=", "'''", "#", "(", ":",
                              "\\", "    ", "# ipython: ", "...", "# %% pushtune cell 1"]), max_size=40).map("".join),
    st.text(max_size=30)), max_size=6))
def test_any_cells_round_trip_through_code_of_and_split(sources):
    nb = notebook(*(v4.new_code_cell(source) for source in sources))
    code = code_of(nbformat.writes(nb))
    cells = code.split(code.source)
    assert list(cells) == list(code.cells)
    for index, source in cells.items():
        assert source == sources[index].replace("\r\n", "\n").replace("\r", "\n")
    result = classify_source(nbformat.writes(nb), "fuzz.ipynb")
    assert result.kind in ("cnn", "ann", "regression", "unsupported") and result.reason


# --- directories --------------------------------------------------------------------------------


def test_directories_include_notebooks_but_not_their_checkpoints(tmp_path):
    nb = notebook(cell(KERAS_IMPORTS), cell(KERAS_CNN))
    write(tmp_path, nb, "train.ipynb")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write(tmp_path / ".ipynb_checkpoints", nb, "train-checkpoint.ipynb")
    (tmp_path / "helper.py").write_text("import keras\nkeras.layers.Dense(1)\n")
    results = classify_paths([tmp_path])
    assert [(Path(r.path).name, r.kind) for r in results] == [("helper.py", "ann"), ("train.ipynb", "cnn")]
