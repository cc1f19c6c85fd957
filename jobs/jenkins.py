"""Jenkins: render the job chain with Jenkins Job Builder, install it, trigger and follow builds.

The chain is defined once, as JJB YAML in `jenkins/jobs/`; `render_jobs` turns it into job XML
with JJB's library, `JenkinsClient` talks to a controller through python-jenkins. Credentials
come from the environment (`JENKINS_URL`, `JENKINS_USER`, `JENKINS_API_TOKEN`,
`PUSHTUNE_TRIGGER_TOKEN`) and are never printed: every message a user sees is built here, and
any text taken from an exception is redacted first.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import jenkins
import requests
import yaml

from jobs.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOBS_DIR = PROJECT_ROOT / "jenkins" / "jobs"
CHAIN = ("pull", "classify", "train", "tweak", "notify", "monitor")
DEFAULT_PREFIX = "pushtune"
# Build results as exit codes, in the spirit of `pushtune train`: UNSTABLE = below threshold.
RESULT_EXIT_CODES = {"SUCCESS": 0, "UNSTABLE": 3, "FAILURE": 1, "ABORTED": 1, "NOT_BUILT": 1}


@dataclass
class Queued:
    """The answer to a trigger: the queue item, and whether it was already waiting."""

    queue_id: int | None
    already_queued: bool = False


class WaitTimeout(UserError):
    """A build did not start or finish within --timeout (exit 124, like timeout(1))."""

    exit_code = 124


def chain_jobs(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [f"{prefix}-{step}" for step in CHAIN]


# --- rendering ----------------------------------------------------------------------------------


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """JJB logs a warning when no jenkins_jobs.ini exists; rendering needs none."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _project_yaml(jobs_dir: Path, overrides: Mapping[str, str]) -> io.StringIO:
    """project.yaml with some of its values replaced, as a stream JJB's loader accepts."""
    documents = yaml.safe_load((jobs_dir / "project.yaml").read_text(encoding="utf-8"))
    project = documents[0]["project"]
    project.update(overrides)
    return io.StringIO(yaml.safe_dump(documents, sort_keys=False))


def render_jobs(repo_url: str | None = None, branch: str | None = None,
                jobs_dir: Path = JOBS_DIR) -> dict[str, str]:
    """The chain's job XML by job name, rendered by Jenkins Job Builder from `jobs_dir`.

    `repo_url` and `branch` replace the values in project.yaml. No Jenkins is contacted: with no
    plugin list JJB writes the current plugins' formats.
    """
    from jenkins_jobs.config import JJBConfig
    from jenkins_jobs.errors import JenkinsJobsException
    from jenkins_jobs.loader import load_files
    from jenkins_jobs.registry import ModuleRegistry
    from jenkins_jobs.roots import Roots
    from jenkins_jobs.xml_config import XmlJobGenerator

    overrides = {k: v for k, v in (("repo-url", repo_url), ("branch", branch)) if v}
    sources: list = [jobs_dir / "pushtune.yaml"]
    sources.append(_project_yaml(jobs_dir, overrides) if overrides else jobs_dir / "project.yaml")
    try:
        with _quiet("jenkins_jobs"):
            config = JJBConfig(config_filename=os.devnull)
            config.validate()
            roots = Roots(config)
            load_files(config, roots, sources)
            registry = ModuleRegistry(config, plugins_list=None)
            registry.set_macros(roots.macros)
            jobs = roots.generate_jobs()
            registry.amend_job_dicts(jobs)
            xml_jobs = XmlJobGenerator(registry).generateXML(jobs)
    except (JenkinsJobsException, yaml.YAMLError, OSError) as exc:
        raise UserError(f"cannot render the jobs in {jobs_dir}: {str(exc).strip().splitlines()[-1]}") from None
    return {job.name: job.output().decode("utf-8") for job in xml_jobs}


