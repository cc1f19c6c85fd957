"""Mail notifications against a real SMTP server on 127.0.0.1 (aiosmtpd), with real TLS and AUTH."""

from __future__ import annotations

import io
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from jinja2 import UndefinedError
from PIL import Image

from jobs.errors import UserError
from jobs.report.plot import FAIL_COLOR, PASS_COLOR, metric_plot_png
from jobs.store.run_store import RunStore
from notify import DeliveryError, EmailNotifier, load_settings, load_summary, notify_run
from notify.message import MAIL_TEMPLATE, TEMPLATES, html_context, render_html
from test_report import PAYLOAD, Page

ROOT = Path(__file__).resolve().parent.parent
USER = "ci-bot@example.com"
PASSWORD = "Tr0ub4dor&3-horse-battery"
OWNER = "owner@example.com"


# --- a real SMTP server -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1 (cert.pem is also the client's CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Received:
    message: EmailMessage
    rcpt_tos: list[str]
    tls: bool
    login: str | None


@dataclass
class Inbox:
    """aiosmtpd handler: keeps what arrives; refuses the first `refuse_rcpt` RCPTs with `reply`."""

    refuse_rcpt: int = 0
    reply: str = "451 4.3.0 mailbox busy, try again later"
    received: list[Received] = field(default_factory=list)
    rcpt_calls: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_calls += 1
        if self.rcpt_calls <= self.refuse_rcpt:
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if session.auth_data else None
        self.received.append(Received(
            message=message_from_bytes(envelope.original_content, policy=policy.default),
            rcpt_tos=list(envelope.rcpt_tos), tls=session.ssl is not None, login=login,
        ))
        return "250 OK"


def echoing_authenticator(server, session, envelope, mechanism, auth_data):
    """Accepts USER/PASSWORD; a refusal echoes what it got, as careless servers do."""
    login, password = auth_data.login.decode(), auth_data.password.decode()
    if (login, password) == (USER, PASSWORD):
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False,
                      message=f"535 5.7.8 bad credentials {login}:{password}")


@pytest.fixture
def smtp_server(certificate):
    """Start servers: `smtp_server(inbox, tls="starttls"|"ssl"|None, auth=True)` → port."""
    cert, key = certificate
    controllers: list[Controller] = []

    def start(inbox: Inbox, tls: str | None = "starttls", auth: bool = True) -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        kwargs: dict = {"server_hostname": "localhost"}
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif tls == "ssl":
            kwargs.update(ssl_context=context)
        if auth:
            # aiosmtpd only counts STARTTLS as TLS for AUTH; over implicit TLS the check must be off
            kwargs.update(authenticator=echoing_authenticator, auth_required=True,
                          auth_require_tls=tls == "starttls")
        port = free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def mail_env(certificate) -> dict[str, str]:
    """Settings for a STARTTLS+AUTH server; the port is filled in by each test."""
    return {
        "PUSHTUNE_SMTP_HOST": "127.0.0.1",
        "PUSHTUNE_SMTP_SECURITY": "starttls",
        "PUSHTUNE_SMTP_USER": USER,
        "PUSHTUNE_SMTP_PASSWORD": PASSWORD,
        "PUSHTUNE_SMTP_CA_FILE": str(certificate[0]),
        "PUSHTUNE_MAIL_FROM": "pushtune <pushtune@example.com>",
        "PUSHTUNE_MAIL_TO": OWNER,
        "PUSHTUNE_SMTP_TIMEOUT": "5",
        "PUSHTUNE_SMTP_RETRY_DELAY": "0.01",
    }


# --- runs in a real store -----------------------------------------------------------------------

WINNING_DIFF = """--- face_vgg16.py
+++ face_vgg16.py (attempt 3)
@@ -12,7 +12,7 @@
 model = build_model()
-model.compile(optimizer=Adam(learning_rate=1e-3), loss="categorical_crossentropy")
+model.compile(optimizer=Adam(learning_rate=5e-4), loss="categorical_crossentropy")
 model.fit(x, y, epochs=EPOCHS)  # </pre><b>not bold</b>
"""


