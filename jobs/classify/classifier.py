"""Static classification of a pushed model file: what kind of model it builds, without running it.

The file is parsed with `ast` and every call is resolved through the file's own imports and
assignments, so `tf.keras.layers.Conv2D(...)`, `L.Conv2D(...)` after `from keras import layers as L`
and `Conv2D(...)` after a star import all count, while the same name in a comment, a string, an
unused import or a user-defined `def Conv2D()` does not.

Kinds, by precedence: `cnn` (a convolution layer or a pretrained convolutional base) > `ann`
(dense layers only) > `regression` (a scikit-learn linear model or SVM) > `unsupported`. A
transformers model (`BertModel.from_pretrained`, `AutoModel*`…) is `unsupported` ("transformer
model") unless a convolution is also built.

Pretrained convolutional bases: `keras.applications`, `torchvision.models`, `timm.create_model`
(timm models are vision models), `torch.hub.load` of a convolutional model (resnet*, vgg*,
efficientnet*…, read from the literal arguments) and TF Hub's `hub.KerasLayer` of an image model URL
(imagenet, feature_vector, inception, resnet, mobilenet, efficientnet…).

Notebooks (`.ipynb`) and notebook exports are read through `jobs.classify.notebook.code_of`: the classifier
reads exactly the Python text that the runner and the tweaker read, and names notebook lines as
"cell N, line L" (N counts every cell of the notebook from 1).
"""

from __future__ import annotations

import ast
import errno
import gc
import io
import os
import re
import stat
import tokenize
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from jobs.classify.notebook import NotebookError, decode_notebook, notebook_code, script_code
from jobs.errors import UserError

SKIPPED_DIRS = frozenset({".git", ".venv", "__pycache__", ".ipynb_checkpoints"})
MODEL_SUFFIXES = (".py", ".ipynb")  # what a directory is searched for


@dataclass(frozen=True)
class Classification:
    path: str
    kind: str  # "cnn" | "ann" | "regression" | "unsupported"
    framework: str  # "keras" | "pytorch" | "sklearn" | "none"
    reason: str  # the evidence, with its line

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "framework": self.framework, "reason": self.reason}


# --- the library catalogue: what a fully qualified name means ----------------------------------

CONV, BASE, TRANSFORMER, DENSE, OTHER_NET, LINEAR, OTHER_ESTIMATOR, OTHER_LIBRARY, LOADER = (
    "conv", "base", "transformer", "dense", "other_net", "linear", "other_estimator", "other_library", "loader",
)
MODEL_ROLES = frozenset({CONV, BASE, TRANSFORMER, DENSE, OTHER_NET, LINEAR, OTHER_ESTIMATOR, OTHER_LIBRARY})

_KERAS_CONV = re.compile(
    r"(Separable|Depthwise|Atrous)?(Conv|Convolution|Deconvolution)[123]D(Transpose)?|ConvLSTM[123]D"
)
_KERAS_BASE = re.compile(
    r"VGG\d+|ResNet\w*|MobileNet\w*|EfficientNet\w*|Inception\w*|Xception|DenseNet\d+|NASNet\w*"
    r"|ConvNeXt\w*|RegNet[XY]\w*"
)
_KERAS_OTHER_NET = frozenset({
    "LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "CuDNNLSTM", "CuDNNGRU", "Embedding",
    "MultiHeadAttention", "Attention", "AdditiveAttention", "GroupQueryAttention",
})
_TF_CONV_OPS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv2d_transpose", "conv3d_transpose", "separable_conv2d",
    "depthwise_conv2d", "convolution",
})
_KERAS_LOADERS = frozenset({"load_model", "model_from_json", "model_from_yaml", "model_from_config"})
_TORCH_CONV = re.compile(r"(Lazy)?Conv(Transpose)?[123]d|conv[123]d|conv_transpose[123]d")
_TORCH_DENSE = frozenset({"Linear", "LazyLinear", "Bilinear", "linear", "bilinear"})
_TORCH_OTHER_NET = frozenset({
    "LSTM", "GRU", "RNN", "Transformer", "TransformerEncoder", "TransformerDecoder",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "MultiheadAttention", "Embedding",
    "EmbeddingBag",
})
_TORCHVISION_BASE = re.compile(
    r"(resnet|resnext|wide_resnet|vgg|densenet|mobilenet|efficientnet|regnet|convnext|squeezenet"
    r"|shufflenet|mnasnet|inception|googlenet|alexnet)\w*"
)
# A convolutional network's name anywhere in a hub model name, checkpoint or URL
# (`nvidia_efficientnet_b0`, `microsoft/resnet-50`, `…/imagenet/mobilenet_v2_100_224/feature_vector`).
_CONV_MODEL_NAME = re.compile(
    r"resnet|resnext|vgg|densenet|mobilenet|efficientnet|regnet|convnext|squeezenet|shufflenet|mnasnet"
    r"|inception|googlenet|alexnet|xception|nasnet|yolo(?!s)|unet|ghostnet|darknet|hrnet|mixnet|rexnet"
    r"|res2net|resnest|efficientdet|midas",
    re.I,
)
# … and a transformer's (checked after the convolutional names: `vit_base_resnet50` is a hybrid).
_TRANSFORMER_MODEL_NAME = re.compile(
    r"bert|gpt|roberta|xlnet|xlm|bart|electra|\bt5|llama|vit|deit|swin|dino|beit|whisper|wav2vec"
    r"|transformer",
    re.I,
)
# An image model's TF Hub URL with no network name in it.
_TF_HUB_IMAGE_URL = re.compile(r"imagenet|feature[_-]vector|image[_-]classification|/bit/", re.I)
# A transformers model class (what `from_pretrained` builds a model from, or what is built).
_TRANSFORMERS_MODEL = re.compile(r"(?:TF|Flax)?(?:AutoModel\w*|[A-Z]\w*Model|[A-Z]\w*For[A-Z]\w*)")
_TRANSFORMERS_BUILDERS = frozenset({"from_pretrained", "from_config", "_from_config"})
# scikit-learn sub-packages whose public classes are (non-linear) estimators.
_SKLEARN_OTHER_FAMILIES = frozenset({
    "ensemble", "tree", "neighbors", "cluster", "naive_bayes", "neural_network", "gaussian_process",
    "discriminant_analysis", "kernel_ridge", "isotonic", "mixture", "cross_decomposition", "dummy",
    "semi_supervised",
})
_SKLEARN_NOT_ESTIMATORS = frozenset({"KDTree", "BallTree"})
_SKLEARN_LINEAR_FAMILIES = frozenset({"linear_model", "svm"})
_OTHER_LIBRARIES = frozenset({"xgboost", "lightgbm", "catboost"})
_PICKLERS = frozenset({"joblib", "pickle", "dill", "cloudpickle"})

