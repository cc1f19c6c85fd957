"""Plain PyTorch training loops, seen without a changed line: the curve, the trained module and
the script's own saves.

- The curve: every one-element tensor passed to `backward()` is a loss, every optimizer step a
  step. An epoch is a pass over a `DataLoader` during which an optimizer stepped (a pass without
  a step, validation or test, is none); a loop without a DataLoader batch between two steps of
  its optimizer (full batch) makes each step an epoch. history.json and progress.json are
  written in the kit's format, unless the script calls the kit, which writes its own.
- The model: the module, called by the script, holding the parameters of the first optimizer
  that stepped (a weak reference: pushtune keeps no model alive), saved as TorchScript when the
  script saves no model of its own.
- Saves: `torch.save` / `torch.jit.save` called by the script.

Not captured: a resume by a loop that keeps its own counters (its curve starts again at epoch
1), a loop that slices its own mini-batches without a DataLoader (one epoch per step).
"""

from __future__ import annotations

import functools
import os
import time
import warnings
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

from jobs import kit
from jobs.autolog import Capture, Trained, warn

WRITE_SHARE = 0.02  # the curve's writes take at most this share of the training time
MAX_CALLED = 64  # modules the script calls itself, remembered until the trained one is known
EXAMPLE_ROWS = 8  # of the trained module's first input, kept to trace it

_failed: set[str] = set()


def _safely(where: str, observe, *args) -> None:
    """Run a capture step; a failure is one line on stderr (once per `where`), never the script's."""
    try:
        observe(*args)
    except Exception as exc:
        if where not in _failed:
            _failed.add(where)
            warn(f"torch {where}: {type(exc).__name__}: {exc}")


def patch(capture: Capture, torch: ModuleType) -> None:
    loop = _TrainingLoop(capture, torch)
    _patch_backward(torch, loop)
    _patch_data_loader(torch, loop)
    # torch: the script's framework, imported only when the script uses it
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(lambda optimizer, args, kwargs: _safely("step", loop.stepped, optimizer))
    capture.at_finish(lambda: _safely("curve", loop.write_unwritten))
    for owner, name in ((torch, "save"), (torch.jit, "save")):
        _patch_save(capture, torch, owner, name)


def _patch_backward(torch: ModuleType, loop: _TrainingLoop) -> None:
    original = torch.Tensor.backward

    @functools.wraps(original)
    def backward(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        _safely("backward", loop.backward_done, self)
        return result

    torch.Tensor.backward = backward


def _patch_data_loader(torch: ModuleType, loop: _TrainingLoop) -> None:
    # torch: the script's framework, imported only when the script uses it
    from torch.utils.data import dataloader

    original_iter, original_next = dataloader.DataLoader.__iter__, dataloader._BaseDataLoaderIter.__next__

    @functools.wraps(original_iter)
    def iterate(self):
        iterator = original_iter(self)
        _safely("DataLoader", loop.pass_started, self, iterator)
        return iterator

    @functools.wraps(original_next)
    def next_batch(self):
        try:
            batch = original_next(self)
        except StopIteration:
            _safely("DataLoader", loop.pass_ended, self)
            raise
        loop.batches += 1
        return batch

    dataloader.DataLoader.__iter__ = iterate  # type: ignore[method-assign]
    dataloader._BaseDataLoaderIter.__next__ = next_batch  # type: ignore[method-assign]


def _patch_save(capture: Capture, torch: ModuleType, owner: ModuleType, name: str) -> None:
    original, call = getattr(owner, name), f"{owner.__name__}.{name}()"

    def record(obj, file, line: int) -> None:  # a state_dict is no model: it needs its class to serve
        path = file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", None)
        if isinstance(path, (str, os.PathLike)):
            capture.saved(path, call, model=isinstance(obj, torch.nn.Module), line=line)

    @functools.wraps(original)
    def save(obj, f, *args, **kwargs):
        result = original(obj, f, *args, **kwargs)
        frame = capture.script_frame()
        if frame is not None:
            _safely("save", record, obj, f, frame.f_lineno)
        return result

    setattr(owner, name, save)


class _TrainingLoop:
    """What the script's loop did so far, as backward(), optimizer steps and DataLoader passes
    show it."""

    def __init__(self, capture: Capture, torch: ModuleType):
        self.capture, self.torch = capture, torch
        self.finder: _ModelFinder | None = _ModelFinder(torch)
        self.steps = self.batches = 0  # in all
        self.epoch_steps, self.loss_sum, self.loss_count = 0, 0.0, 0  # of the epoch under way
        self.lr: float | None = None
        self.last_batch: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> batches then
        self.pass_start: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # DataLoader -> steps then
        self.loader_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # its iterator -> DataLoader
        self.history: list[dict] = []
        self.steps_per_epoch: int | None = None
        self.batch_size: int | None = None  # of the DataLoader an epoch went over
        self.unwritten, self.written_at, self.write_cost = False, 0.0, 0.0

    def backward_done(self, loss) -> None:
        if loss.numel() == 1:  # .item() after backward: one sync, no graph
            self.loss_sum, self.loss_count = self.loss_sum + loss.item(), self.loss_count + 1

    def stepped(self, optimizer) -> None:
        self.steps, self.epoch_steps = self.steps + 1, self.epoch_steps + 1
        lr = optimizer.param_groups[0].get("lr")
        self.lr = kit._finite_or_none(lr) if lr is not None else None
        batches_then = self.last_batch.get(optimizer)
        self.last_batch[optimizer] = self.batches
        if batches_then is None:
            self.first_step(optimizer)
        if self.batches == (batches_then or 0):  # no DataLoader batch since its last step: full batch
            self.end_epoch()

    def first_step(self, optimizer) -> None:
        if len(self.last_batch) == 1:
            self.capture.framework("pytorch")
            self.capture.training("pytorch", optimizer=type(optimizer).__name__, learning_rate=self.lr)
        found = self.finder.trained_by(optimizer) if self.finder else None
        if found is not None:
            self.finder = None
            model, example = found
            # held, not weakly referenced: a model built inside the script's main() is gone by its end
            trained = Trained("pytorch", f"the module the optimizer trained ({type(model).__name__})",
                              self.capture.script_line(),
                              lambda output: _save_torchscript(self.torch, model, example, trained, output),
                              model=model, sample=_rows(example))
            self.capture.trained_model(trained)

    def pass_started(self, loader, iterator) -> None:
        start = self.pass_start.get(loader)
        if start is not None and self.steps > start:  # its last pass broke off before the end
            self.end_epoch()
        self.pass_start[loader] = self.steps
        self.loader_of[iterator] = loader

    def pass_ended(self, iterator) -> None:
        loader = self.loader_of.get(iterator)
        start = self.pass_start.pop(loader, None) if loader is not None else None
        if loader is not None and start is not None and self.steps > start:
            self.batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None)
            self.end_epoch()

    def end_epoch(self) -> None:
        if not self.epoch_steps:
            return
        loss = self.loss_sum / self.loss_count if self.loss_count else None
        steps, self.epoch_steps, self.loss_sum, self.loss_count = self.epoch_steps, 0, 0.0, 0
        if self.capture.kit_used:  # the kit keeps the script's epochs and curve itself
            return
        self.steps_per_epoch = steps
        self.history.append({"epoch": len(self.history) + 1,
                             "loss": kit._finite_or_none(loss) if loss is not None else None, "lr": self.lr})
        self.unwritten = True
        if time.perf_counter() - self.written_at >= self.write_cost / WRITE_SHARE:
            self.write_unwritten()

    def write_unwritten(self) -> None:
        if not self.unwritten:
            return
        started = time.perf_counter()
        self.unwritten = False
        self.capture.training("pytorch", steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
                              epochs_seen=len(self.history))
        out = self.capture.output
        out.mkdir(parents=True, exist_ok=True)
        last = {name: value for name, value in self.history[-1].items() if name != "epoch"}
        kit._write_json_atomic(out / kit.HISTORY_FILE,
                               {"epochs": None, "steps": self.steps_per_epoch, "history": self.history})
        kit._write_json_atomic(out / kit.PROGRESS_FILE, {"epoch": len(self.history), "epochs": None, "logs": last})
        self.written_at = time.perf_counter()
        self.write_cost = self.written_at - started


