"""`pushtune jenkins install|trigger|status` against a local HTTP server that speaks the few
Jenkins endpoints python-jenkins uses (crumbs, basic auth, jobs, queue, builds, progressive
console, Build Token Root), run in a thread on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

USER, API_TOKEN, TRIGGER_TOKEN = "robot", "api-0f9e8d7c6b5a", "trig-1a2b3c4d5e6f"
ENTRY_TOKEN = "entry-7c6d5e4f3a2b"  # the entry job's (pull's) token: the one people hold
PASSWORD = "pw-9z8y7x"


def pushtune(home: Path, *args: str, env: dict | None = None, timeout: float = 120):
    """Run the pushtune CLI in a subprocess, as a user (or a Jenkins job) would."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "BUILD_", "PUSHTUNE_"))}
    full.update({"PUSHTUNE_HOME": str(home), "PYTHONPATH": str(ROOT)}, **(env or {}))
    return subprocess.run([sys.executable, "-m", "jobs", *map(str, args)], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Build:
    number: int
    params: dict
    chunks: list[str]
    result: str
    shown: int = 0  # how many chunks the progressive console has revealed

    @property
    def text(self) -> str:
        return "".join(self.chunks[: self.shown])

    @property
    def building(self) -> bool:
        return self.shown < len(self.chunks)


@dataclass
class FakeJenkins:
    """State of the fake controller; `handler` serves it as core and Build Token Root do."""

    user: str | None = USER
    api_token: str | None = API_TOKEN
    password: str = PASSWORD  # a real password: crumbs are needed, tied to the session
    delay: float = 0.0  # seconds before answering anything: a hung controller
    result: str = "SUCCESS"
    never_finishes: bool = False
    jobs: dict[str, dict] = field(default_factory=dict)  # name -> {"config": xml, "builds": [...]}
    queue: dict[int, dict] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, query)
    forms: list[dict] = field(default_factory=list)  # the form body of each request, in order
    responses: list[int] = field(default_factory=list)  # status codes, in order
    crumb_missing: list[str] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)
    url: str = ""
    root_url: str | None = None  # JenkinsLocationConfiguration's URL; None = not configured
    agents: dict[str, str] = field(default_factory=dict)  # inbound agent name -> its secret

    refuse_queue: bool = False  # Queue.schedule2 not accepted (a QueueDecisionHandler said no)

    def auth_token_of(self, job: str) -> str | None:
        """The token as Jenkins compares it: the stored text, decrypted when it is a Secret."""
        node = ET.fromstring(self.jobs[job]["config"]).find("authToken")
        if node is None:
            return None
        return decrypt(node.text or "")

    def stored_auth_token(self, job: str) -> str | None:
        """<authToken> as it is in $JENKINS_HOME/jobs/NAME/config.xml."""
        return ET.fromstring(self.jobs[job]["config"]).findtext("authToken")

    def definitions_of(self, job: str) -> list[dict] | None:
        """The job's parameter definitions ({name, default, choices}); None when it has none."""
        root = ET.fromstring(self.jobs[job]["config"])
        definitions = root.find(".//hudson.model.ParametersDefinitionProperty/parameterDefinitions")
        if definitions is None or len(definitions) == 0:
            return None
        found = []
        for d in definitions:
            choices = [c.text or "" for c in d.findall("./choices/a/string")]
            if d.tag == "hudson.model.ChoiceParameterDefinition":
                # core ChoiceParameterDefinition.getDefaultParameterValue: choices.getFirst()
                found.append({"name": d.findtext("name"), "default": choices[0], "choices": choices})
            else:
                found.append({"name": d.findtext("name"), "default": d.findtext("defaultValue") or "",
                              "choices": None})
        return found

    def parameters_of(self, job: str) -> dict[str, str] | None:
        """name -> default of the job's parameter definitions; None when it has none."""
        definitions = self.definitions_of(job)
        return None if definitions is None else {d["name"]: d["default"] for d in definitions}

    def values_for(self, job: str, query: dict) -> dict[str, str]:
        """ParametersDefinitionProperty.buildWithParameters: each definition's createValue(req),
        SimpleParameterDefinition: the request's value or the default; a choice that is not one
        of the choices raises IllegalArgumentException (ChoiceParameterDefinition.checkValue)."""
        values = {}
        for d in self.definitions_of(job) or []:
            value = query.get(d["name"], d["default"])
            if d["choices"] is not None and value not in d["choices"]:
                raise ValueError(f"Illegal choice for parameter {d['name']}: {value}")
            values[d["name"]] = value
        return values

    def schedule(self, job: str, params: dict) -> tuple[int, bool]:
        """Queue.schedule2: (queue id, created). An item of the same job with the same
        parameters that has not started yet is returned instead of a new one."""
        for queue_id, item in self.queue.items():
            if item["job"] == job and item["params"] == params and item["polls"] < 2:
                return queue_id, False
        builds = self.jobs[job]["builds"]
        number = len(builds) + 1
        chunks = ["Started by remote host\n", f"+ pushtune step {params}\n", "working ...\n"]
        chunks.append(f"Finished: {self.result}\n")
        if self.never_finishes:
            chunks += ["still working\n"] * 10_000
        builds.append(Build(number, params, chunks, self.result))
        queue_id = 100 + len(self.queue)
        self.queue[queue_id] = {"job": job, "number": number, "polls": 0, "params": params}
        return queue_id, True


def encrypt(plain: str) -> str:
    """Secret.getEncryptedValue's shape: `{base64}` (here not really encrypted, only marked)."""
    return "{" + base64.b64encode(b"enc:" + plain.encode()).decode() + "}"