# Plain names of layers and estimators, to explain look-alikes, unused imports and mentions.
MODEL_NAME = re.compile(
    rf"\b(?:{_KERAS_CONV.pattern}|{_KERAS_BASE.pattern}|{_TORCH_CONV.pattern}|Dense|Linear"
    r"|LinearRegression|LogisticRegression|Ridge|Lasso|ElasticNet|SGDClassifier|SGDRegressor"
    r"|SVC|SVR|LinearSVC|LinearSVR)\b"
)


@dataclass(frozen=True)
class Symbol:
    """What a library name is: its role for classification, framework and display name."""

    role: str
    framework: str  # "" for framework-neutral loaders such as joblib.load
    name: str
    family: str = ""  # scikit-learn sub-package, or the foreign library's name


@lru_cache(maxsize=4096)
def library_symbol(qualname: str) -> Symbol | None:
    """The meaning of a fully qualified name such as `tensorflow.keras.layers.Conv2D`, if any."""
    parts = qualname.split(".")
    root, name = parts[0], parts[-1]
    if len(parts) < 2:
        return None
    if root in ("keras", "tf_keras") or (root == "tensorflow" and "keras" in parts):
        return _keras_symbol(parts, name)
    if root == "tensorflow":
        return _tensorflow_symbol(parts, name)
    if root == "torch":
        return _torch_symbol(parts, name)
    if root == "torchvision" and parts[1] == "models" and _TORCHVISION_BASE.fullmatch(name):
        return Symbol(BASE, "pytorch", name)
    if root == "sklearn":
        return _sklearn_symbol(parts, name)
    if root == "timm" and name == "create_model":  # timm's models are all vision models
        return Symbol(BASE, "pytorch", "timm.create_model")
    if root == "transformers":
        return _transformers_symbol(parts)
    if root == "sentence_transformers" and name == "SentenceTransformer":
        return Symbol(TRANSFORMER, "pytorch", name)
    if root in _PICKLERS and name in ("load", "loads") and len(parts) == 2:
        return Symbol(LOADER, "", f"{root}.{name}")
    if root in _OTHER_LIBRARIES and name[:1].isupper() and name.endswith(("Classifier", "Regressor", "Ranker")):
        return Symbol(OTHER_LIBRARY, "none", name, root)
    return None


def _keras_symbol(parts: list[str], name: str) -> Symbol | None:
    if _KERAS_CONV.fullmatch(name):
        return Symbol(CONV, "keras", name)
    if "applications" in parts and _KERAS_BASE.fullmatch(name):
        return Symbol(BASE, "keras", name)
    if name == "Dense":
        return Symbol(DENSE, "keras", name)
    if name in _KERAS_OTHER_NET:
        return Symbol(OTHER_NET, "keras", name)
    if name in _KERAS_LOADERS:
        return Symbol(LOADER, "keras", name)
    return None


def _tensorflow_symbol(parts: list[str], name: str) -> Symbol | None:
    """TF 1 style ops (`tf.layers.conv2d`, `tf.nn.conv2d`) and `tf.saved_model.load`."""
    if ("layers" in parts or "nn" in parts) and name in _TF_CONV_OPS:
        return Symbol(CONV, "keras", name)
    if "layers" in parts and name == "dense":
        return Symbol(DENSE, "keras", name)
    if "saved_model" in parts and name == "load":
        return Symbol(LOADER, "keras", "saved_model.load")
    return None


