"""Jenkins: render the job chain with Jenkins Job Builder, install it, trigger and follow builds.

The chain is defined once, as JJB YAML in `jenkins/jobs/`; `render_jobs` turns it into job XML
with JJB's library, `JenkinsClient` talks to a controller through python-jenkins. Credentials
come from the environment (`JENKINS_URL` or `PUSHTUNE_JENKINS_URL`, `JENKINS_USER`,
`JENKINS_API_TOKEN`, `PUSHTUNE_TRIGGER_TOKEN`) and are never printed: every message a user sees
is built here, and any text taken from an exception is redacted first.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import jenkins
import requests
import yaml

from jobs import exit_codes
from jobs.errors import UserError
from jobs.paths import JENKINS_JOBS

JOBS_DIR = JENKINS_JOBS
CHAIN = ("pull", "classify", "train", "tweak", "notify", "monitor", "deploy", "retrain")
DEFAULT_PREFIX = "pushtune"
# The label expression every job of the chain runs on (JJB `node:`, project.yaml `label`): only
# agents that have Docker and pushtune carry the label, so the controller and other agents
# never get a pushtune build.
DEFAULT_LABEL = "pushtune"
# Build results as exit codes, in the spirit of `pushtune train`: UNSTABLE = below threshold.
RESULT_EXIT_CODES = {
    "SUCCESS": exit_codes.OK, "UNSTABLE": exit_codes.BELOW_THRESHOLD, "FAILURE": exit_codes.FAILED,
    "ABORTED": exit_codes.FAILED, "NOT_BUILT": exit_codes.FAILED,
}


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


# Which jobs take a remote-trigger token (Build Token Root), and which one. The entry job
# (pull) takes the *entry* token (PUSHTUNE_ENTRY_TOKEN at install; none when unset, so only the
# poll, a push notification or a Jenkins user starts it): the token people and git hooks may
# hold. Train and notify take the *chain* token (PUSHTUNE_TRIGGER_TOKEN, the
# pushtune-trigger-token credential), bound only inside the tweak and monitor builds, which
# start them. Every other job takes none (Build Token Root answers 404), so no token starts
# classify (the job with the git credential), tweak, monitor, deploy or retrain.
ENTRY_STEPS = ("pull",)
CHAIN_TOKEN_STEPS = ("train", "notify")
TOKEN_STEPS = ENTRY_STEPS + CHAIN_TOKEN_STEPS


def token_jobs(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [f"{prefix}-{step}" for step in TOKEN_STEPS]


def job_path(name: str) -> str:
    """The URL path of a job, in folders too: `a/b` is job/a/job/b (core: Items.getCanonicalName
    and AbstractItem.getUrl, one `job/NAME/` per level of an ItemGroup)."""
    return "/".join(f"job/{quote(part, safe='')}" for part in name.split("/"))


# --- label expressions --------------------------------------------------------------------------
#
# Jenkins' own grammar (jenkinsci/jenkins core/src/main/antlr4/hudson/model/labels/
# LabelExpressionLexer.g4 and LabelExpressionParser.g4, unchanged at jenkins-2.568.2):
#
#   expr  : term1 EOF                    term4 : term5 ( '&&' term5 )*
#   term1 : term2 ( '<->' term2 )*       term5 : term6 | '!' term6
#   term2 : term3 ( '->' term3 )?        term6 : '(' term1 ')' | ATOM | STRINGLITERAL
#   term3 : term4 ( '||' term4 )*
#
# An ATOM is a run of characters other than & | ! < > ( ) space tab " ' (a '-' belongs to it
# unless a '>' follows); a STRINGLITERAL is "…" with \b \t \n \f \r \" \' \\ escapes. Only space
# and tab separate tokens. `!!a` and `a -> b -> c` are syntax errors there, and so here.
# Stricter than Jenkins: no control characters (a label expression is one line) and no braces,
# which Jenkins Job Builder would expand as template variables ({name} becomes the project name).

_ATOM_STOP = set("&|!<>() \t\"'")
_OPERATORS = (("<->", "IFF"), ("->", "IMPLIES"), ("&&", "AND"), ("||", "OR"), ("!", "NOT"),
              ("(", "LPAREN"), (")", "RPAREN"))
_ESCAPES = set("btnfr\"'\\")


def _label_tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) for each token; raises ValueError on a character no token takes."""
    tokens, i = [], 0
    while i < len(text):
        char = text[i]
        if char in " \t":
            i += 1
            continue
        operator = next(((s, kind) for s, kind in _OPERATORS if text.startswith(s, i)), None)
        if operator:
            tokens.append((operator[1], operator[0], i))
            i += len(operator[0])
        elif char == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                if text[j] == "\\":
                    if j + 1 >= len(text) or text[j + 1] not in _ESCAPES:
                        raise ValueError(f"bad escape in the quoted label at column {j + 1}")
                    j += 1
                j += 1
            if j >= len(text):
                raise ValueError(f"the quoted label at column {i + 1} has no closing quote")
            if j == i + 1:
                raise ValueError(f'empty quoted label "" at column {i + 1}')
            tokens.append(("STRING", text[i:j + 1], i))
            i = j + 1
        elif char not in _ATOM_STOP and not text.startswith("->", i):
            j = i
            while j < len(text) and text[j] not in _ATOM_STOP and not text.startswith("->", j):
                j += 1
            tokens.append(("ATOM", text[i:j], i))
            i = j
        else:
            what = "'<' that does not start '<->'" if char == "<" else (
                f"single {char!r} (and is &&, or is ||)" if char in "&|" else repr(char))
            raise ValueError(f"unexpected {what} at column {i + 1}")
    return tokens