def decrypt(stored: str) -> str:
    """Secret.decrypt of `{...}`, else the text itself (BuildAuthorizationToken.ConverterImpl
    .fromString: a value that does not decrypt is taken as a plaintext token)."""
    if stored.startswith("{") and stored.endswith("}"):
        data = base64.b64decode(stored[1:-1])
        if data.startswith(b"enc:"):
            return data[4:].decode()
    return stored


def split_job_path(segments: list[str]) -> tuple[str | None, list[str]]:
    """job/a/job/b/rest -> ("a/b", rest): one job/NAME per folder level (AbstractItem.getUrl)."""
    names = []
    while len(segments) >= 2 and segments[0] == "job":
        names.append(segments[1])
        segments = segments[2:]
    return ("/".join(names) or None), segments


def make_handler(state: FakeJenkins):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, code: int, body: str | bytes = b"", headers: dict | None = None,
                  content_type: str = "application/json"):
            data = body.encode() if isinstance(body, str) else body
            state.responses.append(code)
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str):
            return self._send(code, f"<html><body><h2>HTTP ERROR {code}</h2><p>{message}</p></body></html>",
                              content_type="text/html")

        def _login(self) -> str:
            """"anonymous", "api-token", "password" or "invalid" (from Basic auth)."""
            header = self.headers.get("Authorization")
            if not header:
                return "anonymous"
            for kind, secret in (("api-token", state.api_token), ("password", state.password)):
                expected = base64.b64encode(f"{state.user}:{secret}".encode()).decode()
                if header == f"Basic {expected}":
                    return kind
            return "invalid"

        def _session(self) -> str | None:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            return cookie["JSESSIONID"].value if "JSESSIONID" in cookie else None

        def _queued(self, queue_id: int, created: bool):
            # core ParametersDefinitionProperty.buildWithParameters and Build Token Root's
            # BuildRootAction.handleScheduleResult: 201 to a new item, 303 to one already waiting,
            # Location = req.getContextPath() + '/' + item.getUrl(): a path, no scheme or host
            return self._send(201 if created else 303, "", {"Location": f"/queue/item/{queue_id}/"})

        def _build_token_root(self, action: str, query: dict, login: str):
            # jenkinsci/build-token-root-plugin, BuildRootAction.project(): no such job, or a
            # job without an authToken, is 404 ("prefer not to leak information")
            job = query.get("job", "")
            if job not in state.jobs or not state.auth_token_of(job):
                return self._error(404, "Not Found")
            # jenkinsci/jenkins, hudson/model/BuildAuthorizationToken.checkPermission: a wrong
            # token is denied; no token falls back to the caller's Item.BUILD (anonymous: none)
            token = query.get("token")
            if token is not None and token != state.auth_token_of(job):
                return self._error(403, "Invalid token provided")
            if token is None and login == "anonymous":
                return self._error(403, "anonymous is missing the Job/Build permission")
            definitions = state.parameters_of(job)
            # BuildRootAction.doBuild / doBuildWithParameters: the wrong kind is a 400
            if action == "build" and definitions is not None:
                return self._error(400, "Use /buildByToken/buildWithParameters for this job since it takes parameters")
            if action == "buildWithParameters" and definitions is None:
                return self._error(400, "Use /buildByToken/build for this job since it takes no parameters")
            try:
                params = state.values_for(job, query)  # d.createValue(req), as core does
            except ValueError as exc:  # an uncaught IllegalArgumentException: Jenkins' error page
                return self._error(500, str(exc))
            # BuildRootAction.handleScheduleResult (since 151.va_e52fe3215fc): not accepted ->
            # HttpResponses.forbidden(); created -> 201, else 303, both to the queue item
            if state.refuse_queue:
                return self._error(403, "Forbidden")
            return self._queued(*state.schedule(job, params))

        def _build(self, name: str, action: str, query: dict):
            token = state.auth_token_of(name)
            # jenkinsci/jenkins, hudson/model/BuildAuthorizationToken.checkPermission: a token
            # given must match; without one a logged-in user's Item.BUILD is enough
            if token and "token" in query and query["token"] != token:
                return self._error(403, "Invalid token provided")
            definitions = state.parameters_of(name)
            if action == "build":
                if definitions is not None:
                    # jenkins/model/ParameterizedJobMixIn.doBuild -> hudson/model/
                    # ParametersDefinitionProperty._doBuild -> req.getSubmittedForm(): 400
                    return self._error(400, "Nothing is submitted")
                # ParameterizedJobMixIn.doBuild: 201 to the item, new or existing
                # ("TODO JENKINS-66105 use SC_SEE_OTHER if !ScheduleResult.created")
                return self._queued(state.schedule(name, {})[0], True)
            if definitions is None:
                # ParameterizedJobMixIn.doBuildWithParameters since 2.524 (jenkinsci/jenkins
                # 521ecfdbfc, #10954): HttpResponses.errorWithoutStack(SC_BAD_REQUEST,
                # NAME + " is not parameterized"); before, an IllegalStateException (500)
                return self._error(400, f"{name} is not parameterized")
            # ParametersDefinitionProperty.buildWithParameters: each definition's value from the
            # request or its default; 201 to a new item, 303 to an existing one
            try:
                params = state.values_for(name, query)
            except ValueError as exc:
                return self._error(500, str(exc))
            return self._queued(*state.schedule(name, params))

        def _handle(self, method: str):
            if state.delay:
                time.sleep(state.delay)
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            form = {}
            if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                # req.getParameter reads the query and a form body alike (servlet API)
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            state.requests.append((method, path, query))
            state.forms.append(form)
            query = {**query, **form}
            segments = [s for s in path.split("/") if s]
            login = self._login() if state.user else "api-token"

            if login == "invalid":  # BasicHeaderProcessor: wrong credentials are a 401 everywhere
                return self._send(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="Jenkins"'})
            if segments[:1] == ["buildByToken"] and len(segments) == 2 and method == "POST":
                # an UnprotectedRootAction, and exempt from crumbs (BuildRootActionCrumbExclusion)
                return self._build_token_root(segments[1], query, login)
            if login == "anonymous":  # no anonymous read: Jenkins answers 403, not 401
                return self._error(403, "Authentication required")
            if segments == ["crumbIssuer", "api", "json"]:
                # hudson/security/csrf/DefaultCrumbIssuer.issueCrumb: the crumb hashes the user
                # and the web session, so it is only valid with the session cookie
                session = self._session() or f"s{len(state.sessions) + 1}"
                state.sessions.add(session)
                return self._send(200, json.dumps({"crumbRequestField": "Jenkins-Crumb", "crumb": f"c-{session}"}),
                                  {"Set-Cookie": f"JSESSIONID={session}; Path=/"})
            # hudson/security/csrf/CrumbFilter.doFilter: a POST needs a valid crumb, except
            # with an API token (jenkins/security/ApiCrumbExclusion)
            if method == "POST" and login != "api-token":
                session = self._session()
                if session not in state.sessions or self.headers.get("Jenkins-Crumb") != f"c-{session}":
                    state.crumb_missing.append(path)
                    return self._error(403, "No valid crumb was included in the request")
            if segments == ["api", "json"]:
                # jenkins/model/Jenkins.getConfiguredRootUrl, exported as "url": null if unset
                return self._send(200, json.dumps({"_class": "hudson.model.Hudson", "url": state.root_url}))
            if segments == ["me", "api", "json"]:
                return self._send(200, json.dumps({"id": state.user or "anonymous"}))
            if segments == ["createItem"] and method == "POST":
                name = query["name"]
                if name in state.jobs:
                    return self._send(400, "A job already exists with the name")
                state.jobs[name] = {"config": body.decode(), "builds": []}
                return self._send(200)
            if segments[:1] == ["computer"] and segments[2:] == ["jenkins-agent.jnlp"] and method == "GET":
                # hudson/slaves/SlaveComputer.doJenkinsAgentJnlp -> EncryptedSlaveAgentJnlpFile:
                # plain text to a user with Agent/Connect, rendered by SlaveComputer/
                # jenkins-agent.jnlp.jelly (secret, name, -webSocket, -workDir ..., -url ROOT);
                # no such agent (or the built-in node, not a SlaveComputer): 404
                secret = state.agents.get(segments[1])
                if secret is None:
                    return self._send(404, "Not Found", content_type="text/html")
                arguments = [secret, segments[1], "-webSocket", "-workDir", "/home/jenkins/agent",
                             "-internalDir", "remoting", "-url", state.url]
                body = "<jnlp><application-desc>" + "".join(
                    f"<argument>{a}</argument>" for a in arguments) + "</application-desc></jnlp>"
                return self._send(200, body, content_type="application/x-java-jnlp-file")
            if segments[:2] == ["queue", "item"]:
                item = state.queue.get(int(segments[2]))
                if item is None:
                    return self._send(404)
                item["polls"] += 1
                if item["polls"] < 2:
                    waiting = {"id": int(segments[2]), "why": "Waiting for next available executor"}
                    return self._send(200, json.dumps(waiting))
                number = item["number"]
                return self._send(200, json.dumps({"id": int(segments[2]), "executable": {
                    "number": number, "url": f"{state.url}job/{item['job']}/{number}/"}}))
            job_name, rest = split_job_path(segments)
            if job_name not in state.jobs or not rest:
                return self._send(404, "Not Found", content_type="text/html")
            job = state.jobs[job_name]
            segments = ["job", job_name, *rest]
            if rest == ["submitDescription"] and method == "POST":
                # AbstractItem.doSubmitDescription -> setDescription -> save(): Jenkins writes the
                # config itself, and BuildAuthorizationToken.ConverterImpl.toString writes the
                # token as Secret.getEncryptedValue() (since 2.541)
                root = ET.fromstring(job["config"])
                description = root.find("description")
                if description is None:
                    description = ET.SubElement(root, "description")
                description.text = query.get("description", "")
                token = root.find("authToken")
                if token is not None:
                    token.text = encrypt(decrypt(token.text or ""))
                job["config"] = ET.tostring(root, encoding="unicode")
                return self._send(302, "", {"Location": "."})
            if rest == ["api", "json"]:
                builds = job["builds"]
                last = None
                if builds:
                    last = {"number": builds[-1].number, "url": f"{state.url}job/{segments[1]}/{builds[-1].number}/"}
                definitions = state.parameters_of(segments[1])
                prop = [{"_class": "hudson.model.ParametersDefinitionProperty",
                         "parameterDefinitions": [{"name": n} for n in definitions]}] if definitions else []
                return self._send(200, json.dumps({"name": segments[1], "lastBuild": last, "property": prop}))
            if rest == ["config.xml"]:
                if method == "POST":
                    job["config"] = body.decode()
                    return self._send(200)
                return self._send(200, job["config"], content_type="application/xml")
            if rest in (["build"], ["buildWithParameters"]) and method == "POST":
                return self._build(segments[1], rest[0], query)
            if rest[0].isdigit() and int(rest[0]) <= len(job["builds"]):
                build = job["builds"][int(rest[0]) - 1]
                if rest[1:] == ["api", "json"]:
                    return self._send(200, json.dumps({
                        "number": build.number, "building": build.building,
                        "result": None if build.building else build.result,
                        "timestamp": 1_700_000_000_000, "url": f"{state.url}job/{segments[1]}/{build.number}/"}))
                if rest[1:] == ["consoleText"]:
                    return self._send(200, build.text, content_type="text/plain")
                if rest[1:] == ["logText", "progressiveText"]:
                    start = int(query.get("start", 0))
                    build.shown = min(build.shown + 1, len(build.chunks))
                    text = build.text.encode()
                    headers = {"X-Text-Size": str(len(text))}
                    if build.building:
                        headers["X-More-Data"] = "true"
                    return self._send(200, text[start:], headers, content_type="text/plain")
            return self._send(404, "Not Found", content_type="text/html")

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

    return Handler


@pytest.fixture
def fake_jenkins():
    state = FakeJenkins()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    state.url = state.root_url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def env_for(state: FakeJenkins, **extra: str) -> dict:
    return {"JENKINS_URL": state.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": API_TOKEN,
            "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN, "PUSHTUNE_ENTRY_TOKEN": ENTRY_TOKEN, **extra}


def assert_no_secret(result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushtune: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_install_creates_then_updates_the_six_jobs_with_crumbs(tmp_path, fake_jenkins):
    first = pushtune(tmp_path, "jenkins", "install", "--repo-url", "file:///srv/models.git",
                     env=env_for(fake_jenkins))
    assert first.returncode == 0, first.stderr
    names = ["pushtune-pull", "pushtune-classify", "pushtune-train", "pushtune-tweak",
             "pushtune-notify", "pushtune-monitor", "pushtune-deploy", "pushtune-retrain"]
    assert sorted(first.stdout.split()) == sorted(["created"] * len(names) + names)
    assert set(fake_jenkins.jobs) == set(names)
    pull = ET.fromstring(fake_jenkins.jobs["pushtune-pull"]["config"])
    assert pull.findtext(".//hudson.plugins.git.UserRemoteConfig/url") == "file:///srv/models.git"
    assert fake_jenkins.crumb_missing == []
    assert any(p == "/createItem" for m, p, q in fake_jenkins.requests if m == "POST")

    second = pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins))
    assert second.returncode == 0, second.stderr
    assert second.stdout.split().count("updated") == len(names)
    assert any(p == "/job/pushtune-train/config.xml" for m, p, q in fake_jenkins.requests if m == "POST")
    pull = ET.fromstring(fake_jenkins.jobs["pushtune-pull"]["config"])
    assert pull.findtext(".//hudson.plugins.git.UserRemoteConfig/url") != "file:///srv/models.git"
    assert_no_secret(first, API_TOKEN)
    assert_no_secret(second, API_TOKEN)


def test_install_always_sets_the_trigger_token_or_refuses(tmp_path, fake_jenkins):
    result = pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    tokens = {name: fake_jenkins.auth_token_of(name) for name in fake_jenkins.jobs}
    assert {name: token for name, token in tokens.items() if token} == {
        "pushtune-pull": ENTRY_TOKEN, "pushtune-train": TRIGGER_TOKEN, "pushtune-notify": TRIGGER_TOKEN}
    # re-saved by Jenkins after the install: the stored form is the encrypted one, not as posted
    for name in TOKEN_JOBS:
        stored = fake_jenkins.stored_auth_token(name)
        assert stored.startswith("{") and TRIGGER_TOKEN not in stored and ENTRY_TOKEN not in stored
    assert "WARNING" not in result.stderr
    assert_no_secret(result, TRIGGER_TOKEN, ENTRY_TOKEN, API_TOKEN)

    # without an entry token the entry job takes none: only the poll, a push or a user start it
    no_entry = {k: v for k, v in env_for(fake_jenkins).items() if k != "PUSHTUNE_ENTRY_TOKEN"}
    assert pushtune(tmp_path, "jenkins", "install", env=no_entry).returncode == 0
    assert fake_jenkins.auth_token_of("pushtune-pull") is None
    assert fake_jenkins.auth_token_of("pushtune-train") == TRIGGER_TOKEN
    same = pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins, PUSHTUNE_ENTRY_TOKEN=TRIGGER_TOKEN))
    assert_one_line_error(same, "must differ")
    legacy = pushtune(tmp_path, "jenkins", "install", "--with-trigger-token", env=env_for(fake_jenkins))
    assert legacy.returncode == 0, legacy.stderr

    fake_jenkins.requests.clear()
    no_token = {k: v for k, v in env_for(fake_jenkins).items() if k != "PUSHTUNE_TRIGGER_TOKEN"}
    missing = pushtune(tmp_path, "jenkins", "install", env=no_token)
    assert_one_line_error(missing, "PUSHTUNE_TRIGGER_TOKEN", "tweak and monitor")
    assert fake_jenkins.requests == []  # refused before anything reaches the controller