class _ModelFinder:
    """The modules the script calls itself (not from another module's forward), each with its
    first input, until an optimizer steps: then the one holding most of its parameters."""

    def __init__(self, torch: ModuleType):
        self.torch = torch
        self.called: dict[int, tuple[weakref.ref, Any]] = {}  # id -> (module, example input)
        self.depth = 0  # forward calls under way
        # torch: the script's framework, imported only when the script uses it
        from torch.nn.modules import module

        self.hooks = [module.register_module_forward_pre_hook(self.entered),
                      module.register_module_forward_hook(self.left, always_call=True)]

    def entered(self, module, args) -> None:
        self.depth += 1
        if self.depth == 1 and len(self.called) < MAX_CALLED:
            _safely("forward", self.remember, module, args)

    def left(self, module, args, output) -> None:
        self.depth -= 1

    def remember(self, module, args) -> None:
        known = self.called.get(id(module))
        if known is None or known[0]() is not module:
            first = args[0] if args and isinstance(args[0], self.torch.Tensor) else None
            example = None if first is None or first.dim() == 0 else first[:EXAMPLE_ROWS].detach().cpu().clone()
            self.called[id(module)] = (weakref.ref(module), example)

    def trained_by(self, optimizer) -> tuple[Any, Any] | None:
        params = {id(p) for group in optimizer.param_groups for p in group["params"]}
        best, most = None, 0
        for ref, example in self.called.values():
            module = ref()
            held = sum(id(p) in params for p in module.parameters()) if module is not None else 0
            if held > most:
                best, most = (module, example), held
        if best is not None:
            for hook in self.hooks:
                hook.remove()
            self.called.clear()
        return best


def _rows(example) -> Any:
    """The example input as a NumPy array, for the ONNX export's check (None when it has none)."""
    try:
        return None if example is None else example.detach().cpu().numpy()
    except Exception:
        return None


def _save_torchscript(torch: ModuleType, model, example, trained: Trained, output: Path) -> Path:
    """model.pt as TorchScript (traced on the example input, else scripted); its state_dict when
    neither compiles, which `trained.how` then says."""
    target = output / "model.pt"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                device = next(model.parameters()).device
                compiled = torch.jit.trace(model, example.to(device))
            except Exception:
                compiled = torch.jit.script(model)
        compiled.save(str(target))
    except Exception as exc:
        with open(target, "wb") as handle:
            torch.serialization.save(model.state_dict(), handle)
        trained.how += (f", its state_dict only (not servable): TorchScript failed "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    finally:
        model.train(was_training)
    return target
