"""Model versions: each passing run's best model, numbered per name, and which one is production.

A passing run registers its best attempt's artifact as the next version of a named model (the
model file's stem, or `--name`): the artifact is copied to PUSHTUNE_ARTIFACTS/models/<name>/v<N>/
(with the pushed file), so deleting runs never loses a deployed model, and the version records
its sha256, run, attempt, metric, objective, parameters, runtime or image and git commit.

Promotion: a new version becomes production only when it beats the production version on the
same metric and mode (strictly: an equal value does not), or when there is none. Otherwise it
stays a candidate with the reason ("0.958 does not beat production v2's 0.986"). A version
measured by another metric or mode is never promoted automatically: its numbers cannot be
compared. `promote_run(force=True)` and `rollback` change production by hand. Every change is
an event in the store: who (PUSHTUNE_ACTOR, else BUILD_USER_ID, USER, LOGNAME), when, what, why.

`deploy_run` is what the end of a passing run does (`jobs.loop.finish_run`) and what `pushtune
deploy` does again, idempotently; the server (`jobs.serve.server`) reads the production versions.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.clock import utc_iso
from jobs.deploy.servable import check
from jobs.deploy.served_form import NotServable, file_sha256, served_file, serving_files
from jobs.errors import UserError
from jobs.git import git_bytes, git_or_none
from jobs.store.run_store import RunStore
from jobs.train import profiles
from jobs.train.metrics import is_regular_file
from jobs.tune.objective import Objective, usable


class NothingToRegister(UserError):
    """A run whose best attempt saved no model file (or that has none): nothing to deploy."""


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
STATUSES = ("candidate", "production", "retired")
NO_PROMOTE = "registered with --no-promote"
SOURCE_OPTION = "model_source"  # run option: {"repo", "path"} of the file a retrain checked out
RETRAIN_OPTION = "retrain_of"  # run option: {"name", "version"} a retrain re-ran


def actor(env: Mapping[str, str] | None = None) -> str:
    """Who is acting: PUSHTUNE_ACTOR, else the Jenkins user who started the build, else the login
    (USER, LOGNAME, else this process's user's name when the environment has none)."""
    given = os.environ if env is None else env
    for name in ("PUSHTUNE_ACTOR", "BUILD_USER_ID", "USER", "LOGNAME"):
        if given.get(name, "").strip():
            return given[name].strip()
    if env is None:
        try:
            return pwd.getpwuid(os.getuid()).pw_name
        except (ImportError, KeyError):
            pass
    return "unknown"


def check_name(name: str) -> str:
    """A model name: letters, digits, `.`, `_`, `-`, up to 100, starting with a letter or digit
    (it names a directory and a URL path segment)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (up to 100, "
                        f"starting with a letter or digit)")
    return name


NAME_HASH = 10  # hex digits of the stem's sha256 added to a name that had to change


def default_name(model_name: str) -> str:
    """The model file's stem when it is a valid name (`iris.py` → `iris`); else a readable ASCII
    form of it (accents dropped, other characters `-`, cut to fit) plus a short hash of the whole
    stem, so distinct stems keep distinct names: `ann digits (2).py` → `ann-digits-2-<hash>`,
    `модель.py` → `model-<hash>`."""
    stem = Path(model_name).stem
    if NAME_PATTERN.fullmatch(stem):
        return stem
    ascii_form = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_form).strip(".-_") or "model"
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:NAME_HASH]
    return f"{slug[:100 - NAME_HASH - 1].rstrip('.-_')}-{digest}"


def run_model_name(run: Mapping[str, Any]) -> str:
    """The name a run registers under: its `--name`, else its file's stem."""
    given = (run.get("options") or {}).get("name")
    return given if isinstance(given, str) and given else default_name(run["model_name"])


OWNER_QUERY = ("SELECT runs.model_name AS owner FROM model_versions JOIN runs ON runs.id = model_versions.run_id "
               "WHERE model_versions.name = ? ORDER BY model_versions.version DESC LIMIT 1")


def name_owner(store: RunStore, name: str) -> str | None:
    """The file name (as pushed) whose run registered the latest version of `name`; None for a
    name with no versions."""
    rows = store.database.read(lambda db: db.execute(OWNER_QUERY, (name,)).fetchall())
    return rows[0]["owner"] if rows else None


def _refuse_other_file(name: str, owner: str | None, model_name: str, take: bool) -> None:
    if owner is not None and owner != model_name and not take:
        raise UserError(f"model name {name!r} is registered from {owner}, not {model_name}: give another "
                        f"--name, or --force to make {model_name} its new source")


