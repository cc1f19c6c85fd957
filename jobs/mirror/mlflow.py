"""MLflow as a mirror of the run store (optional: `pip install 'pushtune[mlflow]'`).

With a tracking URI (`--mlflow URI`, else MLflow's own MLFLOW_TRACKING_URI, recorded with the
run's options so a job chain, a resume and a monitor use the same one), each pushtune run is an
MLflow run in the experiment named after its model, and each finished attempt a nested run: its
change and why as tags, its parameters, its metrics, its per-epoch curve as step metrics
(`curve/<name>`), its diff, log and model (and ONNX form) as artifacts. Model versions are
registered models' versions, and the alias `production` follows pushtune's production version,
rollbacks included.

pushtune's store stays the source of truth. `mirror_run` and `mirror_production` copy what MLflow
lacks, finding what is there by tags (`pushtune.store`, `pushtune.run_id`, `pushtune.attempt`,
`pushtune.version`), so they may be called after every attempt, from any process, any number of
times. A server that is down or refuses costs one warning per run (stderr, and the file
`mlflow-failed.txt` in the run's directory, which every later call reads), never the run: that
run is not mirrored again.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobs.autolog.to_onnx import ONNX_FILE
from jobs.deploy.versions import run_model_name
from jobs.errors import UserError
from jobs.store.run_store import RunStore
from jobs.train.metrics import UnsafeOutput, copy_output

OPTION = "mlflow"  # the run option that holds the tracking URI
STORE_TAG = "pushtune.store"
RUN_TAG = "pushtune.run_id"
ATTEMPT_TAG = "pushtune.attempt"
VERSION_TAG = "pushtune.version"
PRODUCTION_ALIAS = "production"
FAILED_FILE = "mlflow-failed.txt"  # in the run's directory: the run's one warning, said once
CURVE_PREFIX = "curve/"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model training view, not GenAI
LOG_LIMIT = 16 << 20  # of log.txt, uploaded
ARTIFACT_LIMIT = 2 << 30  # a larger model file is left out of the mirror
# A mirror waits on no server for long: MLflow's defaults retry for minutes (7 retries, backoff 2).
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
STATUS = {"running": "RUNNING", "passed": "FINISHED", "below_threshold": "FINISHED", "failed": "FAILED",
          "interrupted": "KILLED"}
MAX_TAG = 5000  # characters of a tag or parameter value (MLflow takes 8000 and 6000)
BATCH = 100  # params or tags per log_batch request (MLflow's limit; 1000 metrics)
MISSING = "mlflow is not installed: pip install 'pushtune[mlflow]' (or make install)"


# --- turning it on --------------------------------------------------------------------------------


def tracking_uri(given: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The run's tracking URI: --mlflow, else MLFLOW_TRACKING_URI; None when neither (no mirror).
    A URI with a password in it is refused (it would be recorded with the run), and so is one
    when the client is not installed."""
    uri = given or environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return None
    where = "--mlflow" if given else "MLFLOW_TRACKING_URI"
    try:
        password = urlsplit(uri).password
    except ValueError:
        raise UserError(f"{where}: not a URI: {uri!r}") from None
    if password is not None:
        raise UserError(f"{where}: the URI holds a password: give it in MLFLOW_TRACKING_USERNAME and "
                        f"MLFLOW_TRACKING_PASSWORD instead")
    if importlib.util.find_spec("mlflow") is None:
        raise UserError(f"{where}: {MISSING}")
    return uri


def run_uri(run: Mapping[str, Any]) -> str | None:
    uri = (run.get("options") or {}).get(OPTION)
    return uri if isinstance(uri, str) and uri else None


def _client(uri: str):
    for name, value in HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)  # read by MLflow at each request; a user's own setting wins
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # stdout is pushtune's (--json)
    try:
        from mlflow.tracking import MlflowClient  # optional and heavy: only when a run is mirrored
    except ModuleNotFoundError:
        raise RuntimeError(MISSING) from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# --- the entry points -------------------------------------------------------------------------------


def mirror_run(store: RunStore, run_id: int, *, wait: bool = True) -> None:
    """Bring the run's MLflow mirror up to date (and its model's registry entry, once it has a
    version). Never raises: a failure is the run's one warning. The work is done by this
    process's one mirror thread, in order; `wait=False` (after an attempt) lets the loop go on
    meanwhile, so the next attempt trains while this one uploads. The process waits for that
    thread before it exits."""
    if run_uri(store.get_run(run_id)) is None:
        return
    done = _worker().submit(sync_run, store, run_id)
    if wait:
        done.result()