class _LabelParser:
    """A recursive-descent recogniser of Jenkins' label expression grammar (above)."""

    def __init__(self, tokens: list[tuple[str, str, int]]):
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def fail(self, expected: str) -> None:
        if self.pos < len(self.tokens):
            _, text, column = self.tokens[self.pos]
            raise ValueError(f"expected {expected} at column {column + 1}, found {text!r}")
        raise ValueError(f"expected {expected} at the end")

    def take(self, kind: str) -> bool:
        if self.peek() == kind:
            self.pos += 1
            return True
        return False

    def expr(self) -> None:
        self.term1()
        if self.peek() is not None:
            self.fail("an operator (&&, ||, ->, <->) or the end")

    def term1(self) -> None:
        self.term2()
        while self.take("IFF"):
            self.term2()

    def term2(self) -> None:
        self.term3()
        if self.take("IMPLIES"):
            self.term3()
            if self.peek() == "IMPLIES":
                self.fail("parentheses around a chained '->' (Jenkins does not chain it)")

    def term3(self) -> None:
        self.term4()
        while self.take("OR"):
            self.term4()

    def term4(self) -> None:
        self.term5()
        while self.take("AND"):
            self.term5()

    def term5(self) -> None:
        self.take("NOT")
        self.term6()

    def term6(self) -> None:
        if self.take("LPAREN"):
            self.term1()
            if not self.take("RPAREN"):
                self.fail("')'")
        elif not (self.take("ATOM") or self.take("STRING")):
            self.fail("a label" if self.peek() != "NOT" else "a label or '(' after '!' (write !(!a), not !!a)")


def check_label(expression: str | None) -> str:
    """The label expression, stripped, if Jenkins would parse it; else a one-line UserError."""
    text = (expression or "").strip(" \t")
    if not text:
        raise UserError("the label expression is empty: give the agents' label, e.g. --label pushtune")
    try:
        bad = next((c for c in text if ord(c) < 32 or ord(c) == 127 or c in "{}"), None)
        if bad is not None:
            raise ValueError("braces would be expanded by Jenkins Job Builder" if bad in "{}"
                             else "it must be one line, without control characters")
        _LabelParser(_label_tokens(text)).expr()
    except ValueError as exc:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise UserError(f"not a Jenkins label expression: {shown!r}: {exc}") from None
    return text


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