def test_install_warns_loudly_when_jenkins_has_no_root_url(tmp_path, fake_jenkins):
    configured = pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins))
    assert configured.returncode == 0 and "WARNING" not in configured.stderr, configured.stderr
    fake_jenkins.root_url = None
    result = pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "no root URL" in result.stderr and "BUILD_URL" in result.stderr


TOKEN_ONLY, WITH_PASSWORD = "token only", "user + password"
TOKEN_JOBS = ["pushtune-pull", "pushtune-train", "pushtune-notify"]  # the only jobs with a token


def trigger_env(state: FakeJenkins, how: str, job: str = "") -> dict:
    if how == TOKEN_ONLY:  # pull takes the entry token, train and notify the chain's
        token = ENTRY_TOKEN if job == "pushtune-pull" else TRIGGER_TOKEN
        return {"JENKINS_URL": state.url, "PUSHTUNE_TRIGGER_TOKEN": token}
    if how == WITH_PASSWORD:  # logged in with a password: crumbs are needed, tied to the session
        return {"JENKINS_URL": state.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": PASSWORD}
    return env_for(state)


@pytest.mark.parametrize("how", ["user + API token", TOKEN_ONLY, WITH_PASSWORD])
@pytest.mark.parametrize("job, args, expected", [
    ("pushtune-pull", [], {"BRANCH": "DEFAULT"}),  # parameters, none given
    ("pushtune-train", ["--param", "RUN_ID=12"], {"RUN_ID": "12"}),
    ("pushtune-monitor", [], {}),  # no parameters at all
])
def test_every_trigger_path_queues_the_build(tmp_path, fake_jenkins, how, job, args, expected):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    fake_jenkins.requests.clear()
    fake_jenkins.responses.clear()
    result = pushtune(tmp_path, "jenkins", "trigger", job, *args, env=trigger_env(fake_jenkins, how, job))
    if how == TOKEN_ONLY and job not in TOKEN_JOBS:  # no <authToken>: Build Token Root's 404
        assert_one_line_error(result, "404", "takes no trigger token")
        assert fake_jenkins.jobs[job]["builds"] == []
        return
    assert result.returncode == 0, result.stderr
    assert f"queued {job} (queue item" in result.stderr
    [build] = fake_jenkins.jobs[job]["builds"]
    defaults = fake_jenkins.parameters_of(job) or {}
    assert build.params == {k: defaults[k] if v == "DEFAULT" else v for k, v in expected.items()} | {
        k: v for k, v in defaults.items() if k not in expected}
    assert 201 in fake_jenkins.responses and fake_jenkins.crumb_missing == []
    assert_no_secret(result, TRIGGER_TOKEN, ENTRY_TOKEN, API_TOKEN, PASSWORD)


@pytest.mark.parametrize("how", ["user + API token", TOKEN_ONLY])
def test_a_build_already_in_the_queue_is_not_an_error(tmp_path, fake_jenkins, how):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    env = trigger_env(fake_jenkins, how)
    first = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=5", env=env)
    assert first.returncode == 0, first.stderr
    again = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=5", env=env)
    assert again.returncode == 0, again.stderr
    assert "already queued" in again.stderr
    assert len(fake_jenkins.jobs["pushtune-train"]["builds"]) == 1
    assert fake_jenkins.responses[-1] == 303  # core and Build Token Root alike; answered, not followed


T = TRIGGER_TOKEN
# What Jenkins answers, request by request, in this order, after `pushtune jenkins install`:
# (who, path, form, status, Location, source). "api" is a user with an API token (no crumb
# needed), "anon" nobody. Core = jenkinsci/jenkins at jenkins-2.568.2; BTR = Build Token Root
# 365.v717f8685a_09e (jenkinsci/build-token-root-plugin BuildRootAction.java). The queue numbers
# count from 100 in the fake.
ANSWERS = [
    ("api", "job/pushtune-pull/build", {}, 400, None,
     "core ParameterizedJobMixIn.doBuild -> ParametersDefinitionProperty._doBuild: getSubmittedForm() fails"),
    ("api", "job/pushtune-monitor/buildWithParameters", {}, 400, None,
     "core ParameterizedJobMixIn.doBuildWithParameters: errorWithoutStack(SC_BAD_REQUEST, '... is not "
     "parameterized') since 2.524 (521ecfdbfc)"),
    ("api", "job/pushtune-monitor/build", {}, 201, "/queue/item/100/",
     "core ParameterizedJobMixIn.doBuild: sendRedirect(SC_CREATED, contextPath + '/' + item.getUrl())"),
    ("api", "job/pushtune-train/buildWithParameters", {"RUN_ID": "1", "token": "wrong"}, 403, None,
     "core BuildAuthorizationToken.checkPermission: a token given must match"),
    ("api", "job/pushtune-train/buildWithParameters", {"RUN_ID": "1"}, 201, "/queue/item/101/",
     "core ParametersDefinitionProperty.buildWithParameters: 201 to a new item"),
    ("api", "job/pushtune-train/buildWithParameters", {"RUN_ID": "1"}, 303, "/queue/item/101/",
     "core ParametersDefinitionProperty.buildWithParameters: !scheduleResult.isCreated() -> SC_SEE_OTHER"),
    ("api", "job/pushtune-pull/buildWithParameters", {"RUNTIME": "local"}, 500, None,
     "core ChoiceParameterDefinition.checkValue: IllegalArgumentException 'Illegal choice for parameter'"),
    ("api", "job/pushtune-pull/buildWithParameters", {}, 201, "/queue/item/102/",
     "core ChoiceParameterDefinition.getDefaultParameterValue: choices.getFirst() (checked below)"),
    ("anon", "buildByToken/build", {"job": "pushtune-pull", "token": ENTRY_TOKEN}, 400, None,
     "BTR doBuild: 'Use /buildByToken/buildWithParameters for this job since it takes parameters'"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-pull", "token": T}, 403, None,
     "BTR project() -> BuildAuthorizationToken.checkPermission: the chain's token is not pull's"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-train", "RUN_ID": "2", "token": ENTRY_TOKEN},
     403, None, "likewise: the entry token is not train's"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-monitor", "token": T}, 404, None,
     "BTR project(): a job without authToken is notFound() (only pull, train, notify have one)"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-classify", "token": T}, 404, None,
     "BTR project(): likewise: classify, with the git credential, takes no token"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-train", "token": "x"}, 403, None,
     "BTR project() -> core BuildAuthorizationToken.checkPermission: 'Invalid token provided'"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-train", "RUN_ID": "2", "token": T}, 201,
     "/queue/item/103/", "BTR handleScheduleResult: isCreated() -> SC_CREATED, Location contextPath/queue/item/N/"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-train", "RUN_ID": "2", "token": T}, 303,
     "/queue/item/103/", "BTR handleScheduleResult (since 151.va_e52fe3215fc): sendRedirect(SC_SEE_OTHER, item)"),
    ("anon", "buildByToken/buildWithParameters", {"job": "pushtune-pull", "RUNTIME": "local",
                                                  "token": ENTRY_TOKEN}, 500,
     None, "BTR doBuildWithParameters -> d.createValue(req): the choice check as in core"),
    ("anon", "job/pushtune-train/buildWithParameters", {"RUN_ID": "4", "token": T}, 403, None,
     "core: no Overall/Read for anonymous (allowAnonymousRead: false), so the job URL is refused"),
    ("anon", "queue/item/103/api/json", None, 403, None,
     "core: the queue item needs Overall/Read; BTR: 'Clients without the READ permission won't be "
     "allowed to see the build'"),
]


def test_the_fake_answers_as_jenkins_does(tmp_path, fake_jenkins):
    """Each answer the client relies on, compared with what the cited source gives."""
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    url = fake_jenkins.url
    api, anonymous = requests.Session(), requests.Session()
    api.auth = (USER, API_TOKEN)
    for who, path, form, status, location, source in ANSWERS:
        session = api if who == "api" else anonymous
        if form is None:
            answer = session.get(url + path, allow_redirects=False)
        else:
            answer = session.post(url + path, data=form, allow_redirects=False)
        assert (answer.status_code, answer.headers.get("Location")) == (status, location), (who, path, source)
    pull = fake_jenkins.jobs["pushtune-pull"]["builds"]
    assert [b.params["RUNTIME"] for b in pull] == ["docker"]  # project.yaml runtimes: [docker]
    # BTR handleScheduleResult: a schedule the queue does not accept -> HttpResponses.forbidden()
    fake_jenkins.refuse_queue = True
    refused = anonymous.post(f"{url}buildByToken/buildWithParameters",
                             data={"job": "pushtune-train", "RUN_ID": "9", "token": T}, allow_redirects=False)
    assert refused.status_code == 403
    # crumbs: needed with a password, and only with the session they were issued in
    # (DefaultCrumbIssuer hashes the user and the web session)
    login = requests.Session()
    login.auth = (USER, PASSWORD)
    crumb = login.get(f"{url}crumbIssuer/api/json").json()["crumb"]
    stranger = requests.Session()
    stranger.auth = (USER, PASSWORD)
    assert stranger.post(f"{url}job/pushtune-notify/buildWithParameters", data={"RUN_ID": "1"},
                         headers={"Jenkins-Crumb": crumb}).status_code == 403
    assert login.post(f"{url}job/pushtune-notify/buildWithParameters", data={"RUN_ID": "1"},
                      headers={"Jenkins-Crumb": crumb}, allow_redirects=False).status_code == 201


def test_trigger_wait_streams_the_console_once_and_exits_with_the_result(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=7",
                      "--wait", "--poll", "0.05", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    build = fake_jenkins.jobs["pushtune-train"]["builds"][0]
    assert build.params == {"RUN_ID": "7"}
    assert result.stdout == "".join(build.chunks)  # every chunk printed, none twice
    assert "pushtune-train #1: SUCCESS" in result.stderr
    progressive = [q for m, p, q in fake_jenkins.requests if p.endswith("/logText/progressiveText")]
    assert [int(q["start"]) for q in progressive][0] == 0 and len(progressive) >= 4
    assert int(progressive[-1]["start"]) > 0

    fake_jenkins.result = "UNSTABLE"
    unstable = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=8",
                        "--wait", "--poll", "0.05", env=env_for(fake_jenkins))
    assert unstable.returncode == 3, unstable.stderr
    assert "Finished: UNSTABLE" in unstable.stdout


def test_trigger_with_the_job_token_only_uses_build_token_root(tmp_path, fake_jenkins):
    install_env = env_for(fake_jenkins, PUSHTUNE_TRIGGER_TOKEN=TRIGGER_TOKEN)
    assert pushtune(tmp_path, "jenkins", "install", "--with-trigger-token", env=install_env).returncode == 0
    token_only = {"JENKINS_URL": fake_jenkins.url, "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN}
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=3", env=token_only)
    assert result.returncode == 0, result.stderr
    assert "queued pushtune-train (queue item" in result.stderr
    method, path, query = fake_jenkins.requests[-1]
    assert (method, path, query) == ("POST", "/buildByToken/buildWithParameters", {})  # nothing in the URL
    assert fake_jenkins.forms[-1] == {"job": "pushtune-train", "RUN_ID": "3", "token": TRIGGER_TOKEN}
    assert_no_secret(result, TRIGGER_TOKEN)

    wrong = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train",
                     env={**token_only, "PUSHTUNE_TRIGGER_TOKEN": "not-the-token"})
    assert_one_line_error(wrong, "403")
    assert_no_secret(wrong, "not-the-token")


def test_wrong_credentials_give_one_line_without_the_token(tmp_path, fake_jenkins):
    result = pushtune(tmp_path, "jenkins", "status",
                      env=env_for(fake_jenkins, JENKINS_API_TOKEN="wrong-secret-123"))
    assert_one_line_error(result, "refused the credentials", "401")
    assert_no_secret(result, "wrong-secret-123")


def test_missing_job_is_a_404_line(tmp_path, fake_jenkins):
    result = pushtune(tmp_path, "jenkins", "trigger", "no-such-job", env=env_for(fake_jenkins))
    assert_one_line_error(result, "no-such-job", "404")


def test_unreachable_jenkins(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = pushtune(tmp_path, "jenkins", "status",
                      env={"JENKINS_URL": f"http://127.0.0.1:{port}/", "JENKINS_USER": USER,
                           "JENKINS_API_TOKEN": API_TOKEN})
    assert_one_line_error(result, "cannot reach Jenkins")
    assert_no_secret(result, API_TOKEN)


def test_a_controller_that_does_not_answer_in_time(tmp_path, fake_jenkins):
    fake_jenkins.delay = 3.0
    result = pushtune(tmp_path, "jenkins", "status", "--http-timeout", "0.5", env=env_for(fake_jenkins))
    assert_one_line_error(result, "did not answer within 0.5 s")


def test_wait_gives_up_cleanly_after_timeout(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    fake_jenkins.never_finishes = True
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--wait", "--timeout", "1.5",
                      "--poll", "0.05", env=env_for(fake_jenkins))
    assert result.returncode == 124, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pushtune: error: pushtune-train #1 is still running")
    assert "Started by remote host" in result.stdout


def test_missing_settings_are_user_errors(tmp_path, fake_jenkins):
    assert_one_line_error(pushtune(tmp_path, "jenkins", "status"), "JENKINS_URL")
    half = pushtune(tmp_path, "jenkins", "status", env={"JENKINS_URL": fake_jenkins.url, "JENKINS_USER": USER})
    assert_one_line_error(half, "JENKINS_API_TOKEN")
    assert_one_line_error(pushtune(tmp_path, "jenkins", "status", env={"JENKINS_URL": "ftp://x"}), "http")


def test_status_lists_the_chain(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    fake_jenkins.result = "UNSTABLE"
    assert pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--wait", "--poll", "0.05",
                    env=env_for(fake_jenkins)).returncode == 3
    del fake_jenkins.jobs["pushtune-monitor"]
    result = pushtune(tmp_path, "jenkins", "status", "--json", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    rows = {row["job"]: row for row in json.loads(result.stdout)}
    assert rows["pushtune-train"]["number"] == 1 and rows["pushtune-train"]["result"] == "UNSTABLE"
    assert rows["pushtune-pull"]["result"] == "never built"
    assert rows["pushtune-monitor"]["result"] == "not installed"
    table = pushtune(tmp_path, "jenkins", "status", env=env_for(fake_jenkins))
    assert table.returncode == 0 and "UNSTABLE" in table.stdout


@pytest.mark.parametrize("url, fragment", [
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://localhost:65536/", "Port out of range"),
    (f"http://{USER}:{API_TOKEN}@jenkins.local:99999/", "Port out of range"),
])
def test_a_malformed_jenkins_url_is_one_line(tmp_path, url, fragment):
    result = pushtune(tmp_path, "jenkins", "status", env={"JENKINS_URL": url})
    assert_one_line_error(result, "JENKINS_URL", fragment)
    assert_no_secret(result, API_TOKEN)


def test_status_prints_job_names_as_they_are(tmp_path, fake_jenkins):
    result = pushtune(tmp_path, "jenkins", "status", "--prefix", "[/x]", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    assert "[/x]-train" in result.stdout and "not installed" in result.stdout


AGENT_SECRET = "5f1e" * 16  # a JNLP MAC is 64 hex digits


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_agent_secret_is_written_for_the_agent_in_a_private_directory_and_never_printed(tmp_path, fake_jenkins):
    fake_jenkins.agents["pushtune-agent-1"] = AGENT_SECRET
    target = tmp_path / "secrets" / "agent_1_secret"
    target.parent.mkdir(mode=0o700)
    target.write_text("stale")  # an old secret is replaced whole
    target.chmod(0o644)
    env = {"JENKINS_URL": fake_jenkins.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": PASSWORD}
    result = pushtune(tmp_path, "jenkins", "agent-secret", "pushtune-agent-1", target, env=env)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == AGENT_SECRET + "\n"
    # readable by the agent's uid 1000 (compose keeps the host file's owner and mode), while the
    # directory keeps the host's other users out (test_jenkins_compose: a container reads it)
    assert target.stat().st_mode & 0o777 == 0o644
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert_no_secret(result, AGENT_SECRET, PASSWORD)
    assert "pushtune-agent-1" in result.stderr and result.stdout == ""
    assert ("GET", "/computer/pushtune-agent-1/jenkins-agent.jnlp", {}) in fake_jenkins.requests
    assert sorted(p.name for p in target.parent.iterdir()) == ["agent_1_secret"]  # no temporary left


def test_agent_secret_refuses_a_directory_other_users_may_enter(tmp_path, fake_jenkins):
    fake_jenkins.agents["pushtune-agent-1"] = AGENT_SECRET
    target = tmp_path / "secrets" / "agent_1_secret"
    target.parent.mkdir()
    target.parent.chmod(0o755)  # as git checks out jenkins/secrets
    result = pushtune(tmp_path, "jenkins", "agent-secret", "pushtune-agent-1", target, env=env_for(fake_jenkins))
    assert_one_line_error(result, f"chmod 700 {target.parent}")
    assert_no_secret(result, AGENT_SECRET, PASSWORD)
    assert list(target.parent.iterdir()) == []


def test_agent_secret_of_an_unknown_agent_or_without_login_is_one_line(tmp_path, fake_jenkins):
    target = tmp_path / "agent_secret"
    unknown = pushtune(tmp_path, "jenkins", "agent-secret", "no-such-agent", target, env=env_for(fake_jenkins))
    assert_one_line_error(unknown, "agent no-such-agent", "404")
    fake_jenkins.agents["pushtune-agent-1"] = AGENT_SECRET
    anonymous = pushtune(tmp_path, "jenkins", "agent-secret", "pushtune-agent-1", target,
                         env={"JENKINS_URL": fake_jenkins.url})
    assert_one_line_error(anonymous, "403")
    assert not target.exists()


def test_agent_secret_refuses_an_answer_without_a_secret(tmp_path, fake_jenkins):
    fake_jenkins.agents["odd"] = "not-a-mac"
    target = tmp_path / "agent_secret"
    result = pushtune(tmp_path, "jenkins", "agent-secret", "odd", target, env=env_for(fake_jenkins))
    assert_one_line_error(result, "no agent secret")
    assert not target.exists()


def test_pushtune_jenkins_url_wins_over_the_root_url_jenkins_gives_builds(tmp_path, fake_jenkins):
    """On an agent container the build's JENKINS_URL (the root URL, e.g. http://localhost:8080/)
    is the agent itself; PUSHTUNE_JENKINS_URL is how the agent reaches the controller."""
    from jobs.ci.jenkins import JenkinsSettings
    from jobs.errors import UserError

    dead = f"http://127.0.0.1:{free_port()}/"
    settings = JenkinsSettings.from_env({"JENKINS_URL": dead, "PUSHTUNE_JENKINS_URL": fake_jenkins.url})
    assert settings.url == fake_jenkins.url
    assert JenkinsSettings.from_env({"JENKINS_URL": dead, "PUSHTUNE_JENKINS_URL": " "}).url == dead
    with pytest.raises(UserError, match="PUSHTUNE_JENKINS_URL must be an http"):
        JenkinsSettings.from_env({"JENKINS_URL": dead, "PUSHTUNE_JENKINS_URL": "jenkins:8080"})

    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    in_a_build = {"JENKINS_URL": dead, "PUSHTUNE_JENKINS_URL": fake_jenkins.url,
                  "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN}
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=3", env=in_a_build)
    assert result.returncode == 0, result.stderr
    assert [b.params for b in fake_jenkins.jobs["pushtune-train"]["builds"]] == [{"RUN_ID": "3"}]


def test_install_with_a_label_ties_every_job_to_it(tmp_path, fake_jenkins):
    result = pushtune(tmp_path, "jenkins", "install", "--label", "pushtune && gpu", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    nodes = {name: (ET.fromstring(job["config"]).findtext("assignedNode"),
                    ET.fromstring(job["config"]).findtext("canRoam")) for name, job in fake_jenkins.jobs.items()}
    assert set(nodes.values()) == {("pushtune && gpu", "false")} and len(nodes) == 8  # deploy and retrain too
    fake_jenkins.requests.clear()
    bad = pushtune(tmp_path, "jenkins", "install", "--label", "pushtune gpu", env=env_for(fake_jenkins))
    assert_one_line_error(bad, "label expression")
    assert fake_jenkins.requests == []  # refused before anything reaches the controller


def test_token_only_wait_is_refused_before_anything_is_queued(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    fake_jenkins.requests.clear()
    token_only = {"JENKINS_URL": fake_jenkins.url, "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN}
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=1", "--wait",
                      env=token_only)
    assert_one_line_error(result, "--wait needs JENKINS_USER")
    assert fake_jenkins.requests == [] and fake_jenkins.jobs["pushtune-train"]["builds"] == []


def test_wait_follows_the_queue_item_a_303_points_to(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    first = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=6", env=env_for(fake_jenkins))
    assert first.returncode == 0, first.stderr
    again = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=6", "--wait",
                     "--poll", "0.05", env=env_for(fake_jenkins))
    assert again.returncode == 0, again.stderr
    assert "already queued" in again.stderr and "queue item 100" in again.stderr
    assert "pushtune-train #1: SUCCESS" in again.stderr
    assert len(fake_jenkins.jobs["pushtune-train"]["builds"]) == 1
    assert ("GET", "/queue/item/100/api/json", {"depth": "0"}) in fake_jenkins.requests


def test_a_queue_that_refuses_the_build_is_one_line(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    fake_jenkins.refuse_queue = True
    token_only = {"JENKINS_URL": fake_jenkins.url, "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN}
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-train", "--param", "RUN_ID=1", env=token_only)
    assert_one_line_error(result, "403", "the queue refused the build")
    assert_no_secret(result, TRIGGER_TOKEN)


def test_a_job_inside_a_folder_is_triggered_and_followed_at_its_own_url(tmp_path, fake_jenkins):
    assert pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins)).returncode == 0
    fake_jenkins.jobs["team/pushtune-train"] = {"config": fake_jenkins.jobs["pushtune-train"]["config"], "builds": []}
    result = pushtune(tmp_path, "jenkins", "trigger", "team/pushtune-train", "--param", "RUN_ID=2", "--wait",
                      "--poll", "0.05", env=env_for(fake_jenkins))
    assert result.returncode == 0, result.stderr
    paths = [p for m, p, q in fake_jenkins.requests]
    assert "/job/team/job/pushtune-train/buildWithParameters" in paths
    assert any(p == "/job/team/job/pushtune-train/1/logText/progressiveText" for p in paths)
    assert [b.params for b in fake_jenkins.jobs["team/pushtune-train"]["builds"]] == [{"RUN_ID": "2"}]


JENKINS_MACRO = re.compile(r"\$([A-Za-z0-9_]+|\{[A-Za-z0-9_.]+\}|\$)")


def jenkins_expand(text: str, env: dict) -> str:
    """core Util.replaceMacro, which EnvVars.expand applies (Parameterized Trigger's
    FileBuildParameters expands the whole properties file with it): $$ is $, $X/${X} a variable,
    an unknown variable stays."""
    def one(match):
        key = match.group(1)
        if key == "$":
            return "$"
        return env.get(key.strip("{}"), match.group(0))
    return JENKINS_MACRO.sub(one, text)


def test_properties_survive_parameterized_triggers_variable_expansion(tmp_path):
    from jobs.steps import write_properties

    name = "models/a$HOME${USER}$$.py"
    target = tmp_path / "changed.properties"
    write_properties(target, {"MODEL_FILES": json.dumps([name])})
    text = jenkins_expand(target.read_text(encoding="latin-1"), {"HOME": "/root", "USER": "jenkins"})
    assert "$$HOME" in target.read_text(encoding="latin-1")
    value = text.split("=", 1)[1].strip()
    assert json.loads(value.replace("\\:", ":").replace("\\=", "=")) == [name]