def make_run(store: RunStore, tmp_path: Path, *, passed: bool) -> int:
    run_dir = tmp_path / "runs" / "1"
    run_id = store.create_run(
        model_path="/repo/models/face_vgg16.py", model_name="face_vgg16.py", model_sha256="ab" * 32,
        kind="image_classifier", framework="keras", git_commit="0123456789abcdef0123", metric="accuracy",
        mode="max", threshold=0.9, strategy="ladder", runtime="local", run_dir=str(run_dir),
        options={"jenkins_build_url": "http://jenkins.local/job/face/7/", "max_attempts": 3},
        status="passed" if passed else "below_threshold",
        stop_reason=None if passed else "attempt budget spent (3)",
    )
    values = [0.71, None, 0.93 if passed else 0.78]
    tweaks = [None, "epochs 10 → 20 <fast>", "learning_rate 0.001 → 0.0005"]
    errors = [None, "Traceback (most recent call last):\n  ...\nMemoryError: <out of memory>", None]
    for n, (value, tweak, error) in enumerate(zip(values, tweaks, errors, strict=True), start=1):
        store.add_attempt(
            run_id, status="failed" if error else "ok", tweak=tweak, tweaks=[t for t in tweaks if t],
            params={"epochs": 10 if n != 2 else 20, "learning_rate": 0.0005 if n == 3 else 0.001},
            source_sha256=f"{n}" * 64, config_key=f"key{n}", diff=WINNING_DIFF if n == 3 else "",
            dir=str(run_dir / f"attempt-{n}"), metric_value=value, metrics={"accuracy": value} if value else None,
            artifact_path=str(run_dir / f"attempt-{n}/output/model.keras") if value else None,
            artifact_sha256=f"{n}f" * 32 if value else None, error=error, seconds=40.0 + 30 * n,
        )
    store.update_run(run_id, best_attempt=3 if passed else 3, finished_at=time.time())
    return run_id


@pytest.fixture
def store(pushtune_home) -> RunStore:
    return RunStore.open()


def parts(message: EmailMessage) -> tuple[str, str, EmailMessage, EmailMessage]:
    """(text, html, related part, png part), checking the MIME structure on the way."""
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, png = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert png.get_content_type() == "image/png"
    return plain.get_content(), html_part.get_content(), related, png


# --- mail content -------------------------------------------------------------------------------


def test_success_mail_over_starttls_and_auth(store, tmp_path, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=True)
    settings = load_settings(env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, path=tmp_path / "none.ini")

    result = notify_run(store, run_id, settings=settings)

    assert result.sent and result.tries == 1
    (mail,) = inbox.received
    assert mail.tls and mail.login == USER and mail.rcpt_tos == [OWNER]
    message = mail.message
    assert message["Subject"] == f"[pushtune] face_vgg16.py: threshold met — accuracy 0.93 ≥ 0.90 (run {run_id})"
    text, html, related, png = parts(message)
    assert png.get_content().startswith(b"\x89PNG")
    assert f'src="cid:{png["Content-ID"].strip("<>")}"' in html

    # the attempts table, in both parts: the best row marked, the failed attempt's last error line
    assert "<td style" in html and html.count("<tr") >= 4
    assert "3 ★" in text and "learning_rate 0.001 → 0.0005" in text and "0.93" in text
    assert "failed: MemoryError: <out of memory>" in text
    assert "failed: MemoryError: &lt;out of memory&gt;" in html
    assert "epochs 10 → 20 &lt;fast&gt;" in html
    # best parameters, the winning diff, where the model is, the build
    assert 'learning_rate = 0.0005' in text
    assert "+model.compile(optimizer=Adam(learning_rate=5e-4)" in text
    assert "+model.compile(optimizer=Adam(learning_rate=5e-4), loss=&#34;categorical_crossentropy&#34;)" in html
    assert "&lt;/pre&gt;&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>not bold" not in html
    artifact = str(tmp_path / "runs/1/attempt-3/output/model.keras")
    assert artifact in text and artifact in html and "3f" * 32 in text
    assert '<a href="http://jenkins.local/job/face/7/">' in html
    assert "What to try next" not in text

    (row,) = store.notifications(run_id)
    assert (row["status"], row["channel"], row["recipients"], row["error"]) == ("sent", "email", [OWNER], None)