def _project_documents(jobs_dir: Path) -> list:
    try:
        documents = yaml.safe_load((jobs_dir / "project.yaml").read_text(encoding="utf-8"))
        project = documents[0]["project"]
    except (OSError, yaml.YAMLError, LookupError, TypeError) as exc:
        raise UserError(f"cannot read {jobs_dir / 'project.yaml'}: {str(exc).strip().splitlines()[-1]}") from None
    if not isinstance(project, dict):
        raise UserError(f"{jobs_dir / 'project.yaml'}: the first document is not a `- project:` mapping")
    return documents


def render_jobs(repo_url: str | None = None, branch: str | None = None,
                jobs_dir: Path = JOBS_DIR, label: str | None = None) -> dict[str, str]:
    """The chain's job XML by job name, rendered by Jenkins Job Builder from `jobs_dir`.

    `repo_url`, `branch` and `label` (the agents' label expression, JJB `node:`) replace the
    values in project.yaml; the label in effect is checked against Jenkins' grammar either way.
    No Jenkins is contacted: with no plugin list JJB writes the current plugins' formats.
    """
    try:
        with warnings.catch_warnings():  # JJB's own import of pkg_resources (setuptools 67 to 81 warn)
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            # heavy library: Jenkins Job Builder (0.25 s to import), only when jobs are rendered
            from jenkins_jobs.config import JJBConfig
            from jenkins_jobs.errors import JenkinsJobsException
            from jenkins_jobs.loader import load_files
            from jenkins_jobs.registry import ModuleRegistry
            from jenkins_jobs.roots import Roots
            from jenkins_jobs.xml_config import XmlJobGenerator
    except ImportError as exc:  # JJB 6.5.0 imports pkg_resources, gone from setuptools 82 on
        hint = " (pip install 'setuptools<82')" if exc.name == "pkg_resources" else ""
        raise UserError(f"Jenkins Job Builder cannot be loaded: {exc}{hint}") from None

    documents = _project_documents(jobs_dir)
    project = documents[0]["project"]
    if label is None and "label" not in project:
        raise UserError(f"{jobs_dir / 'project.yaml'} has no `label` (the agents' label expression, "
                        f"e.g. label: {DEFAULT_LABEL}); add it or give --label")
    overrides = {k: v for k, v in (("repo-url", repo_url), ("branch", branch)) if v}
    value = project.get("label") if label is None else label
    overrides["label"] = check_label(None if value is None else str(value))
    project.update(overrides)
    sources: list = [jobs_dir / "pushtune.yaml",
                     io.StringIO(yaml.safe_dump(documents, sort_keys=False))]
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


