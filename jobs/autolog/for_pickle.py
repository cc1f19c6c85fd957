"""Models a script saves with `pickle.dump` or `joblib.dump` under a name of its own."""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

from jobs.autolog import Capture


def is_model(obj: Any) -> bool:
    """A trained model (anything with `predict`), not a scaler, an encoder or a dict of data."""
    return callable(getattr(obj, "predict", None))


def patch(capture: Capture, module: ModuleType) -> None:
    original = module.dump
    call = f"{module.__name__}.dump()"

    @functools.wraps(original)
    def dump(obj, file, *args, **kwargs):
        result = original(obj, file, *args, **kwargs)
        frame = capture.script_frame()
        if frame is not None:
            path = file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", None)
            if isinstance(path, (str, os.PathLike)):
                capture.saved(path, call, model=is_model(obj), line=frame.f_lineno)
        return result

    module.dump = dump  # type: ignore[attr-defined]
