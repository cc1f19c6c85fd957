"""Tuning strategies compared on the suite of under-performing models (benchmarks/suite/).

Each case runs through `run_model` in-process (local runtime, a fresh PUSHTUNE_HOME per case)
once per strategy on the same budget (8 attempts), and its keras-tuner rewrite (kt_<case>.py,
when there is one) runs as a user would run it, with RandomSearch (8 trials) and Hyperband.
The oracle is what an engineer who knew the fault would spend: one attempt as pushed, one with
the known fix (for an unmodified case, the script with its `fix_edit` applied, run as pushed).
Every run also counts the attempts of Keras and PyTorch cases that left a training curve, and
whether a passing run registered a model version.

Subsets: BENCH_CASES=a,b and BENCH_STRATEGIES=ladder,dense-only (names below). Progress goes to
stderr.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from jobs.classify.classifier import classify_file
from jobs.errors import UserError
from jobs.loop import RunOptions, run_model
from jobs.store.run_store import RunStore
from jobs.train.metrics import meets
from jobs.train.runtime import LocalRuntime
from jobs.tune import strategies, tweaks

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUITE = HERE / "suite"
BUDGET = 8
PUSHTUNE_STRATEGIES = ("dense-only", "ladder", "diagnose", "optuna")
KERAS_TUNERS = {"kt-random": "random", "kt-hyperband": "hyperband"}
LABELS = {"dense-only": "add Dense only", "ladder": "ladder", "diagnose": "diagnose (default)",
          "optuna": "optuna", "kt-random": "keras-tuner RandomSearch", "kt-hyperband": "keras-tuner Hyperband"}


def _load_cases():
    spec = importlib.util.spec_from_file_location("pushtune_suite_cases", SUITE / "cases.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module.CASES


class DenseOnlyStrategy:
    """The recipe: while the metric is below the threshold, add a Dense layer to the model and
    train again. Builds on the latest attempt; nothing else is ever changed."""

    name = "dense-only"

    def next_candidate(self, history: strategies.History) -> strategies.Candidate | None:
        last = history.attempts[-1]
        result = tweaks.apply_tweak("add_dense", last["source"], last["params"])
        if result is None:
            return None
        candidate = strategies.Candidate(result.source, result.params, "add_dense", result.description,
                                         [*last["tweaks"], result.description], last["n"])
        return None if candidate.key in history.tried() else candidate


strategies.STRATEGIES.setdefault("dense-only", DenseOnlyStrategy)


@dataclass
class Outcome:
    """One case under one strategy (or a reason it could not run)."""

    passed: bool = False
    attempts: int = 0
    best: float | None = None
    to_pass: float | None = None  # seconds of the attempts up to the first that met the threshold
    seconds: float = 0.0  # all attempts (trials)
    wall: float = 0.0  # the whole run, loop or tuner included
    moves: str = ""
    curves: int = 0  # attempts whose curve in the store has a non-empty history
    registered: bool = False  # the run passed and its model became a version
    unavailable: str | None = None  # the strategy does not exist (yet) or refused the case
    error: str | None = None


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def faces_dir() -> str | None:
    path = Path(os.environ.get("PUSHTUNE_DATA") or ROOT.parent / "shared" / "data" / "att_faces")
    return str(path) if path.is_dir() else None


def _selected(variable: str, known: list[str]) -> list[str]:
    wanted = [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"{variable}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return wanted or known


# --- pushtune runs ----------------------------------------------------------------------------


def trains_by_epoch(case) -> bool:
    """A Keras or PyTorch case: one whose attempts should leave a training curve."""
    return classify_file(case.path).framework in ("keras", "pytorch")


def run_pushtune(case, home: Path, strategy: str, label: str | None = None, script: Path | None = None,
                 **overrides) -> Outcome:
    options = RunOptions(threshold=case.threshold, metric=case.metric, mode=case.mode, max_attempts=BUDGET,
                         strategy=strategy, data=faces_dir() if case.needs_faces else None, runtime="local")
    for name, value in overrides.items():
        setattr(options, name, value)

    def progress(event: str, data: dict) -> None:
        if event == "attempted":
            a = data["attempt"]
            value = f"{a['metric_value']:.4f}" if a["metric_value"] is not None else a["error"]
            change = a["tweak"] or (f"with {options.params}" if options.params else "as pushed")
            log(f"    {case.name} / {label or strategy}: attempt {a['n']} {change}: "
                f"{value} ({a['seconds'] or 0:.1f} s)")

    started = time.perf_counter()
    try:
        store = RunStore.open(home / "pushtune.db")
        summary = run_model(script or case.path, options, LocalRuntime(), store, progress)
    except UserError as exc:
        return Outcome(unavailable=str(exc))
    except Exception as exc:  # another engineer's half-finished change must not sink the bench
        traceback.print_exc()
        return Outcome(error=f"{type(exc).__name__}: {exc}")
    outcome = Outcome(wall=time.perf_counter() - started, attempts=len(summary["attempts"]),
                      curves=sum(1 for a in store.attempts(summary["run_id"]) if (a["curve"] or {}).get("history")),
                      registered=(summary["deployment"] or {}).get("version") is not None)
    spent = 0.0
    for attempt in summary["attempts"]:
        spent += attempt["seconds"]
        value = attempt.get(case.metric)
        if value is not None and outcome.to_pass is None and meets(value, case.threshold, case.mode):
            outcome.passed, outcome.to_pass = True, spent
    best = summary["best"]
    outcome.seconds = spent
    outcome.best = best[case.metric] if best else None
    outcome.moves = ", ".join(a["tweak"].split(":")[0].split(" (")[0] for a in summary["attempts"][1:]
                              if a["tweak"])
    return outcome


def run_oracle(case, home: Path) -> dict:
    """One attempt as pushed and one with the known fix: their metrics and seconds."""
    pushed = run_pushtune(case, home, "ladder", "oracle", max_attempts=1)
    if case.fix_edit:
        script = home.parent / "fixed" / case.script
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(case.fixed_source())
        fixed = run_pushtune(case, home, "ladder", "oracle", script, max_attempts=1)
    else:
        fixed = run_pushtune(case, home, "ladder", "oracle", max_attempts=1, params=dict(case.fix))
    return {"pushed": pushed.best, "fixed": fixed.best, "fixed_passes": fixed.passed,
            "pushed_s": pushed.seconds, "fixed_s": fixed.seconds, "seconds": pushed.seconds + fixed.seconds}


# --- keras-tuner runs --------------------------------------------------------------------------


def run_keras_tuner(case, which: str, workdir: Path) -> Outcome:
    if case.keras_tuner is None:
        return Outcome(unavailable="no hypermodel")
    if importlib.util.find_spec("keras_tuner") is None:
        return Outcome(unavailable="keras-tuner not installed (pip install -r requirements-bench.txt)")
    directory = workdir / f"kt-{which}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if case.needs_faces:
        env["PUSHTUNE_DATA"] = faces_dir() or ""
    log(f"    {case.name} / keras-tuner {which} …")
    started = time.time()
    done = subprocess.run([sys.executable, str(SUITE / f"{case.keras_tuner}.py"), which, str(directory)],
                          cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        return Outcome(wall=wall, error=(done.stderr.strip().splitlines() or ["?"])[-1])
    # Each trial's trial.json is written last when the trial ends: its mtime is the end time.
    trials = []
    for path in (directory / which).glob("trial_*/trial.json"):
        trial = json.loads(path.read_text())
        if trial["status"] == "COMPLETED" and trial["score"] is not None:
            trials.append((path.stat().st_mtime, trial["score"]))
    trials.sort()
    outcome = Outcome(seconds=wall, wall=wall, attempts=len(trials), best=max((s for _, s in trials), default=None))
    first = next((end for end, score in trials if meets(score, case.threshold, case.mode)), None)
    if first is not None:
        outcome.passed, outcome.to_pass = True, first - started
    return outcome


def _code_lines(path: Path) -> list[str]:
    """The file's lines after its module docstring, right-stripped."""
    text = path.read_text()
    body = ast.parse(text).body
    skip = body[0].end_lineno if body and ast.get_docstring(ast.Module(body=body[:1], type_ignores=[])) else 0
    return [line.rstrip() for line in text.splitlines()[skip:]]