def sync_run(store: RunStore, run_id: int) -> None:
    """`mirror_run`'s work, in the calling thread."""
    run = store.get_run(run_id)
    uri = run_uri(run)
    if uri is None or _gave_up(run):
        return
    try:
        client = _client(uri)
        attempts = RunMirror(client, store, run).sync()
        version = store.model_version_of_run(run_id)
        if version is not None:
            _sync_registry(client, store, version["name"], {run_id: attempts})
    except Exception as exc:  # the mirror never costs the run
        _give_up(run, uri, exc)


_WORKERS: list[ThreadPoolExecutor] = []


def _worker() -> ThreadPoolExecutor:
    if not _WORKERS:  # its thread is joined when the interpreter exits: a queued mirror is finished
        _WORKERS.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="pushtune-mlflow"))
    return _WORKERS[0]


def mirror_production(store: RunStore, name: str) -> None:
    """Bring the registered model `name` up to date: a version per pushtune version, the alias
    `production` on pushtune's production version. The URI: MLFLOW_TRACKING_URI, else the
    latest one recorded by a run of the name's versions. Never raises: a failure is a warning."""
    runs = [store.get_run(v["run_id"]) for v in store.model_versions(name)]
    recorded = [uri for uri in map(run_uri, runs) if uri]
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (recorded[-1] if recorded else None)
    if uri is None:
        return
    try:
        _sync_registry(_client(uri), store, name)
    except Exception as exc:
        _warn(f"the MLflow mirror of model {name} failed ({_why(exc)}): pushtune's own record is complete")


# --- failures --------------------------------------------------------------------------------------


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    errno = re.search(r"\[Errno -?\d+\] [^'\"()]+", text)  # what urllib3 wraps in "Max retries exceeded …"
    if errno:
        return errno.group(0).strip()
    return (text[:300] + "…" if len(text) > 300 else text) or type(exc).__name__


def _warn(line: str) -> None:
    print(f"pushtune: warning: {line}", file=sys.stderr, flush=True)


def _gave_up(run: Mapping[str, Any]) -> bool:
    return bool(run["run_dir"]) and (Path(run["run_dir"]) / FAILED_FILE).exists()


def _give_up(run: Mapping[str, Any], uri: str, exc: BaseException) -> None:
    """Say once per run, whichever process fails first, that its mirror failed."""
    line = (f"run {run['id']}: mirroring to MLflow at {uri} failed ({_why(exc)}): the run goes on, "
            f"not mirrored; pushtune's own record is complete")
    if run["run_dir"]:
        try:
            with open(Path(run["run_dir"]) / FAILED_FILE, "x", encoding="utf-8") as marker:
                marker.write(line + "\n")
        except FileExistsError:
            return  # another process said it already
        except OSError:
            pass
    _warn(line)


# --- runs and attempts ---------------------------------------------------------------------------


def _text(value: object, limit: int = MAX_TAG) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _key(name: object) -> str:
    """A name MLflow accepts for a parameter or metric (alphanumerics, _ - . space / :)."""
    key = re.sub(r"[^\w.\- /:]", "_", str(name)).strip(" /.") or "_"
    return re.sub(r"/+", "/", key)[:250]


def _ms(seconds: float | None) -> int:
    return int((seconds or time.time()) * 1000)