def test_below_threshold_mail_says_what_to_try_next(store, tmp_path, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=False)
    settings = load_settings(env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, path=tmp_path / "none.ini")

    result = notify_run(store, run_id, recipients=["dev@example.org", "lead@example.org"], settings=settings)

    assert result.sent
    (mail,) = inbox.received
    assert mail.rcpt_tos == ["dev@example.org", "lead@example.org"]
    assert mail.message["Subject"] == (
        f"[pushtune] face_vgg16.py: below threshold — best accuracy 0.78 < 0.90 after 3 attempts (run {run_id})"
    )
    text, html, _, png = parts(mail.message)
    assert png["Content-ID"].strip("<>") in html
    for body in (text, html):
        assert "What to try next" in body
        assert "--strategy optuna" in body and "--max-attempts" in body and "--threshold 0.78" in body
        assert "attempt budget spent (3)" in body


# --- escaping by construction: mail.html.j2 with autoescape ------------------------------------

HOSTILE_URL = f"http://jenkins.local/job/{PAYLOAD}/7/"


def make_hostile_run(store: RunStore, tmp_path: Path) -> int:
    """Every text a user controls holds PAYLOAD: the file name, the metric, the reason to stop, the
    --data option, the build URL, tweaks, an error, the diff, parameters, the artifact's path."""
    run_dir = tmp_path / "runs" / "1"
    run_id = store.create_run(
        model_path=f"/repo/{PAYLOAD}/m.py", model_name=f"m{PAYLOAD}.py", model_sha256="ab" * 32,
        kind=f"k{PAYLOAD}", framework="keras", metric=f"acc{PAYLOAD}", mode="max", threshold=0.9,
        strategy="diagnose", runtime="local", run_dir=str(run_dir),
        options={"jenkins_build_url": HOSTILE_URL, "data": f"/data/{PAYLOAD}", "max_attempts": 3},
        status="below_threshold", stop_reason=f"stop {PAYLOAD}",
    )
    diff = f"--- m.py\n+++ m.py (attempt 2)\n@@ -1 +1 @@\n-old {PAYLOAD}\n+new {PAYLOAD}\n context {PAYLOAD}\n"
    attempts = [
        {"status": "ok", "metric_value": 0.5},
        {"status": "ok", "metric_value": 0.8, "tweak": f"tweak {PAYLOAD}", "diff": diff,
         "params": {f"key {PAYLOAD}": f"value {PAYLOAD}"}, "artifact_path": f"/out/{PAYLOAD}/model.keras",
         "artifact_sha256": f"sha {PAYLOAD}"},
        {"status": "failed", "tweak": f"tweak 3 {PAYLOAD}", "log_tail": f"log {PAYLOAD}",
         "error": f"Traceback (most recent call last):\n  ...\nValueError: {PAYLOAD}"},
    ]
    for n, fields in enumerate(attempts, start=1):
        store.add_attempt(run_id, source_sha256=f"{n}" * 64, config_key=f"key{n}", dir=str(run_dir / f"attempt-{n}"),
                          seconds=10.0 * n, **fields)
    store.update_run(run_id, best_attempt=2, finished_at=time.time())
    return run_id


def test_user_text_is_escaped_everywhere_in_the_mail(store, tmp_path, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)
    run_id = make_hostile_run(store, tmp_path)
    settings = load_settings(env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, path=tmp_path / "none.ini")

    assert notify_run(store, run_id, settings=settings).sent
    (mail,) = inbox.received
    text, html, _, png = parts(mail.message)

    assert "<script" not in html and "alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in html
    parsed = Page(html)
    assert "script" not in parsed.tags and set(parsed.tags) <= {
        "html", "head", "meta", "title", "body", "div", "h2", "p", "img", "table", "tr", "th", "td", "a",
        "span", "code", "pre", "ul", "li"}
    shown = parsed.text
    for value in (f"m{PAYLOAD}.py", f"/repo/{PAYLOAD}/m.py", f"k{PAYLOAD} (keras)", f"acc{PAYLOAD} ≥ 0.90",
                  f"/out/{PAYLOAD}/model.keras", f"sha {PAYLOAD}", f"tweak {PAYLOAD}", f"tweak 3 {PAYLOAD}",
                  f"failed: ValueError: {PAYLOAD}", f"key {PAYLOAD}", json.dumps(f"value {PAYLOAD}"),
                  f"-old {PAYLOAD}", f"+new {PAYLOAD}", f" context {PAYLOAD}", f"stop {PAYLOAD}",
                  f"--data /data/{PAYLOAD}", "Best parameters (attempt 2)", f"acc{PAYLOAD} per attempt"):
        assert value in shown, value
    assert f"log {PAYLOAD}" not in shown  # the log tail is not part of the mail
    # attributes keep their quotes: the link goes where the store says, the alt text stays alt text
    assert ("a", "href", HOSTILE_URL) in parsed.attributes
    assert ("img", "alt", f"acc{PAYLOAD} per attempt") in parsed.attributes
    assert ("img", "src", f"cid:{png['Content-ID'].strip('<>')}") in parsed.attributes
    # the attempts table still has every attempt, in order
    assert shown.index("1(as pushed)") < shown.index(f"2 ★tweak {PAYLOAD}") < shown.index(f"3tweak 3 {PAYLOAD}")
    # the plain-text part is not HTML: it says the same things as they are
    assert f"m{PAYLOAD}.py" in text and f"+new {PAYLOAD}" in text and "&lt;" not in text


