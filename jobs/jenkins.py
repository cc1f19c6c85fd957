"""Jenkins: render the job chain with Jenkins Job Builder, install it, trigger and follow builds.

The chain is defined once, as JJB YAML in `jenkins/jobs/`; `render_jobs` turns it into job XML
with JJB's library, `JenkinsClient` talks to a controller through python-jenkins. Credentials
come from the environment (`JENKINS_URL`, `JENKINS_USER`, `JENKINS_API_TOKEN`,
`PUSHTUNE_TRIGGER_TOKEN`) and are never printed: every message a user sees is built here, and
any text taken from an exception is redacted first.
"""

from __future__ import annotations

import io
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
        except jenkins.TimeoutException:
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

    def trigger(self, job: str, params: Mapping[str, str] | None = None) -> int | None:
        """Queue a build; returns the queue item number (None when Jenkins did not say).

        With JENKINS_USER/JENKINS_API_TOKEN the authenticated API is used (the job's token is
        added when PUSHTUNE_TRIGGER_TOKEN is set); with only the token, Build Token Root's
        `buildByToken` URL, which needs no Jenkins user at all.
        """
        params = {k: str(v) for k, v in (params or {}).items()}
        token = self.settings.trigger_token
        if self.settings.user or not token:
            return self._call(f"trigger {job}", self.server.build_job, job, dict(params) or None, token)
        endpoint = "buildByToken/buildWithParameters" if params else "buildByToken/build"
        request = requests.Request("POST", self.server.server + endpoint,
                                   params={"job": job, **params, "token": token})
        # buildByToken is exempt from CSRF crumbs, and anonymous users may not fetch one
        response = self._call(f"trigger {job}", self.server.jenkins_request, request, add_crumb=False)
        location = response.headers.get("Location", "").rstrip("/")
        tail = location.rsplit("/", 1)[-1]
        return int(tail) if "/queue/item/" in location and tail.isdigit() else None

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