def _numbers(values: Mapping[str, Any] | None) -> Iterator[tuple[str, float]]:
    for name, value in (values or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield _key(name), float(value)


_EXPERIMENTS: dict[tuple[str, str], str] = {}  # (tracking URI, name) -> experiment id, in this process


class RunMirror:
    """One pushtune run and its finished attempts, in MLflow."""

    def __init__(self, client, store: RunStore, run: Mapping[str, Any]):
        self.client, self.store, self.run = client, store, run
        self.tags = {STORE_TAG: store.name, RUN_TAG: str(run["id"])}

    def sync(self) -> dict[int, str]:
        """Mirror what MLflow lacks; the MLflow run id of each mirrored attempt."""
        experiment = self._experiment(run_model_name(self.run))
        found = self.client.search_runs(
            [experiment], filter_string=" and ".join(f"tags.`{k}` = '{v}'" for k, v in self.tags.items()),
            max_results=5000)
        parent = next((r for r in found if ATTEMPT_TAG not in r.data.tags), None)
        parent_id = parent.info.run_id if parent else self._create_parent(experiment)
        done: dict[int, str] = {}
        for r in found:
            if ATTEMPT_TAG not in r.data.tags:
                continue
            if r.info.status == "RUNNING":  # a mirror cut short: made again
                self.client.delete_run(r.info.run_id)
            else:
                done[int(r.data.tags[ATTEMPT_TAG])] = r.info.run_id
        for attempt in self.store.attempts(self.run["id"]):
            if attempt["n"] not in done and attempt["status"] not in ("running", "pending"):
                done[attempt["n"]] = self._mirror_attempt(experiment, parent_id, attempt)
        self._update_parent(parent_id, parent)
        return done

    def _experiment(self, name: str) -> str:
        key = (self.client.tracking_uri, name)
        if key not in _EXPERIMENTS:
            _EXPERIMENTS[key] = self._find_or_create_experiment(name)
        return _EXPERIMENTS[key]

    def _find_or_create_experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return self.client.create_experiment(name, tags={"pushtune.model": name, **EXPERIMENT_KIND})
        except Exception:  # another process made it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _create_parent(self, experiment: str) -> str:
        run = self.run
        tags = {**self.tags, "mlflow.source.name": run["model_path"], "mlflow.source.type": "LOCAL",
                "pushtune.model_file": run["model_name"], "pushtune.kind": run["kind"],
                "pushtune.framework": run["framework"]}
        if run["git_commit"]:
            tags["mlflow.source.git.commit"] = run["git_commit"]
        created = self.client.create_run(experiment, start_time=_ms(run["started_at"]), tags=tags,
                                         run_name=f"run {run['id']}: {run['model_name']}")
        return created.info.run_id

    def _update_parent(self, parent_id: str, parent) -> None:
        """Its status, result and (once, when new) parameters, in one request where it can."""
        run = self.run
        params = None if parent and parent.data.params else {
            "metric": run["metric"], "mode": run["mode"], "threshold": run["threshold"], "strategy": run["strategy"],
            "runtime": run["runtime"], "max_attempts": (run.get("options") or {}).get("max_attempts")}
        tags = {"pushtune.status": run["status"], "pushtune.stop_reason": run["stop_reason"] or "",
                "pushtune.best_attempt": str(run["best_attempt"] or "")}
        have = parent.data.tags if parent else {}
        changed = {k: v for k, v in tags.items() if have.get(k) != v}
        best = self.store.get_attempt(run["id"], run["best_attempt"]) if run["best_attempt"] else None
        metrics, curve = {}, None
        if best is not None and best["metric_value"] is not None and run["status"] != "running":
            value = float(best["metric_value"])
            if not parent or parent.data.metrics.get(_key(run["metric"])) != value:
                metrics[run["metric"]], curve = value, best["curve"]  # the run's page shows its best curve
        self._log(parent_id, params=params, tags=changed, metrics=metrics, curve=curve, at=run["finished_at"])
        status = STATUS.get(run["status"], "FINISHED")
        if (parent.info.status if parent else "RUNNING") != status:  # a new run is RUNNING
            if status == "RUNNING":
                self.client.update_run(parent_id, status="RUNNING")
            else:
                self.client.set_terminated(parent_id, status, end_time=_ms(run["finished_at"]))

    def _mirror_attempt(self, experiment: str, parent_id: str, attempt: Mapping[str, Any]) -> str:
        n = attempt["n"]
        change = attempt["tweak"] or "as pushed"
        tags = {**self.tags, ATTEMPT_TAG: str(n), "mlflow.parentRunId": parent_id,
                "pushtune.change": change, "pushtune.status": attempt["status"]}
        for name, value in (("pushtune.reason", attempt["reason"]), ("pushtune.error", attempt["error"]),
                            ("pushtune.warm_from", attempt["warm_from"])):
            if value is not None:
                tags[name] = str(value)
        created = self.client.create_run(experiment, start_time=_ms(attempt["started_at"]), tags=tags,
                                         run_name=_text(f"attempt {n}: {change}", 250))
        run_id = created.info.run_id
        metrics = dict(attempt["metrics"] or {})
        if attempt["metric_value"] is not None:
            metrics[self.run["metric"]] = attempt["metric_value"]
        params = dict(attempt["params"] or {})
        if attempt["tweaks"]:  # a script as people write it has no parameters: its changes are rewrites
            params["tweaks"] = "; ".join(attempt["tweaks"])
        self._log(run_id, params=params, metrics=metrics, curve=attempt["curve"], at=attempt["finished_at"])
        self._upload(run_id, attempt)
        self.client.set_terminated(run_id, "FINISHED" if attempt["status"] == "ok" else "FAILED",
                                   end_time=_ms(attempt["finished_at"]))
        return run_id

    def _log(self, run_id: str, *, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
             metrics: Mapping[str, Any] | None = None, curve: Mapping[str, Any] | None = None,
             at: float | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag  # the optional client, as in _client

        when = _ms(at)
        entities: list[Any] = [Param(_key(k), _text(v, MAX_TAG)) for k, v in (params or {}).items()]
        entities += [RunTag(k, _text(v)) for k, v in (tags or {}).items()]
        entities += [Metric(k, v, when, 0) for k, v in _numbers(metrics)]
        for row in (curve or {}).get("history") or []:
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                entities += [Metric(CURVE_PREFIX + k, v, when, row["epoch"])
                             for k, v in _numbers({k: v for k, v in row.items() if k != "epoch"})]
        while entities:
            batch, entities = entities[:BATCH], entities[BATCH:]
            self.client.log_batch(run_id, metrics=[e for e in batch if isinstance(e, Metric)],
                                  params=[e for e in batch if isinstance(e, Param)],
                                  tags=[e for e in batch if isinstance(e, RunTag)], synchronous=True)

    def _upload(self, run_id: str, attempt: Mapping[str, Any]) -> None:
        """diff.patch (from the store), log.txt and the model (with its ONNX form) under model/,
        staged in one folder and uploaded in one call. The log and the model are files the script
        may have left: only regular files, never through a link, capped."""
        folder = Path(attempt["dir"]) if attempt["dir"] else None
        model = Path(attempt["artifact_path"]) if attempt["artifact_path"] else None
        with tempfile.TemporaryDirectory(prefix="pushtune-mlflow-") as staging_dir:
            staging = Path(staging_dir)
            if attempt["diff"]:
                (staging / "diff.patch").write_text(attempt["diff"], encoding="utf-8")
            wanted = [(folder / "log.txt", staging / "log.txt", LOG_LIMIT)] if folder else []
            if model is not None:
                (staging / "model").mkdir()
                wanted += [(source, staging / "model" / source.name, ARTIFACT_LIMIT)
                           for source in dict.fromkeys((model, model.parent / ONNX_FILE))]
            for source, target, limit in wanted:
                try:
                    copy_output(source, target, limit)
                except (OSError, UnsafeOutput):
                    continue
            if any(path.is_file() for path in staging.rglob("*")):
                self.client.log_artifacts(run_id, staging_dir)


# --- the Model Registry -------------------------------------------------------------------------


def _sync_registry(client, store: RunStore, name: str, mirrored: dict[int, dict[int, str]] | None = None) -> None:
    """A registered model version per pushtune version (the source its attempt's `model/`), the
    status of each as a tag, and the alias `production` where pushtune's production is.
    `mirrored`: runs just mirrored, {run id: {attempt: MLflow run id}}."""
    from mlflow.exceptions import MlflowException  # the optional client, as in _client

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        client.create_registered_model(name, tags={"pushtune.model": name})
        aliases = {}
    registered = {mv.tags.get(VERSION_TAG): mv for mv in client.search_model_versions(f"name = '{name}'")}
    production = None
    for version in store.model_versions(name):
        number = str(version["version"])
        mv = registered.get(number)
        if mv is None:
            attempts = (mirrored or {}).get(version["run_id"]) or RunMirror(
                client, store, store.get_run(version["run_id"])).sync()
            source_run = attempts.get(version["attempt"])
            if source_run is None:
                continue
            mv = client.create_model_version(
                name, f"runs:/{source_run}/model", run_id=source_run,
                tags={VERSION_TAG: number, "pushtune.status": version["status"]},
                description=_text(version["reason"]), await_creation_for=0)
        elif mv.tags.get("pushtune.status") != version["status"]:
            client.set_model_version_tag(name, mv.version, "pushtune.status", version["status"])
        if version["status"] == "production":
            production = mv.version
    if production is None and PRODUCTION_ALIAS in aliases:
        client.delete_registered_model_alias(name, PRODUCTION_ALIAS)
    elif production is not None and str(aliases.get(PRODUCTION_ALIAS)) != str(production):
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, production)