def check_file_may_register(store: RunStore, model_file: str | Path, name: str | None, *, take: bool) -> None:
    """Before a run of `model_file` starts: `check_name_owner` for the name it would register."""
    file_name = Path(model_file).name
    check_name_owner(store, name or default_name(file_name), file_name, take=take)


def check_name_owner(store: RunStore, name: str, model_name: str, *, take: bool = False) -> None:
    """A UserError when `name` was registered from another file than `model_name`, unless `take`
    (`--force`): two files never share a name by accident (a stem cut short, or a `--name`)."""
    _refuse_other_file(name, name_owner(store, name), model_name, take)


def number(value: Any) -> str:
    """A metric value as the reasons show it: 0.958, 0.98611, 1234.5."""
    return f"{value:.6g}" if usable(value) else str(value)


@dataclass
class Deployment:
    """What happened to a run's model version."""

    name: str
    version: int | None
    status: str  # candidate, production, retired, or "not registered"
    reason: str
    production: int | None  # the production version afterwards
    previous: int | None = None  # the production version before, when it changed
    changed: bool = False  # production changed

    def describe(self) -> str:
        if self.version is None:
            stays = f"; production stays v{self.production}" if self.production else ""
            return f"{self.name}: not registered: {self.reason}{stays}"
        label = f"{self.name} v{self.version}"
        if self.status == "production" and self.changed:
            was = f" (was v{self.previous})" if self.previous else ""
            return f"{self.name}: production is now v{self.version}{was}: {self.reason}"
        if self.status == "production":
            return f"{label} is production"
        stays = f"; production stays v{self.production}" if self.production else "; no production version"
        state = "is a candidate" if self.status == "candidate" else f"stays {self.status}"
        return f"{label} {state}: {self.reason}{stays}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the promotion rule -------------------------------------------------------------------------