def _torch_symbol(parts: list[str], name: str) -> Symbol | None:
    if parts in (["torch", "load"], ["torch", "jit", "load"]):
        return Symbol(LOADER, "pytorch", ".".join(parts))
    if "nn" not in parts:
        return None
    if _TORCH_CONV.fullmatch(name):
        return Symbol(CONV, "pytorch", name)
    if name in _TORCH_DENSE:
        return Symbol(DENSE, "pytorch", name)
    if name in _TORCH_OTHER_NET:
        return Symbol(OTHER_NET, "pytorch", name)
    return None


def _sklearn_symbol(parts: list[str], name: str) -> Symbol | None:
    family = parts[1]
    if not name[:1].isupper() or "kernels" in parts or name in _SKLEARN_NOT_ESTIMATORS:
        return None
    if family in _SKLEARN_LINEAR_FAMILIES:
        return Symbol(LINEAR, "sklearn", name, family)
    if family in _SKLEARN_OTHER_FAMILIES:
        return Symbol(OTHER_ESTIMATOR, "sklearn", name, family)
    return None


def _transformers_symbol(parts: list[str]) -> Symbol | None:
    """`BertModel(config)`, `TFAutoModel.from_pretrained(…)`: a transformer, unless the class is
    one of the convolutional networks transformers also holds (`ResNetModel`, `ConvNextFor…`)."""
    name = parts[-1]
    if name in _TRANSFORMERS_BUILDERS and len(parts) > 2:
        name = parts[-2]
    if not _TRANSFORMERS_MODEL.fullmatch(name):
        return None
    framework = "keras" if name.startswith("TF") else "none" if name.startswith("Flax") else "pytorch"
    if _CONV_MODEL_NAME.search(name):
        return Symbol(BASE, framework, f"{name} (transformers)")
    return Symbol(TRANSFORMER, framework, name)


def _string_argument(node: ast.Call, position: int, keyword: str, strings: dict[str, str]) -> str | None:
    """A call's argument as text when it is a string literal, an f-string (the holes as `{}`) or a
    name bound to a string literal; else None."""
    value: ast.expr | None = node.args[position] if len(node.args) > position else None
    if value is not None and value.__class__ is ast.Starred:
        return None
    for item in node.keywords:
        if item.arg == keyword:
            value = item.value
    return _string_of(value, strings) if value is not None else None


def _string_of(value: ast.expr, strings: dict[str, str]) -> str | None:
    if value.__class__ is ast.Constant:
        return value.value if isinstance(value.value, str) else None
    if value.__class__ is ast.Name:
        return strings.get(value.id)
    if value.__class__ is ast.JoinedStr:
        return "".join(str(part.value) if part.__class__ is ast.Constant else "{}" for part in value.values)
    return None


def _torch_hub_symbol(node: ast.Call, strings: dict[str, str]) -> Symbol | None:
    """`torch.hub.load('pytorch/vision', 'resnet18')`: a base when the model (or, for
    torchvision's own repository, anything but a vision transformer) is convolutional."""
    repo = _string_argument(node, 0, "repo_or_dir", strings) or ""
    model = _string_argument(node, 1, "model", strings) or ""
    if _CONV_MODEL_NAME.search(model):
        return Symbol(BASE, "pytorch", f"{model} (torch.hub)")
    if _TRANSFORMER_MODEL_NAME.search(model) or "transformers" in repo.lower():
        return Symbol(TRANSFORMER, "pytorch", f"{model or repo} (torch.hub)")
    if repo.lower().startswith("pytorch/vision") and model:
        return Symbol(BASE, "pytorch", f"{model} (torch.hub)")
    return None


def _timm_symbol(node: ast.Call, strings: dict[str, str]) -> Symbol:
    model = _string_argument(node, 0, "model_name", strings)
    return Symbol(BASE, "pytorch", f"{model} (timm)" if model else "timm.create_model")


def _tf_hub_symbol(node: ast.Call, strings: dict[str, str]) -> Symbol | None:
    """`hub.KerasLayer(url)`: a base for an image model's URL, a transformer for BERT and kin."""
    url = _string_argument(node, 0, "handle", strings)
    if not url:
        return None
    short = re.sub(r"^\w+://(www\.)?[^/]+/(models/)?|/\d+/?$", "", url)
    short = short if len(short) <= 60 else short[:59] + "…"
    if _CONV_MODEL_NAME.search(url):
        return Symbol(BASE, "keras", f"hub.KerasLayer({short})")
    if _TRANSFORMER_MODEL_NAME.search(url):
        return Symbol(TRANSFORMER, "keras", f"hub.KerasLayer({short})")
    if _TF_HUB_IMAGE_URL.search(url):
        return Symbol(BASE, "keras", f"hub.KerasLayer({short})")
    return None


def _torchvision_get_model_symbol(node: ast.Call, strings: dict[str, str]) -> Symbol | None:
    model = _string_argument(node, 0, "name", strings)
    return Symbol(BASE, "pytorch", model) if model and _TORCHVISION_BASE.fullmatch(model) else None


# Calls whose meaning depends on their (literal) arguments: qualname -> the symbol they build.
ARGUMENT_CALLS = {
    "torch.hub.load": _torch_hub_symbol,
    "timm.create_model": _timm_symbol,
    "timm.models.create_model": _timm_symbol,
    "tensorflow_hub.KerasLayer": _tf_hub_symbol,
    "torchvision.models.get_model": _torchvision_get_model_symbol,
}