def rewritten_lines(case) -> tuple[int, int]:
    """(non-blank code lines of the case script, of its kt_ file those changed or added), by
    difflib, module docstrings left out."""
    before, after = _code_lines(case.path), _code_lines(SUITE / f"{case.keras_tuner}.py")
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    new = sum(1 for tag, _, _, j1, j2 in matcher.get_opcodes() if tag in ("replace", "insert")
              for line in after[j1:j2] if line.strip())
    return sum(1 for line in before if line.strip()), new


# --- the section -----------------------------------------------------------------------------


def _value(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _cell(outcome: Outcome | None, oracle: float) -> str:
    if outcome is None or outcome.unavailable == "no hypermodel":
        return "—"
    if outcome.unavailable:
        return "n/a"
    if outcome.error:
        return "error"
    if outcome.passed:
        return f"✓ {outcome.attempts} · {outcome.to_pass:.0f} s · {outcome.to_pass / oracle:.1f}×"
    return f"✗ {outcome.attempts} · {_value(outcome.best)}"


def _ratio(outcome: Outcome, oracle: float) -> str:
    """Seconds to the threshold ÷ the oracle's."""
    return f"{outcome.to_pass / oracle:.1f}×" if outcome.passed else "—"


def _wall_ratio(outcomes: dict[str, Outcome], oracles: dict[str, dict]) -> float:
    """The outcomes' wall seconds ÷ their cases' oracle seconds."""
    oracle = sum(oracles[name]["seconds"] for name in outcomes)
    return sum(v.wall for v in outcomes.values()) / oracle if oracle else 0.0


def main() -> str:
    os.environ.setdefault("MPLBACKEND", "Agg")
    cases = _load_cases()
    names = _selected("BENCH_CASES", [c.name for c in cases])
    cases = [c for c in cases if c.name in names]
    chosen = _selected("BENCH_STRATEGIES", [*PUSHTUNE_STRATEGIES, *KERAS_TUNERS])
    missing = {}
    for name in chosen:
        if name in PUSHTUNE_STRATEGIES:
            try:
                strategies.get_strategy(name)
            except UserError as exc:
                missing[name] = str(exc)
    # Warm the page cache, so the first attempt timed (an oracle's) is not the one that loads
    # TensorFlow from disk.
    subprocess.run([sys.executable, "-c", "import keras, torch, sklearn.linear_model"], capture_output=True)
    oracles: dict[str, dict] = {}
    results: dict[str, dict[str, Outcome]] = {name: {} for name in chosen}
    skipped = []
    home_before = os.environ.get("PUSHTUNE_HOME")
    for case in cases:
        if case.needs_faces and not faces_dir():
            skipped.append(case.name)
            log(f"== {case.name}: skipped (no ORL faces; set PUSHTUNE_DATA)")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-tuning-{case.name}-") as tmp:
            home = Path(tmp) / "home"
            os.environ["PUSHTUNE_HOME"] = str(home)
            log(f"== {case.name}: {case.fault}; oracle (as pushed, then {case.fix_text})")
            oracles[case.name] = oracle = run_oracle(case, home)
            log(f"   oracle: {_value(oracle['pushed'])} → {_value(oracle['fixed'])} in {oracle['seconds']:.1f} s")
            for name in chosen:
                if name in missing:
                    results[name][case.name] = Outcome(unavailable=missing[name])
                    continue
                log(f"-- {case.name} / {name}")
                if name in KERAS_TUNERS:
                    outcome = run_keras_tuner(case, KERAS_TUNERS[name], Path(tmp))
                else:
                    outcome = run_pushtune(case, home, name)
                results[name][case.name] = outcome
                log(f"   {case.name} / {name}: {_cell(outcome, oracle['seconds'])}"
                    + (f" ({outcome.unavailable or outcome.error})" if outcome.unavailable or outcome.error else ""))
    if home_before is None:
        os.environ.pop("PUSHTUNE_HOME", None)
    else:
        os.environ["PUSHTUNE_HOME"] = home_before
    return _section(cases, chosen, oracles, results, skipped)


def _section(cases, chosen, oracles, results, skipped) -> str:
    ran = [c for c in cases if c.name in oracles]
    by_name = {c.name: c for c in ran}
    out = [
        "## tuning strategies on the suite",
        "",
        f"{len(ran)} ordinary under-performing models with one known fix each (`benchmarks/suite/`), each run "
        f"through `run_model` (local runtime) per strategy with a budget of {BUDGET} attempts; keras-tuner "
        f"runs the case rewritten as a hypermodel (`kt_<case>.py`) with RandomSearch ({BUDGET} trials) and "
        f"Hyperband (max_epochs = the script's epochs, 16 for the faces, factor 3, one iteration: about "
        f"{BUDGET} full trainings' worth of epochs in all). "
        f"Oracle = seconds of one attempt as pushed + one with the known fix. A cell reads "
        f"✓ attempts · seconds until the threshold was first met (attempt seconds, python start-up included; "
        f"keras-tuner: from its start to the end of the first trial that met it) · that ÷ oracle; "
        f"✗ attempts · best metric; n/a: the strategy is not available; —: no hypermodel. "
        f"Curves: attempts of Keras and PyTorch cases that left a per-epoch training curve; registered: "
        f"passing runs whose model became a version.",
        "",
        "| case | fault | threshold | as pushed | known fix | fixed | oracle s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in ran:
        o = oracles[case.name]
        out.append(f"| {case.name} | {case.fault} | {case.metric} ≥ {case.threshold:g} | {_value(o['pushed'])} | "
                   f"{case.fix_text} | {_value(o['fixed'])}{'' if o['fixed_passes'] else ' (FAILS)'} | "
                   f"{o['pushed_s']:.1f} + {o['fixed_s']:.1f} |")
    out += ["", "| strategy | passed | attempts | seconds (wall) | ÷ oracle | curves | registered |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in chosen:
        got = {k: v for k, v in results[name].items() if v.unavailable != "no hypermodel"}
        if not got:
            out.append(f"| {LABELS[name]} | — (no case with a hypermodel run) | | | | | |")
            continue
        if all(v.unavailable for v in got.values()):
            reason = next(iter(got.values())).unavailable
            out.append(f"| {LABELS[name]} | not available ({reason}) | | | | | |")
            continue
        usable = {k: v for k, v in got.items() if not v.unavailable}
        wall = sum(v.wall for v in usable.values())
        passed = sum(v.passed for v in usable.values())
        errors = sum(1 for v in usable.values() if v.error)
        deep = [v for k, v in usable.items() if trains_by_epoch(by_name[k])]
        out.append(f"| {LABELS[name]} | {passed}/{len(usable)}{f' ({errors} errors)' if errors else ''} | "
                   f"{sum(v.attempts for v in usable.values())} | {wall:.0f} | "
                   f"{_wall_ratio(usable, oracles):.1f}× | {sum(v.curves for v in deep)}/"
                   f"{sum(v.attempts for v in deep)} | {sum(v.registered for v in usable.values())}/{passed} |")
    out += ["", "| case | " + " | ".join(LABELS[n] for n in chosen) + " |",
            "| --- |" + " --- |" * len(chosen)]
    for case in ran:
        cells = [_cell(results[n].get(case.name), oracles[case.name]["seconds"]) for n in chosen]
        out.append(f"| {case.name} | " + " | ".join(cells) + " |")
    if "diagnose" in chosen and any(not v.unavailable for v in results["diagnose"].values()):
        out += ["", "The default strategy, `diagnose`, case by case:", "",
                "| case | passed | attempts | best | s to threshold | wall s | ÷ oracle | moves |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for case in ran:
            v = results["diagnose"][case.name]
            out.append(f"| {case.name} | {'yes' if v.passed else 'no'} | {v.attempts} | {_value(v.best)} | "
                       f"{_seconds(v.to_pass)} | {v.wall:.1f} | {_ratio(v, oracles[case.name]['seconds'])} | "
                       f"{v.moves or v.error or v.unavailable or '—'} |")
        out += _unmodified_table([c for c in ran if c.unmodified], results["diagnose"], oracles)
    kt_cases = [c for c in cases if c.keras_tuner]
    if kt_cases:
        out += ["", "Rewriting a case for keras-tuner (non-blank code lines changed or added, by difflib, "
                    "between the case script and its `kt_` file; docstrings left out):", "",
                "| case | lines in the script | lines rewritten for keras-tuner |", "| --- | --- | --- |"]
        for case in kt_cases:
            total, new = rewritten_lines(case)
            out.append(f"| {case.name} | {total} | {new} |")
    if skipped:
        out += ["", f"Skipped (no ORL faces in PUSHTUNE_DATA): {', '.join(skipped)}."]
    return "\n".join(out) + "\n"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _unmodified_table(cases, diagnose: dict[str, Outcome], oracles: dict[str, dict]) -> list[str]:
    """`diagnose` on the scripts written without pushtune, with what the capture gave it."""
    if not cases:
        return []
    out = ["", "Unmodified scripts (`plain_*.py`: no pushtune import, the metric printed in the script's own "
               "words, the model saved under its own name or not at all), under `diagnose`:", "",
           "| case | attempts | s to threshold | ÷ oracle | curves | registered |",
           "| --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        v = diagnose[case.name]
        curves = f"{v.curves}/{v.attempts} attempts" if trains_by_epoch(case) else "—"
        registered = ("yes" if v.registered else "no") if v.passed else "— (did not pass)"
        out.append(f"| {case.name} | {v.attempts} | {_seconds(v.to_pass)} | "
                   f"{_ratio(v, oracles[case.name]['seconds'])} | {curves} | {registered} |")
    ran = {c.name: diagnose[c.name] for c in cases if not diagnose[c.name].unavailable}
    out += ["", f"On the unmodified cases `diagnose` took {_wall_ratio(ran, oracles):.1f}× the oracle's "
                f"seconds (wall; goal ≤ 2×)."]
    return out


if __name__ == "__main__":
    print(main())