def judge(candidate: Mapping[str, Any], production: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(promote?, why) for a new version against the production one: it must beat it on the same
    metric and mode, strictly; with no production version it is promoted."""
    if production is None:
        return True, "no production version before it"
    same = (candidate["metric"], candidate["mode"]) == (production["metric"], production["mode"])
    if not same:
        return False, (f"measured by {candidate['metric']} ({candidate['mode']}), production "
                       f"v{production['version']} by {production['metric']} ({production['mode']}): "
                       f"not comparable, so not promoted automatically")
    objective = Objective(candidate["metric"], candidate["mode"], candidate["threshold"])
    value, best = candidate["metric_value"], production["metric_value"]
    if objective.better_than(value, best):
        return True, f"{number(value)} beats production v{production['version']}'s {number(best)}"
    return False, f"{number(value)} does not beat production v{production['version']}'s {number(best)}"


def _production(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((v for v in versions if v["status"] == "production"), None)


def _find(versions: list[dict[str, Any]], version: int) -> dict[str, Any]:
    for record in versions:
        if record["version"] == version:
            return record
    raise UserError(f"{versions[0]['name'] if versions else 'the model'} has no version {version}")


# --- registering a run --------------------------------------------------------------------------


def source_location(run: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(repository, path of the model file inside it) for a later `git show COMMIT:path`."""
    given = (run.get("options") or {}).get(SOURCE_OPTION)
    if isinstance(given, dict) and given.get("path"):
        return given.get("repo"), given["path"]
    model = Path(run["model_path"])
    if not model.parent.is_dir():
        return None, None
    top = git_or_none(model.parent, "rev-parse", "--show-toplevel")
    if not top:
        return None, None
    try:
        relative = model.resolve().relative_to(Path(top).resolve())
    except ValueError:
        return None, None
    return top, relative.as_posix()


def _image(run: Mapping[str, Any]) -> str | None:
    if run.get("runtime") != "docker":
        return None
    try:
        return profiles.image_tag(profiles.get(run["kind"]).image)
    except Exception:  # an image name is a nicety: never a reason not to register
        return None


def register_run(store: RunStore, run_id: int, *, force: bool = False) -> dict[str, Any]:
    """Record the run's best artifact as the next version of its model name (a candidate); the
    version record. A run registers once: its existing version is returned. Only a passing run
    registers, unless `force` (any run whose best attempt saved a model)."""
    existing = store.model_version_of_run(run_id)
    if existing is not None:
        return existing
    run = store.get_run(run_id)
    if run["status"] != "passed" and not force:
        raise UserError(f"run {run_id} did not pass ({run['status'].replace('_', ' ')}): only a passing "
                        f"run registers a model version (--force registers its best model anyway)")
    if not run["best_attempt"]:
        raise NothingToRegister(f"run {run_id} has no successful attempt: no model to register")
    attempt = store.get_attempt(run_id, run["best_attempt"])
    if not attempt["artifact_path"]:
        raise NothingToRegister(f"run {run_id}: attempt {attempt['n']} saved no model file (model.keras, "
                        f"model.joblib, model.pt … in $PUSHTUNE_OUTPUT): nothing to register")
    artifact = Path(attempt["artifact_path"])
    if not is_regular_file(artifact):
        raise UserError(f"run {run_id}: its model file {artifact} is gone: nothing to register")
    name = check_name(run_model_name(run))
    take = bool((run.get("options") or {}).get("take_name"))
    check_name_owner(store, name, run["model_name"], take=take)  # before copying anything

    def same_file(db) -> None:  # again in the write: two files racing for a new name
        rows = db.execute(OWNER_QUERY, (name,)).fetchall()
        _refuse_other_file(name, rows[0]["owner"] if rows else None, run["model_name"], take)
    staged = store.models_dir / name / f".staging-{uuid.uuid4().hex}"
    try:
        staged.mkdir(parents=True)
        shutil.copyfile(artifact, staged / artifact.name, follow_symlinks=False)
        onnx, sample, unservable = serving_files(artifact)
        for kept in (onnx, sample):
            if kept is not None and kept != artifact:
                shutil.copyfile(kept, staged / kept.name, follow_symlinks=False)
        pushed = Path(run["run_dir"]) / "pushed.py" if run["run_dir"] else None
        if pushed is not None and is_regular_file(pushed):
            shutil.copyfile(pushed, staged / "pushed.py", follow_symlinks=False)
    except OSError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise UserError(f"cannot copy {artifact} to {store.models_dir / name}: {exc.strerror or exc}") from None
    try:
        sha256 = file_sha256(staged / artifact.name)
        if attempt["artifact_sha256"] and sha256 != attempt["artifact_sha256"]:
            raise UserError(f"run {run_id}: {artifact} changed after attempt {attempt['n']} recorded it "
                            f"(sha256 {sha256[:12]}… ≠ {attempt['artifact_sha256'][:12]}…): not registered")
        repo, path = source_location(run)
        onnx_sha256 = file_sha256(staged / onnx.name) if onnx is not None else None
        try:
            return store.add_model_version(
                name, staged, artifact.name, onnx_name=onnx.name if onnx is not None else None, check=same_file,
                status="candidate", reason="registered", sha256=sha256,
                onnx_sha256=onnx_sha256, unservable=unservable,
                run_id=run_id, attempt=attempt["n"], metric=run["metric"], mode=run["mode"],
                metric_value=attempt["metric_value"], threshold=run["threshold"], params=attempt["params"],
                kind=run["kind"], framework=run["framework"], runtime=run["runtime"], image=_image(run),
                git_commit=run["git_commit"], source_repo=repo, source_path=path,
            )
        except Exception:  # another process registered the run meanwhile (one version per run)
            existing = store.model_version_of_run(run_id)
            if existing is None:
                raise
            return existing
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _deployment(store: RunStore, record: Mapping[str, Any], event: Mapping[str, Any] | None) -> Deployment:
    production = store.production_version(record["name"])
    now = store.get_model_version(record["name"], record["version"])
    changed = bool(event and event["action"] in ("promoted", "rolled_back") and event["previous"] != now["version"]
                   and now["status"] == "production")
    return Deployment(name=now["name"], version=now["version"], status=now["status"],
                      reason=(event or {}).get("reason") or now["reason"] or "",
                      production=production["version"] if production else None,
                      previous=event["previous"] if event else None, changed=changed)


def _verify(record: Mapping[str, Any]) -> None:
    """A UserError unless the version's artifact is there with its recorded sha256."""
    path = Path(record["artifact_path"])
    label = f"{record['name']} v{record['version']}"
    if not is_regular_file(path):
        raise UserError(f"{label}: its model file {path} is missing")
    found = file_sha256(path)
    if found != record["sha256"]:
        raise UserError(f"{label}: {path} does not match its record (sha256 {found[:12]}… ≠ "
                        f"{record['sha256'][:12]}…): refused")


_CHECKED: set[tuple[str, int, str, str]] = set()  # versions this process saw serve (their file unchanged)


def servable_problem(record: Mapping[str, Any]) -> str | None:
    """Why the version cannot serve (jobs.deploy.servable loads it as the server will and predicts its
    sample, in a subprocess), or None. A version that served once is not checked again in this
    process while its file's sha256 stays the same (a rollback back and forth costs no process)."""
    try:
        path, sha256 = served_file(record)
    except NotServable:
        return check(record)  # it says why, as the server would
    key = (record["name"], record["version"], str(path), sha256)
    if key in _CHECKED and is_regular_file(path) and file_sha256(path) == sha256:
        return None
    problem = check(record)
    if problem is None:
        _CHECKED.add(key)
    return problem


def _refuse_unservable(record: Mapping[str, Any], doing: str) -> None:
    problem = servable_problem(record)
    if problem is not None:
        raise UserError(f"{record['name']}: not {doing}: {problem}")


def decide_automatically(store: RunStore, record: Mapping[str, Any], *, who: str | None = None,
                         note: str | None = None) -> Deployment:
    """Apply the promotion rule to a version (in one write with the decision): production when it
    beats production on the same metric and mode, or there is none, and it serves (loaded as the
    server loads it, in a sandbox); else a candidate, with why."""
    name, version = record["name"], record["version"]
    versions_now = store.model_versions(name)
    problem = None
    if judge(_find(versions_now, version), _production(versions_now))[0]:  # the check costs a process
        problem = servable_problem(_find(versions_now, version))

    def decide(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
        mine, production = _find(versions, version), _production(versions)
        if production is not None and production["version"] == version:
            return None
        promote, reason = judge(mine, production)
        if promote and problem is not None:
            promote, reason = False, problem
        if promote and note:
            reason = f"{reason}: {note}"
        if not promote and mine["reason"] == reason:
            return None  # decided so already: nothing new to record
        return {"version": version, "promote": promote, "reason": reason,
                "action": "promoted" if promote else "kept",
                "retire_reason": f"replaced by v{version}: {reason}"}

    event = store.change_production(name, decide, actor=who or actor(), run_id=record["run_id"])
    return _deployment(store, record, event)


def deploy_run(store: RunStore, run_id: int, *, who: str | None = None) -> Deployment | None:
    """What a passing run's end does: register its best model and promote it if it beats
    production (unless the run was started with --no-promote). Idempotent: a registered
    candidate is judged again (production may have changed), a production version is left.
    None for a run that did not pass."""
    run = store.get_run(run_id)
    if run["status"] != "passed":
        return None
    record = register_run(store, run_id)
    if (run.get("options") or {}).get("promote", True) is False:
        def keep(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
            mine = _find(versions, record["version"])
            if mine["reason"] == NO_PROMOTE or mine["status"] != "candidate":
                return None
            return {"version": mine["version"], "promote": False, "action": "kept", "reason": NO_PROMOTE}

        event = store.change_production(record["name"], keep, actor=who or actor(), run_id=run_id)
        return _deployment(store, record, event)
    if record["status"] != "candidate":
        return _deployment(store, record, None)
    return decide_automatically(store, record, who=who)


def deploy_after_run(store: RunStore, run_id: int) -> Deployment | None:
    """`deploy_run` for `jobs.loop.finish_run`: never fails the run. A model that cannot be
    registered is recorded as an event (the mail says why) instead."""
    try:
        return deploy_run(store, run_id)
    except Exception as exc:  # the run's own result stands whatever happens here
        why = str(exc) if isinstance(exc, UserError) else f"registration failed: {type(exc).__name__}: {exc}"
        try:
            name = run_model_name(store.get_run(run_id))
            store.add_model_event(name, "not_registered", why, actor=actor(), run_id=run_id)
        except Exception:
            pass
        return None


def promote_run(store: RunStore, run_id: int, *, force: bool = False, reason: str | None = None,
                who: str | None = None) -> Deployment:
    """`pushtune promote RUN_ID`: register the run when it is not yet, then promote its version
    when it beats production (the rule), or whatever it scores with `force`."""
    record = register_run(store, run_id, force=force)
    if record["status"] == "production":
        return _deployment(store, record, None)
    _verify(record)
    if not force:
        return decide_automatically(store, record, who=who, note=reason)
    _refuse_unservable(record, "promoted")
    version = record["version"]

    def decide(versions: list[dict[str, Any]]) -> dict[str, Any] | None:
        production = _production(versions)
        if production is not None and production["version"] == version:
            return None
        mine = _find(versions, version)
        compared = judge(mine, production)[1] if production else "no production version before it"
        why = f"promoted by hand with --force ({compared})" + (f": {reason}" if reason else "")
        return {"version": version, "promote": True, "action": "promoted", "reason": why,
                "retire_reason": f"replaced by v{version} (forced)"}

    event = store.change_production(record["name"], decide, actor=who or actor(), run_id=run_id)
    return _deployment(store, record, event)


def rollback(store: RunStore, name: str, to: int | None = None, *, reason: str | None = None,
             who: str | None = None) -> Deployment:
    """Make an earlier version production again: `to`, else the latest version before the current
    production one that was production itself. The current one becomes retired."""
    check_name(name)
    versions = store.model_versions(name)
    if not versions:
        known = ", ".join(store.model_names()) or "none yet"
        raise UserError(f"no model named {name!r} (models: {known})")
    target = _rollback_target(name, versions, to)
    _verify(target)  # outside the write: hashing a large file must not hold the store's lock
    _refuse_unservable(target, "rolled back to")
    production = _production(versions)
    assert production is not None  # _rollback_target refuses a model with no production version
    expected = production["version"]

    def decide(now: list[dict[str, Any]]) -> dict[str, Any]:
        current = _production(now)
        if current is None or current["version"] != expected:
            raise UserError(f"{name}: production changed while rolling back (now "
                            f"{'v' + str(current['version']) if current else 'none'}): run it again")
        why = "rolled back" + (f": {reason}" if reason else "")
        return {"version": target["version"], "promote": True, "action": "rolled_back", "reason": why,
                "retire_reason": f"rolled back to v{target['version']}" + (f": {reason}" if reason else "")}

    event = store.change_production(name, decide, actor=who or actor(), run_id=target["run_id"])
    return _deployment(store, target, event)


def _rollback_target(name: str, versions: list[dict[str, Any]], to: int | None) -> dict[str, Any]:
    current = _production(versions)
    if current is None:
        raise UserError(f"{name} has no production version: nothing to roll back "
                        f"(pushtune promote RUN_ID makes one)")
    if to is not None:
        target = _find(versions, to)
        if target["version"] == current["version"]:
            raise UserError(f"{name} v{to} is production already")
        return target
    earlier = [v for v in versions if v["version"] < current["version"] and v["promoted_at"] is not None]
    if not earlier:
        raise UserError(f"{name}: no earlier production version to roll back to (v{current['version']} "
                        f"is the first that was production); --to VERSION picks any version")
    return earlier[-1]


# --- what the mail, the JSON summary and `pushtune models` show ---------------------------------


def deployment_of(store: RunStore, run_id: int) -> dict[str, Any] | None:
    """The run's model version for its JSON summary: name, version, status, reason and the
    production version now; or why it was not registered; None when it is neither."""
    record = store.model_version_of_run(run_id)
    if record is not None:
        production = store.production_version(record["name"])
        return {"name": record["name"], "version": record["version"], "status": record["status"],
                "reason": record["reason"], "production": production["version"] if production else None}
    refused = [e for e in store.model_events(run_id=run_id) if e["action"] == "not_registered"]
    if refused:
        production = store.production_version(refused[-1]["name"])
        return {"name": refused[-1]["name"], "version": None, "status": "not registered",
                "reason": refused[-1]["reason"], "production": production["version"] if production else None}
    return None


def production_line(store: RunStore, run_id: int) -> str | None:
    """One line for the run's mail: what happened to production."""
    run = store.get_run(run_id)
    name = run_model_name(run)
    record = store.model_version_of_run(run_id)
    if record is None:
        production = store.production_version(name)
        refused = [e for e in store.model_events(run_id=run_id) if e["action"] == "not_registered"]
        stays = (f"{name} v{production['version']} stays production" if production
                 else f"{name} has no production version")
        if refused:
            return f"not registered ({refused[-1]['reason']}); {stays}"
        if run["status"] == "running":
            return None
        if production is None and not store.model_versions(name):
            return None
        return f"unchanged: {stays} (only a passing run registers a version)"
    events = [e for e in store.model_events(run_id=run_id) if e["version"] == record["version"]]
    decision = next((e for e in events if e["action"] in ("promoted", "kept")), None)
    label = f"{record['name']} v{record['version']}"
    if decision is None:
        production = store.production_version(record["name"])
        stays = f", production is v{production['version']}" if production else ""
        return f"{label} registered, now {record['status']}{stays}: {record['reason']}"
    if decision["action"] == "promoted":
        was = f" (was v{decision['previous']})" if decision["previous"] else ""
        line, outcome = f"{label} became production{was}: {decision['reason']}", "production"
    else:
        stays = f"production stays v{decision['previous']}" if decision["previous"] else "no production version"
        line, outcome = f"{label} registered as a candidate, {stays}: {decision['reason']}", "candidate"
    if record["status"] != outcome:  # changed by hand since (a mail sent again later says so)
        line += f"; now {record['status']}: {record['reason']}"
    return line


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return utc_iso(seconds)


def version_view(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": record["version"], "status": record["status"], "reason": record["reason"],
        "metric": record["metric"], "mode": record["mode"], "value": record["metric_value"],
        "threshold": record["threshold"], "sha256": record["sha256"], "run_id": record["run_id"],
        "attempt": record["attempt"], "params": record["params"], "kind": record["kind"],
        "framework": record["framework"], "runtime": record["runtime"], "image": record["image"],
        "git_commit": record["git_commit"], "source_path": record["source_path"],
        "artifact": record["artifact_path"], "onnx": record.get("onnx_path"),
        "onnx_sha256": record.get("onnx_sha256"), "served_as": served_as(record),
        "created_at": _when(record["created_at"]),
        "promoted_at": _when(record["promoted_at"]),
    }


def served_as(record: Mapping[str, Any]) -> str:
    """How the server loads the version: "onnx", "keras (safe mode)", or "not servable: why"."""
    try:
        path, _ = served_file(record)
    except NotServable as exc:
        return f"not servable: {exc}"
    return "onnx" if path.suffix.lower() == ".onnx" else "keras (safe mode)"


def event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"at": _when(event["at"]), "actor": event["actor"], "action": event["action"],
            "version": event["version"], "previous": event["previous"], "run_id": event["run_id"],
            "reason": event["reason"]}


def listing(store: RunStore, names: list[str] | None = None) -> list[dict[str, Any]]:
    """`pushtune models --json`: per name, its production version, its versions and its events."""
    known = sorted({*store.model_names(), *(e["name"] for e in store.model_events())})  # never registered too
    for name in names or []:
        if name not in known:
            raise UserError(f"no model named {name!r} (models: {', '.join(known) or 'none yet'})")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in store.model_versions():
        by_name.setdefault(record["name"], []).append(record)
    out = []
    for name in names or known:
        versions = by_name.get(name, [])
        production = _production(versions)
        out.append({"name": name, "production": production["version"] if production else None,
                    "versions": [version_view(v) for v in versions],
                    "events": [event_view(e) for e in store.model_events(name)]})
    return out


# --- retraining ---------------------------------------------------------------------------------


def retrain_source(record: Mapping[str, Any], run: Mapping[str, Any], into: Path,
                   repo: Path | None = None) -> tuple[Path, str, dict[str, Any]]:
    """The production version's model file as pushed, written into `into`: from its recorded
    commit (`git show COMMIT:path` in `repo`, else the repository recorded with it), else the
    copy kept with the version. (file, where it came from, the run option naming its source)."""
    commit, path = record["git_commit"], record["source_path"]
    filename = Path(path).name if path else run["model_name"]
    target = into / filename
    where = repo or (Path(record["source_repo"]) if record["source_repo"] else None)
    if commit and path and where is not None:
        if not where.is_dir():
            raise UserError(f"{record['name']} v{record['version']}: no repository at {where} "
                            f"(give the checkout with --repo DIR)")
        try:
            shown = git_bytes(where, "show", f"{commit}:{path}")
        except UserError as exc:
            raise UserError(f"{record['name']} v{record['version']}: {exc}") from None
        target.write_bytes(shown)
        return target, f"{path} @ {commit[:12]}", {"repo": str(where.resolve()), "path": path}
    kept = Path(record["artifact_path"]).parent / "pushed.py"
    if is_regular_file(kept):
        shutil.copyfile(kept, target)
        return target, f"the copy of {filename} kept with v{record['version']} (no commit recorded)", \
            {"repo": record["source_repo"], "path": path} if path else {}
    raise UserError(f"{record['name']} v{record['version']}: no commit recorded and no copy of its "
                    f"model file kept: cannot retrain it")