def _refined(symbol: Symbol, node: ast.Call, strings: dict[str, str]) -> Symbol:
    """`AutoModelForImageClassification.from_pretrained("microsoft/resnet-50")` is a CNN."""
    if symbol.role == TRANSFORMER and "Auto" in symbol.name:
        checkpoint = _string_argument(node, 0, "pretrained_model_name_or_path", strings)
        if checkpoint and _CONV_MODEL_NAME.search(checkpoint):
            return Symbol(BASE, symbol.framework, f"{symbol.name}({checkpoint!r})")
    return symbol


def framework_of_module(module: str) -> str | None:
    root = module.split(".", 1)[0]
    if root in ("keras", "tensorflow", "tf_keras", "tensorflow_hub"):
        return "keras"
    if root in ("torch", "torchvision", "torchaudio", "timm"):
        return "pytorch"
    if root == "sklearn":
        return "sklearn"
    return None


# --- name resolution ----------------------------------------------------------------------------

USER_DEFINED = "<user-defined>"  # the target of a name bound by `def`/`class` (or an alias of one)


class Binding:
    """What a name is bound to: a library qualname, USER_DEFINED, or None (an unknown value)."""

    __slots__ = ("target", "line", "used")

    def __init__(self, target: str | None, line: int) -> None:
        self.target = target
        self.line = line
        self.used = False


class Scope:
    __slots__ = ("names", "is_class", "global_names")

    def __init__(self, is_class: bool = False) -> None:
        self.names: dict[str, Binding] = {}
        self.is_class = is_class
        self.global_names: set[str] = set()


Chain = tuple[Scope, ...]


@dataclass(frozen=True)
class Evidence:
    symbol: Symbol
    line: int
    column: int
    how: str  # "call" or "passed"


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
Comprehension = ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
_TYPE_CHECKS = frozenset({"isinstance", "issubclass"})


