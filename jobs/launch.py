"""The launcher every attempt runs: `python -m jobs.launch model.py [args…]`.

It installs the capture (`jobs.autolog`) and then runs the file as `__main__`, as `python
model.py` would: the same `__file__`, `sys.argv`, `sys.path[0]`, tracebacks (without the
launcher's own frame) and exit codes. `PUSHTUNE_AUTOLOG=0` (`--no-autolog`) runs the file with
no capture at all. Standard library only: this runs inside the attempt, in every image.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
import types
from pathlib import Path

from jobs.autolog import Capture, __file__ as autolog_file, install, warn

OFF_WORDS = {"0", "false", "no", "off"}


def autolog_enabled() -> bool:
    return os.environ.get("PUSHTUNE_AUTOLOG", "1").strip().lower() not in OFF_WORDS


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m jobs.launch SCRIPT [ARG…]", file=sys.stderr)
        return 2
    script = Path(os.path.abspath(argv[0]))  # as Python 3.9+ gives a script's __file__
    try:
        source = script.read_bytes()
    except OSError as exc:
        print(f"python: can't open file {str(script)!r}: [Errno {exc.errno}] {exc.strerror}", file=sys.stderr)
        return 2
    sys.argv = list(argv)
    sys.path[0] = str(script.resolve().parent)

    capture = None
    if autolog_enabled():
        capture = Capture(Path(os.environ.get("PUSHTUNE_OUTPUT") or "output"), script)
        try:
            install(capture)
            capture.watch_output()
        except Exception as exc:  # the script runs without capture rather than not at all
            warn(f"off for this attempt: {type(exc).__name__}: {exc}")
            capture = None

    code = compile(source, str(script), "exec", dont_inherit=True)
    main_module = types.ModuleType("__main__")
    main_module.__file__ = str(script)
    main_module.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = main_module
    status = _run(code, main_module.__dict__)
    if capture is not None:
        capture.finish(succeeded=status == 0)
    return status


def _run(code: types.CodeType, namespace: dict) -> int:
    """Execute the script; its exit status as `python script.py` would end with it."""
    try:
        exec(code, namespace)
    except SystemExit as exc:
        return _exit_status(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # end as Python does: by SIGINT, exit 130
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:
        _hide_pushtune_frames(exc, set())
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


PUSHTUNE_FILES = (os.path.abspath(__file__), os.path.dirname(os.path.abspath(autolog_file)) + os.sep)


def _hide_pushtune_frames(exc: BaseException | None, seen: set[int]) -> None:
    """The traceback as the script run alone would print it: without the launcher's frame and
    the capture's patched calls (a crash inside `fit` shows the script's line, then Keras')."""
    if exc is None or id(exc) in seen:
        return
    seen.add(id(exc))
    kept = None
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    for tb in reversed(frames):
        if not tb.tb_frame.f_code.co_filename.startswith(PUSHTUNE_FILES):
            kept = types.TracebackType(kept, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    exc.__traceback__ = kept
    _hide_pushtune_frames(exc.__cause__, seen)
    _hide_pushtune_frames(exc.__context__, seen)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    raise SystemExit(status)