def write_secret(path: Path, secret: str) -> Path:
    """Write `secret` to `path`, replaced whole (never half-written), mode 0644 in a directory
    only its owner may enter.

    Compose mounts a file secret with the host file's owner and mode, and the agent reads it as
    uid 1000, rarely the operator's uid: so the file must be readable by all, and the directory
    is what keeps the host's other users out. A directory they may enter is refused.
    """
    path = Path(path)
    try:
        directory_mode = path.parent.stat().st_mode
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    if directory_mode & 0o077:
        raise UserError(f"{path.parent} is open to other users (mode {directory_mode & 0o777:o}): "
                        f"chmod 700 {path.parent} first (the secret file is readable by all, 0644, "
                        f"so the agent's uid 1000 can read it in its container)")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(descriptor, 0o644)  # whatever the umask
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(secret + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    return path


def with_auth_token(xml: str, token: str | None) -> str:
    """The job XML with <authToken> set (None: removed), for the Build Token Root trigger URL.

    Used only on the way to the controller, so the token is never in a file we write.
    """
    root = ET.fromstring(xml)
    element = root.find("authToken")
    if token is None:
        if element is not None:
            root.remove(element)
    else:
        if element is None:
            element = ET.SubElement(root, "authToken")
        element.text = token
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def with_trigger_tokens(jobs: Mapping[str, str], chain_token: str, entry_token: str | None = None,
                        prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """The chain token on train and notify, the entry token (if any) on pull, none elsewhere."""
    tokens: dict[str, str | None] = {f"{prefix}-{step}": chain_token for step in CHAIN_TOKEN_STEPS}
    tokens.update({f"{prefix}-{step}": entry_token for step in ENTRY_STEPS})
    return {name: with_auth_token(xml, tokens.get(name)) for name, xml in jobs.items()}


# --- talking to a controller --------------------------------------------------------------------


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


@dataclass
class JenkinsSettings:
    """Where the controller is and how to authenticate; secrets stay out of repr()."""

    url: str
    user: str | None = None
    api_token: str | None = field(default=None, repr=False)
    trigger_token: str | None = field(default=None, repr=False)
    entry_token: str | None = field(default=None, repr=False)  # only `install` uses it
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> JenkinsSettings:
        """The controller from the environment.

        PUSHTUNE_JENKINS_URL, when set, wins over JENKINS_URL: inside a build Jenkins sets
        JENKINS_URL to its root URL, the address people use (links in mails, BUILD_URL), which
        an agent may not reach: http://localhost:8080/ on an agent container is the agent
        itself. Agents set PUSHTUNE_JENKINS_URL to the address they reach the controller at
        (jenkins/docker-compose.yml: http://jenkins:8080/).
        """
        env = os.environ if env is None else env
        name = "PUSHTUNE_JENKINS_URL" if (env.get("PUSHTUNE_JENKINS_URL") or "").strip() else "JENKINS_URL"
        url = (env.get(name) or "").strip()
        if not url:
            raise UserError("JENKINS_URL is not set (e.g. export JENKINS_URL=http://localhost:8080/)")
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port that is not a number from 0 to 65535 raises
        except ValueError as exc:  # `http://[::1`, `http://host:99999/`
            raise UserError(f"{name} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"{name} must be an http(s) URL, not {_without_userinfo(url)!r}")
        user = env.get("JENKINS_USER") or None
        api_token = env.get("JENKINS_API_TOKEN") or None
        if bool(user) != bool(api_token):
            raise UserError("set both JENKINS_USER and JENKINS_API_TOKEN, or neither")
        return cls(url=url, user=user, api_token=api_token,
                   trigger_token=env.get("PUSHTUNE_TRIGGER_TOKEN") or None,
                   entry_token=env.get("PUSHTUNE_ENTRY_TOKEN") or None, timeout=timeout)

    @property
    def display_url(self) -> str:
        return _without_userinfo(self.url)

    def secrets(self) -> list[str]:
        values = [self.api_token, self.trigger_token, self.entry_token, urlsplit(self.url).password]
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
            status = exc.response.status_code if exc.response is not None else "?"
            raise UserError(f"{what}: Jenkins at {url} answered HTTP {status}") from None
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

    def agent_secret(self, agent: str) -> str:
        """The secret inbound agent `agent` connects with (its JNLP MAC).

        core: SlaveComputer.doJenkinsAgentJnlp serves computer/NAME/jenkins-agent.jnlp in plain
        text to a user with Agent/Connect (EncryptedSlaveAgentJnlpFile); its first
        application-desc argument is `it.jnlpMac` (SlaveComputer/jenkins-agent.jnlp.jelly).
        """
        what = f"agent {agent}"
        response = self._call(what, self._get, f"computer/{quote(agent, safe='')}/jenkins-agent.jnlp")
        try:
            root = ET.fromstring(response.content)
        except ET.ParseError:
            raise UserError(f"{what}: Jenkins at {self.settings.display_url} answered with something "
                            "other than the agent's JNLP file (is it an inbound agent?)") from None
        arguments = [a.text or "" for a in root.findall("./application-desc/argument")]
        secret = arguments[0].strip() if arguments else ""
        if not re.fullmatch(r"[0-9a-f]{32,}", secret):
            raise UserError(f"{what}: its JNLP file holds no agent secret (is it an inbound agent?)")
        return secret

    def install(self, jobs: Mapping[str, str]) -> list[tuple[str, str]]:
        """Create or update each job; returns (name, "created" | "updated")."""
        done = []
        for name, xml in jobs.items():
            existed = self._call(f"job {name}", self.server.job_exists, name)
            self._call(f"install job {name}", self.server.upsert_job, name, xml)
            if ET.fromstring(xml).find("authToken") is not None:
                self._resave(name, ET.fromstring(xml).findtext("description") or "")
            done.append((name, "updated" if existed else "created"))
        return done

    def _resave(self, job: str, description: str) -> None:
        """Have Jenkins write the job's config itself, so its <authToken> is stored encrypted.

        createItem and POST config.xml keep the posted XML as written (AbstractItem.updateByXml);
        since core 2.541 the token is a Secret (BuildAuthorizationToken.ConverterImpl.fromString
        marks a plaintext one, ItemListenerImpl reports it as old data on every start) and only
        a save() writes Secret.getEncryptedValue(). POST submitDescription with the description
        the job already has is such a save (AbstractItem.doSubmitDescription -> setDescription ->
        save()), and changes nothing else.
        """
        what = f"store the trigger token of {job} encrypted"
        response = self._post(what, f"{job_path(job)}/submitDescription", {"description": description}, crumb=True)
        if response.status_code >= 400:
            raise UserError(f"{what}: Jenkins at {self.settings.display_url} answered HTTP {response.status_code}")

    def stored_token_is_plaintext(self, job: str, token: str | None) -> bool:
        """Whether the job's stored config.xml still holds `token` as written (a core older
        than 2.541 keeps it so: its BuildAuthorizationToken is a plain String)."""
        if not token:
            return False
        xml = self._call(f"job {job}", self.server.get_job_config, job)
        return ET.fromstring(xml).findtext("authToken") == token

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
            "GET", f"{self.server.server}{job_path(job)}/api/json?tree=property[parameterDefinitions[name]]"))
        return any(p.get("parameterDefinitions") for p in json.loads(info).get("property") or [])

    def _post(self, what: str, path: str, form: Mapping[str, str], crumb: bool) -> requests.Response:
        """POST `form` in the body, without following redirects: a 303 to an existing queue item
        is an answer.

        In the body, not the query string: the trigger token and the parameters then stay out of
        access logs and proxies' URLs. Jenkins reads both alike (BuildAuthorizationToken
        .checkPermission and ParameterDefinition.createValue use req.getParameter, which is the
        query or an application/x-www-form-urlencoded body; Build Token Root's `job` is a
        @QueryParameter, resolved the same way). python-jenkins' own requests follow redirects,
        so this sends through its session.
        """
        server = self.server
        request = requests.Request("POST", server.server + path, data=dict(form))
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
        says which it is, and no job token is sent: the user's Job/Build is enough, and a token
        that is not this job's would be refused (BuildAuthorizationToken.checkPermission: a
        token given must match; pull and train/notify have different ones). With only the
        token, Build Token Root's `buildByToken` URL, which needs no Jenkins user but cannot read
        the job, so `buildWithParameters` is tried first and `build` after its 400.
        """
        params = {k: str(v) for k, v in (params or {}).items()}
        token = self.settings.trigger_token
        what = f"trigger {job}"
        if self.settings.user or not token:
            endpoint = "buildWithParameters" if params or self.takes_parameters(job) else "build"
            response = self._post(what, f"{job_path(job)}/{endpoint}", params, crumb=True)
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
            # Build Token Root since 151.va_e52fe3215fc likewise (BuildRootAction
            # .handleScheduleResult: sendRedirect(SC_SEE_OTHER, contextPath + "/" + item.getUrl()))
            return Queued(queue_id, already_queued=True)
        if code == 404:
            raise UserError(f"{what}: not found on Jenkins at {url} (HTTP 404; with only "
                            "PUSHTUNE_TRIGGER_TOKEN, also when the job takes no trigger token)")
        if code == 403 and not self.settings.user and self.settings.trigger_token:
            # BuildRootAction: a wrong token (BuildAuthorizationToken.checkPermission) or a queue
            # that refused the item (handleScheduleResult: !isAccepted() -> forbidden())
            raise UserError(f"{what}: Jenkins at {url} refused it (HTTP 403): a wrong "
                            "PUSHTUNE_TRIGGER_TOKEN, or the queue refused the build")
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
        path = f"{job_path(job)}/{number}/logText/progressiveText"
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
                                  f"({self.settings.display_url}{job_path(job)}/{number}/)")
            time.sleep(poll)

    def last_builds(self, jobs: list[str]) -> list[dict]:
        """Per job: its last build's number, result and start time, or why there is none."""
        rows: list[dict] = []
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