class Analyzer:
    """Walks a module like the interpreter would bind names, recording library calls.

    Module and class bodies are walked in order; function bodies are walked after the code that
    defines them (as they run later), with class scopes invisible from methods. Expressions are
    walked with an explicit stack so deeply nested generated code cannot exhaust recursion.
    """

    def __init__(self) -> None:
        self.module = Scope()
        self.star_modules: list[str] = []
        self.import_frameworks: list[str] = []
        self.imports: list[tuple[str, Binding]] = []
        self.evidence: list[Evidence] = []
        self.lookalikes: list[tuple[str, int, str]] = []  # (name, line, what it really is)
        self.strings: dict[str, str] = {}  # names last bound to a string literal (model names, URLs)
        self._deferred: deque[tuple[list[ast.stmt], Chain]] = deque()
        self._conditional = 0

    def run(self, tree: ast.Module) -> Analyzer:
        self._block(tree.body, (self.module,))
        while self._deferred:
            body, chain = self._deferred.popleft()
            self._block(body, chain)
        return self

    # names

    def _lookup(self, name: str, chain: Chain) -> str | None:
        innermost = chain[-1]
        for scope in reversed(chain):
            if scope.is_class and scope is not innermost:
                continue
            binding = scope.names.get(name)
            if binding is not None:
                binding.used = True
                return binding.target
        for module in reversed(self.star_modules):
            if library_symbol(f"{module}.{name}") is not None:
                return f"{module}.{name}"
        return None

    def _resolve(self, node: ast.expr, chain: Chain) -> str | None:
        """The qualified name an expression such as `tf.keras.layers.Conv2D` refers to."""
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        target = self._lookup(node.id, chain)
        if target is None or (attrs and target == USER_DEFINED):
            return None
        return ".".join([target, *reversed(attrs)]) if attrs else target

    def _bind(self, name: str, target: str | None, line: int, chain: Chain) -> Binding:
        scope = chain[-1]
        if name in scope.global_names:
            scope = chain[0]
        existing = scope.names.get(name)
        # `except ImportError: tf = None` and the like must not hide the library a name usually is.
        if (
            self._conditional
            and existing is not None
            and existing.target not in (None, USER_DEFINED)
            and (target is None or target == USER_DEFINED)
        ):
            return existing
        binding = scope.names[name] = Binding(target, line)
        return binding

    def _bind_target(self, target: ast.expr, value: str | None, chain: Chain) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, value, target.lineno, chain)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._bind_target(element, None, chain)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, None, chain)
        else:  # attribute or subscript targets bind no name but may contain calls
            self._expr(target, chain)

    # statements

    def _block(self, body: list[ast.stmt], chain: Chain) -> None:
        for statement in body:
            self._stmt(statement, chain)

    def _stmt(self, node: ast.stmt, chain: Chain) -> None:
        if node.__class__ is ast.Expr:
            self._expr(node.value, chain)
        elif node.__class__ is ast.Assign:
            self._expr(node.value, chain)
            value = self._alias_value(node.value, chain)
            text = _string_of(node.value, self.strings)
            for target in node.targets:
                self._bind_target(target, value, chain)
                if target.__class__ is ast.Name:
                    if text is None:
                        self.strings.pop(target.id, None)
                    else:
                        self.strings[target.id] = text
        elif node.__class__ is ast.Import:
            for alias in node.names:
                if alias.asname:
                    self._import(alias.asname, alias.name, node.lineno, chain)
                else:
                    root = alias.name.split(".", 1)[0]
                    self._import(root, root, node.lineno, chain, module=alias.name)
        elif node.__class__ is ast.ImportFrom:
            self._import_from(node, chain)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(node, chain)
        elif node.__class__ is ast.ClassDef:
            self._class(node, chain)
        elif node.__class__ is ast.AnnAssign:
            self._expr(node.annotation, chain)
            if node.value is not None:
                self._expr(node.value, chain)
                self._bind_target(node.target, self._alias_value(node.value, chain), chain)
        elif node.__class__ is ast.AugAssign:
            self._expr(node.value, chain)
            self._bind_target(node.target, None, chain)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._expr(node.iter, chain)
            self._bind_target(node.target, None, chain)
            self._conditional_block(node.body + node.orelse, chain)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self._expr(item.context_expr, chain)
                if item.optional_vars is not None:
                    self._bind_target(item.optional_vars, None, chain)
            self._block(node.body, chain)
        elif isinstance(node, (ast.If, ast.While)):
            self._expr(node.test, chain)
            self._conditional_block(node.body + node.orelse, chain)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            self._block(node.body, chain)
            for handler in node.handlers:
                if handler.type is not None:
                    self._expr(handler.type, chain)
                if handler.name:
                    self._bind(handler.name, None, handler.lineno, chain)
                self._conditional_block(handler.body, chain)
            self._conditional_block(node.orelse, chain)
            self._block(node.finalbody, chain)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            chain[-1].global_names.update(node.names if node.__class__ is ast.Global else ())
        elif node.__class__ is ast.Match:
            self._expr(node.subject, chain)
            for case in node.cases:
                for child in ast.walk(case.pattern):
                    if isinstance(child, ast.expr):
                        self._expr(child, chain)
                    captured = getattr(child, "name", None) or getattr(child, "rest", None)
                    if captured:
                        self._bind(captured, None, case.pattern.lineno, chain)
                if case.guard is not None:
                    self._expr(case.guard, chain)
                self._conditional_block(case.body, chain)
        else:  # return, raise, assert, delete, ...: expressions only
            for part in _children(node):
                if part is not None:
                    self._expr(part, chain)

    def _conditional_block(self, body: list[ast.stmt], chain: Chain) -> None:
        self._conditional += 1
        try:
            self._block(body, chain)
        finally:
            self._conditional -= 1

    def _import(self, local: str, target: str, line: int, chain: Chain, module: str | None = None) -> None:
        self.imports.append((local, self._bind(local, target, line, chain)))
        framework = framework_of_module(module or target)
        if framework:
            self.import_frameworks.append(framework)

    def _import_from(self, node: ast.ImportFrom, chain: Chain) -> None:
        if node.level or not node.module:  # a relative import: the user's own code
            for alias in node.names:
                if alias.name != "*":
                    self._bind(alias.asname or alias.name, USER_DEFINED, node.lineno, chain)
            return
        for alias in node.names:
            if alias.name == "*":
                self.star_modules.append(node.module)
                framework = framework_of_module(node.module)
                if framework:
                    self.import_frameworks.append(framework)
            else:
                self._import(alias.asname or alias.name, f"{node.module}.{alias.name}", node.lineno, chain)

    def _alias_value(self, value: ast.expr, chain: Chain) -> str | None:
        """`L = tf.keras.layers` makes `L` an alias; any other value is unknown."""
        if isinstance(value, (ast.Name, ast.Attribute)):
            return self._resolve(value, chain)
        return None

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, chain: Chain) -> None:
        for decorator in node.decorator_list:
            self._expr(decorator, chain)
        local = self._arguments(node.args, chain)
        if node.returns is not None:
            self._expr(node.returns, chain)
        self._define(node.name, node.lineno, chain)
        self._deferred.append((node.body, local))

    def _arguments(self, args: ast.arguments, chain: Chain) -> Chain:
        """Evaluate defaults and annotations here; return the new function's scope chain."""
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self._expr(default, chain)
        scope = Scope()
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        for arg in every:
            if arg is not None:
                if arg.annotation is not None:
                    self._expr(arg.annotation, chain)
                scope.names[arg.arg] = Binding(None, getattr(arg, "lineno", 0))
        return tuple(s for s in chain if not s.is_class) + (scope,)

    def _class(self, node: ast.ClassDef, chain: Chain) -> None:
        for expression in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self._expr(expression, chain)
        self._block(node.body, chain + (Scope(is_class=True),))
        self._define(node.name, node.lineno, chain)

    def _define(self, name: str, line: int, chain: Chain) -> None:
        """A `def` or `class`: the name is the user's own, even when it looks like a layer."""
        self._bind(name, USER_DEFINED, line, chain)
        if MODEL_NAME.fullmatch(name):
            self.lookalikes.append((name, line, "user-defined"))

    # expressions

    def _expr(self, root: ast.AST, chain: Chain) -> None:
        """Walk an expression (or a part of one, such as a keyword argument)."""
        stack: list[ast.AST | None] = [root]
        lookup = self._lookup
        while stack:
            node = stack.pop()
            if node.__class__ is ast.Name:
                if node.ctx.__class__ is ast.Load:
                    lookup(node.id, chain)
            elif node.__class__ is ast.Constant or node is None:
                continue
            elif node.__class__ is ast.Attribute:
                stack.append(node.value)
            elif node.__class__ is ast.Call:
                stack.extend(self._call(node, chain))
            elif node.__class__ is ast.Lambda:
                self._expr(node.body, self._arguments(node.args, chain))
            elif isinstance(node, _COMPREHENSIONS):
                for child, inner in self._comprehension(node, chain):
                    self._expr(child, inner)
            elif node.__class__ is ast.NamedExpr:
                stack.append(node.value)
                self._bind(node.target.id, self._alias_value(node.value, chain), node.lineno, chain)
            else:
                stack.extend(_children(node))

    def _comprehension(self, node: Comprehension, chain: Chain) -> Iterator[tuple[ast.AST, Chain]]:
        inner = chain + (Scope(),)
        for number, generator in enumerate(node.generators):
            yield generator.iter, (chain if number == 0 else inner)
            self._bind_target(generator.target, None, inner)
            for condition in generator.ifs:
                yield condition, inner
        for part in ("elt", "key", "value"):
            child = getattr(node, part, None)
            if child is not None:
                yield child, inner

    def _call(self, node: ast.Call, chain: Chain) -> list[ast.AST]:
        """Record what a call builds; returns the sub-expressions still to walk."""
        func = node.func
        while func.__class__ is ast.Attribute:
            func = func.value
        to_walk: list[ast.AST] = [*node.args, *node.keywords]
        if func.__class__ is not ast.Name:  # e.g. `Conv2D(8, 3)(x)`: the inner call is walked
            to_walk.append(func)
            return to_walk
        target = self._resolve(node.func, chain)
        symbol = None
        if target and target != USER_DEFINED:
            by_arguments = ARGUMENT_CALLS.get(target)
            if by_arguments is not None:
                symbol = by_arguments(node, self.strings)
            elif (symbol := library_symbol(target)) is not None:
                symbol = _refined(symbol, node, self.strings)
        if symbol is not None:
            self.evidence.append(Evidence(symbol, node.lineno, node.col_offset, "call"))
        elif target is not None:
            name = target.rsplit(".", 1)[-1] if target != USER_DEFINED else getattr(node.func, "id", "")
            if MODEL_NAME.fullmatch(name):
                why = "user-defined" if target == USER_DEFINED else target
                self.lookalikes.append((name, node.lineno, why))
        if target is None and func.id in _TYPE_CHECKS:
            return to_walk  # isinstance(m, nn.Conv2d) inspects a model, it builds nothing
        for argument in [*node.args, *(k.value for k in node.keywords)]:
            if argument.__class__ is ast.Starred:
                argument = argument.value
            elements = argument.elts if argument.__class__ in (ast.List, ast.Tuple) else (argument,)
            for element in elements:
                if element.__class__ in (ast.Attribute, ast.Name):
                    passed = self._resolve(element, chain)
                    symbol = library_symbol(passed) if passed and passed != USER_DEFINED else None
                    if symbol is not None and symbol.role in MODEL_ROLES:
                        self.evidence.append(Evidence(symbol, element.lineno, element.col_offset, "passed"))
        return to_walk