def test_a_missing_mail_template_variable_fails_loudly(store, tmp_path):
    run_id = make_run(store, tmp_path, passed=False)
    summary = load_summary(store, run_id)
    template = TEMPLATES.get_template(MAIL_TEMPLATE)
    context = html_context(summary, "plot.1@example.com")
    assert template.render(context) == render_html(summary, "plot.1@example.com")

    for missing in ("headline", "metric", "attempts", "best", "tips"):
        with pytest.raises(UndefinedError, match=missing):
            template.render({k: v for k, v in context.items() if k != missing})
    attempt = {k: v for k, v in context["attempts"][1].items() if k != "outcome"}
    with pytest.raises(UndefinedError, match="outcome"):
        template.render({**context, "attempts": [context["attempts"][0], attempt]})
    odd_line = {**context["best"], "diff": [{"kind": "sideways", "text": "?"}]}  # no style for it
    with pytest.raises(UndefinedError, match="sideways"):
        template.render({**context, "best": odd_line})


def test_the_mail_template_marks_nothing_safe():
    """Escaped by construction: nothing in the mail's template or module opts out of autoescape."""
    template = (ROOT / "notify/templates" / MAIL_TEMPLATE).read_text()
    module = (ROOT / "notify/message.py").read_text()
    assert TEMPLATES.autoescape is True and MAIL_TEMPLATE in TEMPLATES.list_templates()
    for opt_out in ("|safe", "| safe", "{% autoescape", "Markup"):
        assert opt_out not in template, opt_out
    assert "Markup" not in module and "|safe" not in module


# --- the chart ----------------------------------------------------------------------------------


def _pixels_near(png: bytes, hex_color: str, tolerance: int = 40) -> int:
    target = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    return int((np.abs(pixels - target) <= tolerance).all(axis=-1).sum())


def test_plot_marks_threshold_and_failed_attempts():
    ok = [{"n": 1, "status": "ok", "metric_value": 0.5}, {"n": 2, "status": "ok", "metric_value": 0.8}]
    with_failure = ok + [{"n": 3, "status": "failed", "metric_value": None}]

    clean, failing = metric_plot_png(ok, "accuracy", 0.9), metric_plot_png(with_failure, "accuracy", 0.9)

    assert Image.open(io.BytesIO(clean)).format == "PNG"
    assert _pixels_near(clean, PASS_COLOR) > 50  # the threshold line
    assert _pixels_near(clean, FAIL_COLOR) == 0
    assert _pixels_near(failing, FAIL_COLOR) > 20  # the × of attempt 3 (and its legend entry)
    assert metric_plot_png([with_failure[2]], "accuracy", 0.9).startswith(b"\x89PNG")  # nothing scored


# --- retries and failures -----------------------------------------------------------------------


def test_temporary_refusals_are_retried_until_accepted(store, tmp_path, smtp_server, mail_env):
    inbox = Inbox(refuse_rcpt=2)  # 451 on the first two connections, accepted on the third
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=True)
    settings = load_settings(env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, path=tmp_path / "none.ini")

    result = notify_run(store, run_id, settings=settings)

    assert result.sent and result.tries == 3
    assert inbox.rcpt_calls == 3 and len(inbox.received) == 1
    assert [r["status"] for r in store.notifications(run_id)] == ["sent"]


