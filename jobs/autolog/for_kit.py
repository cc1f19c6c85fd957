"""A script that calls the kit's training helpers keeps its own curve and checkpoints: the
framework patches then record, but add no callback and write no curve of their own."""

from __future__ import annotations

import functools
from types import ModuleType

from jobs.autolog import Capture

KIT_TRAINING_HELPERS = ("callbacks", "torch_resume", "torch_epoch_end")


def patch(capture: Capture, kit: ModuleType) -> None:
    for name in KIT_TRAINING_HELPERS:
        original = getattr(kit, name)

        @functools.wraps(original)
        def marked(*args, __original=original, **kwargs):
            if capture.script_frame() is not None:
                capture.kit_used = True
            return __original(*args, **kwargs)

        setattr(kit, name, marked)