# Fields that never hold a sub-expression (operators and contexts hold no names or calls).
_NOT_CHILD_FIELDS = frozenset({
    "ctx", "id", "attr", "arg", "conversion", "kind", "type_comment", "op", "ops", "name", "names",
    "level", "module",
})


@cache
def _child_fields(kind: type) -> tuple[str, ...]:
    return tuple(field for field in getattr(kind, "_fields", ()) if field not in _NOT_CHILD_FIELDS)


def _children(node: ast.AST) -> list[ast.AST | None]:
    """The child nodes of an expression (or simple statement), cheaper than ast.iter_child_nodes."""
    children: list[ast.AST | None] = []
    kind: type = node.__class__  # as `type`: mypy wrongly finds type[AST] unhashable (AST declares __hash__)
    for field in _child_fields(kind):
        value = getattr(node, field)
        if value.__class__ is list:
            children.extend(value)
        elif value is not None:
            children.append(value)
    return children


# --- decoding and parsing -----------------------------------------------------------------------

_CODING_LINE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.M)
Where = Callable[[int], str]  # a source line as the reason names it ("line 7", "cell 4, line 2")


class NotPython(Exception):
    """The text cannot be analysed; the message is the classification's reason."""


def decode_source(data: bytes) -> str:
    """Bytes to text the way the interpreter would (PEP 263 coding line, BOM), or NotPython."""
    if b"\x00" in data:
        raise NotPython("binary content")
    declared = _declared_encoding(data)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if declared is not None and "unknown encoding" in str(exc):
            raise NotPython(f"unknown source encoding declared ({declared})") from None
        encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        if _looks_binary(data):
            raise NotPython("binary content") from None
        how = "declared encoding" if declared is not None else "default encoding"
        raise NotPython(f"not valid {encoding.removesuffix('-sig')} source ({how})") from None