def test_permanent_refusal_is_not_retried(store, tmp_path, smtp_server, mail_env):
    inbox = Inbox(refuse_rcpt=99, reply="550 5.1.1 no such user here")
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=True)
    settings = load_settings(env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, path=tmp_path / "none.ini")

    result = notify_run(store, run_id, settings=settings, echo=None)

    assert not result.sent and result.tries == 1 and inbox.rcpt_calls == 1
    assert "550 5.1.1 no such user here" in result.error


class DroppingServer:
    """A listening socket that accepts each connection and closes it at once, counting them."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


def test_server_that_drops_connections_is_retried_then_recorded_failed(store, tmp_path, mail_env):
    server = DroppingServer()
    run_id = make_run(store, tmp_path, passed=True)
    env = {**mail_env, "PUSHTUNE_SMTP_PORT": str(server.port), "PUSHTUNE_SMTP_TRIES": "3"}
    settings = load_settings(env=env, path=tmp_path / "none.ini")
    printed: list[str] = []
    try:
        result = notify_run(store, run_id, settings=settings, echo=printed.append)
    finally:
        server.close()

    assert server.connections == 3
    assert not result.sent and result.tries == 3
    assert "after 3 tries" in result.error and "closed" in result.error
    (row,) = store.notifications(run_id)
    assert row["status"] == "failed" and row["error"] == result.error and row["recipients"] == [OWNER]
    assert printed == [f"mail for run {run_id} not sent: {result.error}"]
    assert store.get_run(run_id)["status"] == "passed"  # the run itself is untouched


def test_unverifiable_certificate_fails_without_retry(store, tmp_path, smtp_server, mail_env):
    port = smtp_server(Inbox(), tls="ssl")
    env = {**mail_env, "PUSHTUNE_SMTP_PORT": str(port), "PUSHTUNE_SMTP_SECURITY": "ssl"}
    run_id = make_run(store, tmp_path, passed=True)
    trusted = load_settings(env=env, path=tmp_path / "none.ini")
    untrusted = replace(trusted, ca_file=None)  # the system trust store does not know our cert

    assert notify_run(store, run_id, settings=trusted).sent  # implicit TLS works with the CA file
    result = notify_run(store, run_id, settings=untrusted, echo=None)

    assert not result.sent and result.tries == 1 and "certificate verify failed" in result.error


# --- secrets and bad settings -------------------------------------------------------------------


def _notify_cli(*args: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    """`python -m jobs notify …` as a user runs it (registering the command if the lead has not yet)."""
    shim = (
        "import sys, jobs.cli as cli\n"
        "if 'jobs.commands.notify' not in cli.COMMAND_MODULES:\n"
        "    cli.COMMAND_MODULES += ('jobs.commands.notify',)\n"
        "raise SystemExit(cli.main(sys.argv[1:]))\n"
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHTUNE_SMTP", "PUSHTUNE_MAIL"))}
    full_env.update(PUSHTUNE_HOME=str(home), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", shim, "notify", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_password_never_appears_in_output_store_or_errors(store, tmp_path, pushtune_home, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=True)
    wrong = "wr0ng-Secret-Pa55"
    env = {**mail_env, "PUSHTUNE_SMTP_PORT": str(port), "PUSHTUNE_SMTP_PASSWORD": wrong}

    completed = _notify_cli(str(run_id), "--strict", env=env, home=pushtune_home)
    with pytest.raises(DeliveryError) as raised:
        EmailNotifier(load_settings(env=env, path=tmp_path / "none.ini")).check([])

    assert completed.returncode == 1, completed.stderr
    assert "535" in completed.stderr and "***" in completed.stderr  # the server echoed it; we hid it
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "535" in str(raised.value) and wrong not in str(raised.value)
    assert wrong not in completed.stdout + completed.stderr
    (row,) = store.notifications(run_id)
    assert row["status"] == "failed" and wrong not in row["error"]
    for path in pushtune_home.rglob("*"):  # the database, its WAL, anything else written
        if path.is_file():
            assert wrong.encode() not in path.read_bytes(), path
    assert wrong not in repr(load_settings(env=env, path=tmp_path / "none.ini"))
    assert inbox.received == []


@pytest.mark.parametrize("override, expected", [
    ({"PUSHTUNE_SMTP_HOST": ""}, "no SMTP server"),
    ({"PUSHTUNE_SMTP_PORT": "smtp"}, "PUSHTUNE_SMTP_PORT must be a number"),
    ({"PUSHTUNE_SMTP_PORT": "70000"}, "PUSHTUNE_SMTP_PORT must be between"),
    ({"PUSHTUNE_SMTP_SECURITY": "tls"}, "PUSHTUNE_SMTP_SECURITY must be one of"),
    ({"PUSHTUNE_MAIL_TO": ""}, "no recipients"),
    ({"PUSHTUNE_MAIL_TO": "owner at example.com"}, "is not a mail address"),
    ({"PUSHTUNE_SMTP_HOST": "smtp.example.com", "PUSHTUNE_SMTP_SECURITY": "none"}, "unencrypted"),
])
def test_bad_settings_exit_2_with_one_line(pushtune_home, mail_env, override, expected):
    completed = _notify_cli("1", "--strict", env={**mail_env, "PUSHTUNE_SMTP_PORT": "2525", **override},
                            home=pushtune_home)

    assert completed.returncode == 2
    assert completed.stderr.startswith("pushtune: error: ") and expected in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and PASSWORD not in completed.stderr


@pytest.mark.parametrize("unset, line", [
    ("PUSHTUNE_SMTP_HOST", "no SMTP server configured: mail skipped (set PUSHTUNE_SMTP_HOST"),
    ("PUSHTUNE_MAIL_TO", "no recipients configured: mail skipped (pass --notify ADDR or set PUSHTUNE_MAIL_TO)"),
])
def test_mail_not_set_up_is_skipped_in_one_line_and_recorded_unless_strict(
        store, tmp_path, pushtune_home, mail_env, unset, line):
    run_id = make_run(store, tmp_path, passed=True)
    # what compose gives a chain without mail: an SMTP login whose password file is empty
    env = {**mail_env, unset: "", "PUSHTUNE_SMTP_PASSWORD": ""}

    skipped = _notify_cli(str(run_id), env=env, home=pushtune_home)
    strict = _notify_cli(str(run_id), "--strict", env=env, home=pushtune_home)
    unknown = _notify_cli("42", env=env, home=pushtune_home)
    bad = _notify_cli(str(run_id), env={**mail_env, "PUSHTUNE_SMTP_PORT": "smtp"}, home=pushtune_home)

    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stderr.startswith(f"pushtune: run {run_id}: {line}")
    assert len(skipped.stderr.strip().splitlines()) == 1 and skipped.stdout == ""
    rows = store.notifications(run_id)
    assert {(row["status"], row["error"][:3]) for row in rows} == {("skipped", "no ")}
    assert strict.returncode == 2 and strict.stderr.startswith("pushtune: error: no ")
    assert unknown.returncode == 2 and "no run 42" in unknown.stderr  # bad input is still an error
    # mail that is set up, but wrongly, is bad input: fix it
    assert bad.returncode == 2 and "PUSHTUNE_SMTP_PORT must be a number" in bad.stderr
    assert len(rows) == 1


def test_a_failed_delivery_is_one_line_recorded_and_exit_0_unless_strict(store, tmp_path, pushtune_home, mail_env):
    run_id = make_run(store, tmp_path, passed=True)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {**mail_env, "PUSHTUNE_SMTP_PORT": str(port), "PUSHTUNE_SMTP_TRIES": "1"}

    chain = _notify_cli(str(run_id), env=env, home=pushtune_home)
    strict = _notify_cli(str(run_id), "--strict", env=env, home=pushtune_home)

    assert chain.returncode == 0, chain.stderr
    assert chain.stderr.startswith(f"pushtune: mail for run {run_id} not sent: ")
    assert chain.stderr.rstrip().endswith("(recorded on the run; the build goes on: --strict would fail it)")
    assert len(chain.stderr.strip().splitlines()) == 1
    assert strict.returncode == 1 and len(strict.stderr.strip().splitlines()) == 1
    assert [row["status"] for row in store.notifications(run_id)] == ["failed", "failed"]


def test_unknown_run_and_missing_arguments_exit_2(pushtune_home, mail_env):
    unknown = _notify_cli("42", env=mail_env, home=pushtune_home)
    neither = _notify_cli(env=mail_env, home=pushtune_home)
    not_a_number = _notify_cli("latest", env=mail_env, home=pushtune_home)

    assert unknown.returncode == 2 and "no run 42" in unknown.stderr
    assert neither.returncode == 2 and "RUN_ID" in neither.stderr
    assert not_a_number.returncode == 2 and "invalid int value" in not_a_number.stderr
    for completed in (unknown, neither, not_a_number):
        assert len(completed.stderr.strip().splitlines()) == 1


def test_settings_from_notify_ini_with_environment_winning(tmp_path, certificate):
    ini = tmp_path / "notify.ini"
    ini.write_text(
        "[smtp]\nhost = mail.example.com\nport = 2587\nsecurity = starttls\nuser = bot@example.com\n"
        f"password = {PASSWORD}\ntries = 2\n[mail]\nto = a@example.com, b@example.com\n"
    )

    from_file = load_settings(env={}, path=ini)
    overridden = load_settings(env={"PUSHTUNE_SMTP_PORT": "465", "PUSHTUNE_SMTP_SECURITY": "ssl"}, path=ini)

    assert (from_file.host, from_file.port, from_file.tries) == ("mail.example.com", 2587, 2)
    assert from_file.recipients == ("a@example.com", "b@example.com")
    assert from_file.sender == "bot@example.com" and from_file.password == PASSWORD
    assert (overridden.port, overridden.security) == (465, "ssl")
    with pytest.raises(UserError, match="not a PEM certificate bundle"):
        load_settings(env={"PUSHTUNE_SMTP_CA_FILE": str(ini)}, path=ini)


# --- the CLI against the server -----------------------------------------------------------------


def test_cli_test_mode_checks_every_step(pushtune_home, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)

    completed = _notify_cli("--test", "--notify", "dev@example.org",
                            env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, home=pushtune_home)

    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert f"connected to 127.0.0.1:{port}" in out and "STARTTLS: TLSv1." in out
    assert f"AUTH as {USER}: accepted" in out and "sent '[pushtune] test mail' to dev@example.org" in out
    (mail,) = inbox.received
    assert mail.tls and mail.login == USER and mail.rcpt_tos == ["dev@example.org"]
    assert PASSWORD not in out + completed.stderr


def test_cli_test_mode_names_the_failing_step(pushtune_home, smtp_server, mail_env):
    port = smtp_server(Inbox(), tls=None, auth=False)  # a plain server: no STARTTLS

    completed = _notify_cli("--test", env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, home=pushtune_home)

    assert completed.returncode == 1
    assert "EHLO: server offers" in completed.stdout
    assert completed.stderr.startswith("pushtune: mail test failed: STARTTLS with 127.0.0.1")


def test_cli_sends_a_recorded_run(store, tmp_path, pushtune_home, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=False)

    completed = _notify_cli(str(run_id), "--notify", "a@example.org", "--notify", "b@example.org",
                            env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, home=pushtune_home)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"mail for run {run_id} sent to a@example.org, b@example.org (1 try)"
    (mail,) = inbox.received
    assert "below threshold" in mail.message["Subject"]
    assert [(r["status"], r["recipients"]) for r in store.notifications(run_id)] == [
        ("sent", ["a@example.org", "b@example.org"])
    ]


# --- hostile names ------------------------------------------------------------------------------

PASSING_MODEL = """\
import json, os
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=2000).fit(X, y)
with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as f:
    json.dump({"acc\\nuracy": model.score(X, y)}, f)
"""


def test_a_file_name_with_a_newline_gets_a_one_line_subject_and_the_run_its_exit_code(
        tmp_path, pushtune_home, smtp_server, mail_env):
    inbox = Inbox()
    env = {**mail_env, "PUSHTUNE_SMTP_PORT": str(smtp_server(inbox))}
    model = tmp_path / "bad\nname.py"
    model.write_text(PASSING_MODEL)
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHTUNE_SMTP", "PUSHTUNE_MAIL"))}
    run = subprocess.run(
        [sys.executable, "-m", "jobs", "run", str(model), "--runtime", "local", "--threshold", "0.5",
         "--metric", "acc\nuracy", "--notify", OWNER],
        cwd=ROOT, env={**shell_env, **env, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stderr  # the run passed; the mail must not change that
    (mail,) = inbox.received
    assert mail.message["Subject"] == "[pushtune] bad name.py: threshold met — acc uracy 0.9733 ≥ 0.50 (run 1)"
    (row,) = RunStore.open().notifications(1)
    assert row["status"] == "sent"

    resent = _notify_cli("1", env=env, home=pushtune_home)
    assert resent.returncode == 0, resent.stderr
    assert [m.message["Subject"] for m in inbox.received] == [mail.message["Subject"]] * 2
