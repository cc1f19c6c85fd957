"""`pushtune jenkins install|trigger|status` against a local HTTP server that speaks the few
Jenkins endpoints python-jenkins uses (crumbs, basic auth, jobs, queue, builds, progressive
console, Build Token Root), run in a thread on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent

USER, API_TOKEN, TRIGGER_TOKEN = "robot", "api-0f9e8d7c6b5a", "trig-1a2b3c4d5e6f"


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
    """State of the fake controller; `handler` serves it."""

    user: str | None = USER
    api_token: str | None = API_TOKEN
    delay: float = 0.0  # seconds before answering anything: a hung controller
    result: str = "SUCCESS"
    never_finishes: bool = False
    jobs: dict[str, dict] = field(default_factory=dict)  # name -> {"config": xml, "builds": [...]}
    queue: dict[int, dict] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, query)
    crumb_missing: list[str] = field(default_factory=list)
    url: str = ""

    def auth_token_of(self, job: str) -> str | None:
        node = ET.fromstring(self.jobs[job]["config"]).find("authToken")
        return None if node is None else node.text

    def queue_build(self, job: str, params: dict) -> int:
        builds = self.jobs[job]["builds"]
        number = len(builds) + 1
        chunks = ["Started by remote host\n", f"+ pushtune step {params}\n", "working ...\n"]
        chunks.append(f"Finished: {self.result}\n")
        if self.never_finishes:
            chunks += ["still working\n"] * 10_000
        builds.append(Build(number, params, chunks, self.result))
        queue_id = 100 + len(self.queue)
        self.queue[queue_id] = {"job": job, "number": number, "polls": 0}
        return queue_id


def make_handler(state: FakeJenkins):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, code: int, body: str | bytes = b"", headers: dict | None = None,
                  content_type: str = "application/json"):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if state.user is None:
                return True
            expected = base64.b64encode(f"{state.user}:{state.api_token}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"

        def _handle(self, method: str):
            if state.delay:
                time.sleep(state.delay)
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append((method, path, query))
            segments = [s for s in path.split("/") if s]

            if segments[:1] == ["buildByToken"]:  # Build Token Root: the token alone is enough
                job = query.get("job", "")
                if job not in state.jobs:
                    return self._send(404, "no such job")
                if not query.get("token") or query.get("token") != state.auth_token_of(job):
                    return self._send(403, "Invalid token provided")
                params = {k: v for k, v in query.items() if k not in ("job", "token")}
                queue_id = state.queue_build(job, params)
                return self._send(201, "", {"Location": f"{state.url}queue/item/{queue_id}/"})
            if not self._authorized():
                return self._send(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="Jenkins"'})
            if segments == ["crumbIssuer", "api", "json"]:
                return self._send(200, json.dumps({"crumbRequestField": "Jenkins-Crumb", "crumb": "c-42"}))
            if method == "POST" and self.headers.get("Jenkins-Crumb") != "c-42":
                state.crumb_missing.append(path)
                return self._send(403, "No valid crumb was included in the request")
            if segments == ["me", "api", "json"]:
                return self._send(200, json.dumps({"id": state.user or "anonymous"}))
            if segments == ["createItem"] and method == "POST":
                name = query["name"]
                if name in state.jobs:
                    return self._send(400, "A job already exists with the name")
                state.jobs[name] = {"config": body.decode(), "builds": []}
                return self._send(200)
            if segments[:2] == ["queue", "item"]:
                item = state.queue.get(int(segments[2]))
                if item is None:
                    return self._send(404)
                item["polls"] += 1
                if item["polls"] < 2:
                    return self._send(200, json.dumps({"id": int(segments[2]), "why": "Waiting for next available executor"}))
                number = item["number"]
                return self._send(200, json.dumps({"id": int(segments[2]), "executable": {
                    "number": number, "url": f"{state.url}job/{item['job']}/{number}/"}}))
            if segments[:1] != ["job"] or len(segments) < 3 or segments[1] not in state.jobs:
                return self._send(404, "Not Found", content_type="text/html")
            job = state.jobs[segments[1]]
            rest = segments[2:]
            if rest == ["api", "json"]:
                builds = job["builds"]
                last = {"number": builds[-1].number, "url": f"{state.url}job/{segments[1]}/{builds[-1].number}/"} if builds else None
                return self._send(200, json.dumps({"name": segments[1], "lastBuild": last}))
            if rest == ["config.xml"]:
                if method == "POST":
                    job["config"] = body.decode()
                    return self._send(200)
                return self._send(200, job["config"], content_type="application/xml")
            if rest[0] in ("build", "buildWithParameters") and method == "POST":
                token = state.auth_token_of(segments[1])
                if token and query.get("token") != token:
                    return self._send(403, "Invalid token")
                params = {k: v for k, v in query.items() if k != "token"}
                queue_id = state.queue_build(segments[1], params)
                return self._send(201, "", {"Location": f"{state.url}queue/item/{queue_id}/"})
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
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def env_for(state: FakeJenkins, **extra: str) -> dict:
    return {"JENKINS_URL": state.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": API_TOKEN, **extra}


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
             "pushtune-notify", "pushtune-monitor"]
    assert sorted(first.stdout.split()) == sorted(["created"] * 6 + names)
    assert set(fake_jenkins.jobs) == set(names)
    pull = ET.fromstring(fake_jenkins.jobs["pushtune-pull"]["config"])
    assert pull.findtext(".//hudson.model.StringParameterDefinition/defaultValue") == "file:///srv/models.git"
    assert fake_jenkins.crumb_missing == []
    assert any(p == "/createItem" for m, p, q in fake_jenkins.requests if m == "POST")

    second = pushtune(tmp_path, "jenkins", "install", env=env_for(fake_jenkins))
    assert second.returncode == 0, second.stderr
    assert second.stdout.split().count("updated") == 6
    assert any(p == "/job/pushtune-train/config.xml" for m, p, q in fake_jenkins.requests if m == "POST")
    pull = ET.fromstring(fake_jenkins.jobs["pushtune-pull"]["config"])
    assert pull.findtext(".//hudson.model.StringParameterDefinition/defaultValue") != "file:///srv/models.git"
    assert_no_secret(first, API_TOKEN)
    assert_no_secret(second, API_TOKEN)


def test_install_with_trigger_token_sets_it_on_the_controller_only(tmp_path, fake_jenkins):
    result = pushtune(tmp_path, "jenkins", "install", "--with-trigger-token",
                      env=env_for(fake_jenkins, PUSHTUNE_TRIGGER_TOKEN=TRIGGER_TOKEN))
    assert result.returncode == 0, result.stderr
    assert fake_jenkins.auth_token_of("pushtune-train") == TRIGGER_TOKEN
    assert_no_secret(result, TRIGGER_TOKEN, API_TOKEN)
    missing = pushtune(tmp_path, "jenkins", "install", "--with-trigger-token", env=env_for(fake_jenkins))
    assert_one_line_error(missing, "PUSHTUNE_TRIGGER_TOKEN")


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
    result = pushtune(tmp_path, "jenkins", "trigger", "pushtune-tweak", "--param", "RUN_ID=3", env=token_only)
    assert result.returncode == 0, result.stderr
    assert "queued pushtune-tweak (queue item" in result.stderr
    method, path, query = fake_jenkins.requests[-1]
    assert (method, path) == ("POST", "/buildByToken/buildWithParameters")
    assert query == {"job": "pushtune-tweak", "RUN_ID": "3", "token": TRIGGER_TOKEN}
    assert_no_secret(result, TRIGGER_TOKEN)

    wrong = pushtune(tmp_path, "jenkins", "trigger", "pushtune-tweak",
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