def _declared_encoding(data: bytes) -> str | None:
    first_two_lines = b"\n".join(data.split(b"\n", 2)[:2])
    match = _CODING_LINE.search(first_two_lines)
    return match.group(1).decode("ascii", "replace") if match else None


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    control = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f\v") + sample.count(127)
    high = sum(1 for byte in sample if byte >= 128)
    return control > len(sample) * 0.05 or high > len(sample) * 0.3


def parse_source(text: str, where: Where = "line {}".format) -> ast.Module:
    """Parse Python 3 source. IPython lines (`!pip …`, `%matplotlib …`) are not read here: they
    are commented out by `jobs.classify.notebook`, whose text the tweaker reads too."""
    if "\x00" in text:
        raise NotPython("binary content")
    try:
        return _parse(text)
    except SyntaxError as error:
        raise NotPython(_syntax_reason(error, where)) from None


def _parse(text: str) -> ast.Module:
    try:
        return ast.parse(text)
    except (RecursionError, MemoryError):
        raise NotPython("source too deeply nested to analyse") from None
    except ValueError:
        raise NotPython("binary content") from None


def _syntax_reason(error: SyntaxError, where: Where = "line {}".format) -> str:
    return f"syntax error at {where(error.lineno)}" if error.lineno else "syntax error"


# --- the verdict --------------------------------------------------------------------------------


def classify_source(source: str | bytes, path: str = "<string>") -> Classification:
    """Classify Python source text (bytes are decoded as the interpreter would), or a notebook's
    JSON when `path` ends in `.ipynb`."""
    notebook = str(path).lower().endswith(".ipynb")
    if not notebook and not source.strip():
        return Classification(path, "unsupported", "none", "empty file")
    where: Where
    tree: ast.Module | None
    try:
        if notebook:
            code = notebook_code(decode_notebook(source) if isinstance(source, bytes) else source)
            if not code.cells:
                return Classification(path, "unsupported", "none", "no code cells")
            text, where, tree = code.source, code.where, None
        else:
            text = decode_source(source) if isinstance(source, bytes) else source
            text, where, tree = _script(text)
        if tree is None:
            tree = parse_source(text, where)
    except (NotPython, NotebookError) as exc:
        return Classification(path, "unsupported", "none", str(exc))
    try:
        analyzer = Analyzer().run(tree)
    except RecursionError:  # e.g. a thousand nested lambdas: Python parses them, we recurse
        return Classification(path, "unsupported", "none", "source too deeply nested to analyse")
    kind, framework, reason = _verdict(analyzer, tree, text, where)
    return Classification(path, kind, framework, reason)


def _script(text: str) -> tuple[str, Where, ast.Module | None]:
    """The text `jobs.classify.notebook.script_code` makes of a script, how to name its lines, and its
    tree when already parsed. A script that parses and holds no `get_ipython()` is read as it is
    (as script_code would), parsed once."""
    if "\x00" in text:
        raise NotPython("binary content")
    if "get_ipython" not in text:
        try:
            return text, "line {}".format, _parse(text)
        except SyntaxError:
            pass
    code = script_code(text)
    return code.source, code.where, None


def _verdict(analyzer: Analyzer, tree: ast.Module, text: str, where: Where) -> tuple[str, str, str]:
    by_role: dict[str, Evidence] = {}
    for evidence in sorted(analyzer.evidence, key=lambda e: (e.line, e.column)):
        by_role.setdefault(evidence.symbol.role, evidence)
    cnn = min((by_role[r] for r in (CONV, BASE) if r in by_role), key=lambda e: (e.line, e.column), default=None)
    if cnn is not None:
        symbol = cnn.symbol
        how = "base" if symbol.role == BASE else cnn.how
        return "cnn", symbol.framework, f"{symbol.name} {how} at {where(cnn.line)}"
    if TRANSFORMER in by_role:
        first = by_role[TRANSFORMER]
        return "unsupported", first.symbol.framework, f"transformer model ({first.symbol.name} at {where(first.line)})"
    if OTHER_NET in by_role:
        first = by_role[OTHER_NET]
        return (
            "unsupported", first.symbol.framework,
            f"{first.symbol.name} layer at {where(first.line)}: not a dense or convolutional network",
        )
    if DENSE in by_role:
        first = by_role[DENSE]
        return "ann", first.symbol.framework, f"{first.symbol.name} layers only (first at {where(first.line)})"
    if LINEAR in by_role:
        symbol, line = by_role[LINEAR].symbol, by_role[LINEAR].line
        return "regression", "sklearn", f"{symbol.name} (sklearn.{symbol.family}) at {where(line)}"
    if OTHER_ESTIMATOR in by_role:
        symbol, line = by_role[OTHER_ESTIMATOR].symbol, by_role[OTHER_ESTIMATOR].line
        return (
            "unsupported", "sklearn",
            f"scikit-learn {symbol.name} ({symbol.family}) at {where(line)} is not a linear model",
        )
    framework = _framework_in_use(analyzer)
    if OTHER_LIBRARY in by_role:
        symbol, line = by_role[OTHER_LIBRARY].symbol, by_role[OTHER_LIBRARY].line
        return "unsupported", "none", f"{symbol.name} ({symbol.family}) at {where(line)} is not a supported model"
    if LOADER in by_role:
        symbol, line = by_role[LOADER].symbol, by_role[LOADER].line
        return (
            "unsupported", symbol.framework or framework,
            f"model only loaded from disk ({symbol.name} at {where(line)})",
        )
    return "unsupported", framework, _no_model_reason(analyzer, tree, text, where)