def write_jobs(jobs: Mapping[str, str], outdir: Path) -> list[Path]:
    """OUTDIR/NAME/config.xml per job: the layout of $JENKINS_HOME/jobs."""
    written = []
    for name, xml in sorted(jobs.items()):
        path = Path(outdir) / name / "config.xml"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(xml, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written


def with_auth_token(xml: str, token: str) -> str:
    """The job XML with <authToken> set, for the Build Token Root trigger URL.

    Used only on the way to the controller, so the token is never in a file we write.
    """
    root = ET.fromstring(xml)
    element = root.find("authToken")
    if element is None:
        element = ET.SubElement(root, "authToken")
    element.text = token
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


# --- talking to a controller --------------------------------------------------------------------


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


@dataclass
class JenkinsSettings:
    """Where the controller is and how to authenticate; secrets stay out of repr()."""

    url: str
    user: str | None = None
    api_token: str | None = field(default=None, repr=False)
    trigger_token: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> "JenkinsSettings":
        env = os.environ if env is None else env
        url = (env.get("JENKINS_URL") or "").strip()
        if not url:
            raise UserError("JENKINS_URL is not set (e.g. export JENKINS_URL=http://localhost:8080/)")
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port that is not a number from 0 to 65535 raises
        except ValueError as exc:  # `http://[::1`, `http://host:99999/`
            raise UserError(f"JENKINS_URL is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"JENKINS_URL must be an http(s) URL, not {_without_userinfo(url)!r}")
        user = env.get("JENKINS_USER") or None
        api_token = env.get("JENKINS_API_TOKEN") or None
        if bool(user) != bool(api_token):
            raise UserError("set both JENKINS_USER and JENKINS_API_TOKEN, or neither")
        return cls(url=url, user=user, api_token=api_token,
                   trigger_token=env.get("PUSHTUNE_TRIGGER_TOKEN") or None, timeout=timeout)

    @property
    def display_url(self) -> str:
        return _without_userinfo(self.url)

    def secrets(self) -> list[str]:
        values = [self.api_token, self.trigger_token, urlsplit(self.url).password]
        return [v for v in values if v]


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
        text = text.replace(quote(secret, safe=""), "****")
    return text


class JenkinsClient:
    """python-jenkins with one-line errors, a build-token trigger and build following."""

    def __init__(self, settings: JenkinsSettings):
        self.settings = settings
        self.server = jenkins.Jenkins(settings.url, settings.user, settings.api_token,
                                      timeout=settings.timeout)

    # every call goes through here, so every failure reads the same way
    def _call(self, what: str, function: Callable, *args, **kwargs):
        url = self.settings.display_url
        try:
            return function(*args, **kwargs)
        except jenkins.NotFoundException:
            raise UserError(f"{what}: not found on Jenkins at {url} (HTTP 404)") from None
        except (jenkins.TimeoutException, requests.Timeout):
            raise UserError(f"{what}: Jenkins at {url} did not answer within "
                            f"{self.settings.timeout:g} s") from None
        except requests.ConnectionError:
            raise UserError(f"{what}: cannot reach Jenkins at {url}") from None
        except requests.HTTPError as exc:
            raise UserError(f"{what}: Jenkins at {url} answered HTTP {exc.response.status_code}") from None
        except jenkins.JenkinsException as exc:
            text = str(exc)
            for code in (401, 403):
                if f"[{code}]" in text:
                    raise UserError(
                        f"{what}: Jenkins at {url} refused the credentials (HTTP {code}); "
                        "check JENKINS_USER and JENKINS_API_TOKEN") from None
            first = redact(text, self.settings.secrets()).strip().splitlines()[0]
            raise UserError(f"{what}: {first}") from None

    def _get(self, path: str) -> requests.Response:
        request = requests.Request("GET", self.server.server + path)
        return self.server.jenkins_request(request)

    def whoami(self) -> str:
        info = self._call("connect", self.server.get_whoami)
        return str(info.get("id") or info.get("fullName") or "anonymous")

    def wait_until_ready(self, timeout: float) -> None:
        """Until the controller answers normally (after a start), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.whoami()
                return
            except UserError as exc:
                if "refused the credentials" in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(2)

    def install(self, jobs: Mapping[str, str]) -> list[tuple[str, str]]:
        """Create or update each job; returns (name, "created" | "updated")."""
        done = []
        for name, xml in jobs.items():
            existed = self._call(f"job {name}", self.server.job_exists, name)
            self._call(f"install job {name}", self.server.upsert_job, name, xml)
            done.append((name, "updated" if existed else "created"))
        return done

    def root_url(self) -> str | None:
        """The controller's configured root URL, None when it has none.

        /api/json `url` is `Jenkins.getConfiguredRootUrl()` (jenkinsci/jenkins,
        core/src/main/java/jenkins/model/Jenkins.java): JenkinsLocationConfiguration's URL, null
        when unset. Without it builds get no BUILD_URL or JENKINS_URL.
        """
        info = self._call("read the root URL", self.server.jenkins_open,
                          requests.Request("GET", self.server.server + "api/json?tree=url"))
        return json.loads(info).get("url") or None

    def takes_parameters(self, job: str) -> bool:
        """Whether the job has parameters (its JSON `property[].parameterDefinitions`)."""
        info = self._call(f"job {job}", self.server.jenkins_open, requests.Request(
            "GET", f"{self.server.server}job/{quote(job)}/api/json?tree=property[parameterDefinitions[name]]"))
        return any(p.get("parameterDefinitions") for p in json.loads(info).get("property") or [])

    def _post(self, what: str, path: str, params: Mapping[str, str], crumb: bool) -> requests.Response:
        """POST without following redirects: a 303 to an existing queue item is an answer.

        python-jenkins' own requests follow redirects, so this sends through its session.
        """
        server = self.server
        request = requests.Request("POST", server.server + path, params=params)
        self._call(what, server._maybe_add_auth)
        if crumb:
            self._call(what, server.maybe_add_crumb, request)
        prepared = server._session.prepare_request(request)
        settings = server._session.merge_environment_settings(prepared.url, {}, None,
                                                              server._session.verify, None)
        settings.update(timeout=self.settings.timeout, allow_redirects=False)
        return self._call(what, server._session.send, prepared, **settings)

    def queue_build(self, job: str, params: Mapping[str, str] | None = None) -> Queued:
        """Queue a build of `job`; a job with parameters always goes to buildWithParameters.

        A parameterized job refuses `build`: core answers 400 (ParametersDefinitionProperty
        ._doBuild reads a form that is not there), Build Token Root answers 400 "Use
        /buildByToken/buildWithParameters". With JENKINS_USER/JENKINS_API_TOKEN the job's JSON
        says which it is (the job token is added when PUSHTUNE_TRIGGER_TOKEN is set); with only
        the token, Build Token Root's `buildByToken` URL, which needs no Jenkins user but cannot
        read the job, so `buildWithParameters` is tried first and `build` after its 400.
        """
        params = {k: str(v) for k, v in (params or {}).items()}
        token = self.settings.trigger_token
        what = f"trigger {job}"
        if self.settings.user or not token:
            endpoint = "buildWithParameters" if params or self.takes_parameters(job) else "build"
            query = {**params, "token": token} if token else params
            response = self._post(what, f"job/{quote(job)}/{endpoint}", query, crumb=True)
        else:
            query = {"job": job, **params, "token": token}
            # buildByToken is exempt from CSRF crumbs, and anonymous users may not fetch one
            response = self._post(what, "buildByToken/buildWithParameters", query, crumb=False)
            if response.status_code == 400 and not params:
                response = self._post(what, "buildByToken/build", query, crumb=False)
        return self._queued(what, response)

    def trigger(self, job: str, params: Mapping[str, str] | None = None) -> int | None:
        """Queue a build; the queue item number (None when Jenkins did not say)."""
        return self.queue_build(job, params).queue_id

    def _queued(self, what: str, response: requests.Response) -> Queued:
        code, url = response.status_code, self.settings.display_url
        location = response.headers.get("Location", "").rstrip("/")
        tail = location.rsplit("/", 1)[-1]
        queue_id = int(tail) if "/queue/item/" in location and tail.isdigit() else None
        if code in (200, 201):
            return Queued(queue_id)
        if code in (302, 303):
            # core: 303 to the queue item already waiting with the same parameters
            # (ParametersDefinitionProperty.buildWithParameters, !ScheduleResult.isCreated());
            # Build Token Root: a redirect to "." when Queue.schedule made no new item
            return Queued(queue_id, already_queued=True)
        if code == 404:
            raise UserError(f"{what}: not found on Jenkins at {url} (HTTP 404; with only "
                            "PUSHTUNE_TRIGGER_TOKEN, also when the job has no trigger token)")
        if code in (401, 403):
            raise UserError(f"{what}: Jenkins at {url} refused the credentials (HTTP {code}); "
                            "check JENKINS_USER/JENKINS_API_TOKEN or PUSHTUNE_TRIGGER_TOKEN")
        plain = response.headers.get("Content-Type", "").startswith("text/plain")
        first = redact(response.text, self.settings.secrets()).strip().splitlines() if plain else []
        detail = f": {first[0][:200]}" if first else ""
        raise UserError(f"{what}: Jenkins at {url} answered HTTP {code}{detail}")

    def wait_for_start(self, job: str, queue_id: int, deadline: float,
                       poll: float = 1.0) -> tuple[int, str]:
        """Follow the queue item until its build starts: (build number, build URL)."""
        while True:
            item = self._call(f"queue item {queue_id}", self.server.get_queue_item, queue_id)
            if item.get("cancelled"):
                raise UserError(f"the build of {job} was cancelled in the queue")
            executable = item.get("executable")
            if executable and executable.get("number") is not None:
                return int(executable["number"]), str(executable.get("url") or "")
            if time.monotonic() >= deadline:
                why = item.get("why") or "waiting"
                raise WaitTimeout(f"{job} did not start in time (queue item {queue_id}: {why})")
            time.sleep(poll)

    def follow(self, job: str, number: int, write: Callable[[str], None], deadline: float,
               poll: float = 1.0) -> str:
        """Stream the build's console (only new text each time) until it ends; its result."""
        start = 0
        path = f"job/{quote(job)}/{number}/logText/progressiveText"
        while True:
            response = self._call(f"console of {job} #{number}", self._get, f"{path}?start={start}")
            if response.text:
                write(response.text)
            start = int(response.headers.get("X-Text-Size", start + len(response.content)))
            more = response.headers.get("X-More-Data", "").lower() == "true"
            if not more:
                info = self._call(f"build {job} #{number}", self.server.get_build_info, job, number)
                if not info.get("building"):
                    return str(info.get("result") or "NOT_BUILT")
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"{job} #{number} is still running; stopped waiting "
                                  f"({self.settings.display_url}job/{job}/{number}/)")
            time.sleep(poll)

    def last_builds(self, jobs: list[str]) -> list[dict]:
        """Per job: its last build's number, result and start time, or why there is none."""
        rows = []
        for name in jobs:
            if not self._call(f"job {name}", self.server.job_exists, name):
                rows.append({"job": name, "number": None, "result": "not installed", "started": None})
                continue
            info = self._call(f"job {name}", self.server.get_job_info, name)
            last = info.get("lastBuild")
            if not last:
                rows.append({"job": name, "number": None, "result": "never built", "started": None})
                continue
            build = self._call(f"build {name} #{last['number']}", self.server.get_build_info,
                               name, last["number"])
            result = "BUILDING" if build.get("building") else (build.get("result") or "?")
            started = build.get("timestamp")
            rows.append({"job": name, "number": int(last["number"]), "result": result,
                         "started": started / 1000 if started else None, "url": build.get("url")})
        return rows