def _framework_in_use(analyzer: Analyzer) -> str:
    """The one ML library the file imports, else "none"."""
    frameworks = set(analyzer.import_frameworks)
    return frameworks.pop() if len(frameworks) == 1 else "none"


def _no_model_reason(analyzer: Analyzer, tree: ast.Module, text: str, where: Where) -> str:
    """Why nothing counts, naming the misleading evidence when there is some."""
    if analyzer.lookalikes:
        name, line, what = min(analyzer.lookalikes, key=lambda item: item[1])
        return f"no model is built ({name} at {where(line)} is {what}, not a library layer)"
    unused = sorted(
        (binding.line, local) for local, binding in analyzer.imports
        if not binding.used and binding.target and _is_model_symbol(binding.target)
    )
    if unused:
        line, local = unused[0]
        return f"layer names only in unused imports ({local} at {where(line)})"
    referenced = sorted(
        (node.lineno, name) for node, name in _identifiers(tree) if MODEL_NAME.fullmatch(name)
    )
    if referenced:
        line, name = referenced[0]
        return f"no model is built ({name} at {where(line)} is not a call of a library layer)"
    mention = MODEL_NAME.search(text)
    if mention:
        line = text.count("\n", 0, mention.start()) + 1
        return f"layer names only in comments or strings ({mention.group()} at {where(line)})"
    return "no model is built"


def _identifiers(tree: ast.Module) -> Iterator[tuple[ast.expr | ast.alias, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node, node.id
        elif isinstance(node, ast.Attribute):
            yield node, node.attr
        elif isinstance(node, ast.alias):
            yield node, (node.asname or node.name).rsplit(".", 1)[-1]


def _is_model_symbol(qualname: str) -> bool:
    symbol = library_symbol(qualname)
    return symbol is not None and symbol.role in MODEL_ROLES


# --- files and directories ----------------------------------------------------------------------


MAX_FILE_BYTES = 32 * 2**20  # a model script is far smaller; more is data, not source
MAX_NOTEBOOK_BYTES = 128 * 2**20  # a notebook also holds its outputs (plots, images)
_SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                  stat.S_IFSOCK: "a socket"}


class Skipped(Exception):
    """The file is not read (not a regular file, too large); the message says why."""


def read_file(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes (at most `limit`), or Skipped; never blocks on a FIFO or device."""
    _check_regular(os.stat(path).st_mode)  # a FIFO, device or socket is not even opened …
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        _check_regular(os.fstat(fd).st_mode)  # … nor one put there since
        data = handle.read(limit + 1)
    if len(data) > limit:
        what = "notebook" if str(path).lower().endswith(".ipynb") else "model script"
        raise Skipped(f"file too large to be a {what} (over {limit // 2**20} MiB)")
    return data


def _check_regular(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(mode):
        raise Skipped(f"not a regular file ({_SPECIAL_FILES.get(stat.S_IFMT(mode), 'a special file')})")


def classify_file(path: str | Path) -> Classification:
    """Classify one regular file (a notebook when it ends in `.ipynb`), read whole up to
    MAX_FILE_BYTES (MAX_NOTEBOOK_BYTES); an unreadable, special or oversized file is `unsupported`
    with the reason."""
    notebook = str(path).lower().endswith(".ipynb")
    try:
        data = read_file(path, MAX_NOTEBOOK_BYTES if notebook else MAX_FILE_BYTES)
    except Skipped as exc:
        return Classification(str(path), "unsupported", "none", str(exc))
    except OSError as exc:
        return Classification(str(path), "unsupported", "none", f"cannot read file: {exc.strerror or exc}")
    return classify_source(data, str(path))


def classify_paths(paths: Iterable[str | Path]) -> list[Classification]:
    """Classify files, and every *.py and *.ipynb below directories; sorted by path."""
    paths = list(paths)
    for path in paths:
        if not os.path.lexists(path):
            raise UserError(f"no such file or directory: {path}")
    files: dict[str, None] = {}
    for path in paths:
        if os.path.isdir(path):
            files.update(dict.fromkeys(python_files_below(path)))
        else:
            files[str(path)] = None
    with _gc_paused():
        return [classify_file(file) for file in sorted(files)]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Syntax trees are acyclic and freed by reference counting; the cyclic collector only
    rescans them (about 15% of the time of a large batch)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def python_files_below(directory: str | Path) -> Iterator[str]:
    """Every *.py and *.ipynb (MODEL_SUFFIXES) below a directory, following symlinks but visiting
    each real directory once."""
    seen: set[tuple[int, int]] = set()
    for root, dirnames, filenames in os.walk(directory, followlinks=True):
        try:
            info = os.stat(root)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:  # a symlink loop or a second link to the same dir
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirnames[:] = sorted(name for name in dirnames if name not in SKIPPED_DIRS)
        for name in sorted(filenames):
            if name.endswith(MODEL_SUFFIXES):
                yield os.path.join(root, name)
