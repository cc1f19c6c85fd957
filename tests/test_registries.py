"""The runtime and notifier registries: what is registered, how `auto` picks, how a name is looked
up, and that a runtime or channel registered from outside is used without changing the lookup."""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import requires_engine
from jobs.errors import UserError
from jobs.train.docker_runtime import DockerRuntime
from jobs.train.runtime import AttemptSpec, LocalRuntime
from jobs.train.runtimes import AUTO, RUNTIMES, Need, RuntimeEntry, get_runtime, register_runtime, runtime_choices
from notify import (
    DEFAULT_CHANNEL,
    NOTIFIERS,
    Channel,
    Delivery,
    DeliveryError,
    EmailNotifier,
    RunSummary,
    get_notifier,
    load_settings,
    notify_run,
    register_notifier,
)
from test_notify import OWNER, Inbox, certificate, mail_env, make_run, smtp_server, store  # noqa: F401 (fixtures)

SMTP_VARIABLES = ("PUSHTUNE_SMTP_HOST", "PUSHTUNE_SMTP_PORT", "PUSHTUNE_SMTP_USER", "PUSHTUNE_SMTP_PASSWORD",
                  "PUSHTUNE_SMTP_SECURITY", "PUSHTUNE_SMTP_CA_FILE", "PUSHTUNE_MAIL_FROM", "PUSHTUNE_MAIL_TO")


@pytest.fixture
def no_engine(monkeypatch) -> str:
    """DOCKER_HOST at a closed port of 127.0.0.1: no engine answers there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"tcp://127.0.0.1:{port}"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.strip() == text
    return text


# --- runtimes -----------------------------------------------------------------------------------


def test_the_registry_lists_local_and_docker_and_the_cli_offers_them_with_auto():
    assert list(RUNTIMES)[:2] == ["local", "docker"]
    assert runtime_choices()[-1] == AUTO and set(RUNTIMES) <= set(runtime_choices())
    local, docker = RUNTIMES["local"], RUNTIMES["docker"]
    assert local.description and docker.description
    assert local.needs == () and [need.what for need in docker.needs] == ["a Docker engine"]
    assert docker.auto_rank < local.auto_rank  # auto tries Docker first


def test_auto_without_an_engine_runs_locally_and_docker_refuses_in_one_line(no_engine):
    reason = RUNTIMES["docker"].unmet()
    assert reason.startswith(f"no Docker engine answers at {no_engine}") and "\n" not in reason
    runtime = get_runtime(AUTO, memory="1g", cpus=1, network="none", keep=True)
    assert isinstance(runtime, LocalRuntime) and runtime.name == "local"
    with pytest.raises(UserError) as refused:
        get_runtime("docker")
    assert one_line(refused).startswith(f"no Docker engine answers at {no_engine}")
    assert "scripts/start-docker.sh" in str(refused.value)


@pytest.mark.docker
@requires_engine
def test_auto_with_an_engine_is_docker_with_the_options():
    assert RUNTIMES["docker"].unmet() is None
    runtime = get_runtime(AUTO, memory="1g", cpus=1, network="none", keep=True)
    assert isinstance(runtime, DockerRuntime) and runtime.name == "docker"
    assert (runtime.memory, runtime.cpus, runtime.network, runtime.keep) == (2**30, 1.0, "none", True)
    with pytest.raises(UserError) as refused:  # a bad option is an error, not a fall back to local
        get_runtime(AUTO, network="host")
    assert one_line(refused) == "--network host: not allowed (use bridge, none or a user network)"


def test_local_ignores_the_docker_options():
    assert isinstance(get_runtime("local", memory="1g", cpus=1, network="none", keep=True), LocalRuntime)


def test_an_unknown_runtime_is_one_line_naming_the_registered_ones():
    with pytest.raises(UserError) as unknown:
        get_runtime("kubernetes", memory="1g")
    assert one_line(unknown) == "unknown runtime 'kubernetes' (choose local, docker or auto)"


class OtherPythonRuntime(LocalRuntime):
    """A runtime of the test's own: a local process under another interpreter."""

    name = "other-python"


@dataclass
class ExtraRuntimes:
    created: list[dict] = field(default_factory=list)  # the options of each runtime made

    def register(self, name: str, *, needs: tuple[Need, ...] = (), auto_rank: int | None = None) -> RuntimeEntry:
        def factory(**options) -> OtherPythonRuntime:
            self.created.append(options)
            return OtherPythonRuntime(python=options.get("python", sys.executable))

        return register_runtime(RuntimeEntry(name, "the script under another Python", factory,
                                             needs=needs, auto_rank=auto_rank))


@pytest.fixture
def extra_runtimes():
    """Registers runtimes for one test and removes them after it."""
    before = dict(RUNTIMES)
    yield ExtraRuntimes()
    for name in set(RUNTIMES) - set(before):
        del RUNTIMES[name]
    assert RUNTIMES == before


def test_a_registered_runtime_is_found_by_name_and_runs_an_attempt(tmp_path, extra_runtimes):
    extra_runtimes.register("other-python")
    assert "other-python" in runtime_choices()

    runtime = get_runtime("other-python", memory="1g", python=sys.executable)
    assert isinstance(runtime, OtherPythonRuntime)
    assert extra_runtimes.created == [{"memory": "1g", "python": sys.executable}]
    workdir = tmp_path / "attempt-1"
    workdir.mkdir()
    (workdir / "model.py").write_text(
        "import json, os, sys\n"
        "json.dump({'python': sys.executable},\n"
        "          open(os.path.join(os.environ['PUSHTUNE_OUTPUT'], 'metrics.json'), 'w'))\n"
    )
    spec = AttemptSpec(run_id=1, attempt=1, kind="ann", model_name="m.py", workdir=workdir,
                       data_dir=None, cache_dir=tmp_path / "cache", params={})
    outcome = runtime.run(spec)
    assert outcome.exit_code == 0, spec.log_path.read_text()
    assert json.loads((spec.output_dir / "metrics.json").read_text()) == {"python": sys.executable}

    with pytest.raises(UserError) as unknown:
        get_runtime("nope")
    assert one_line(unknown) == "unknown runtime 'nope' (choose local, docker, other-python or auto)"
    with pytest.raises(ValueError):
        extra_runtimes.register("other-python")  # a name is registered once
    with pytest.raises(ValueError):
        extra_runtimes.register(AUTO)


def test_auto_takes_the_first_ranked_runtime_whose_needs_are_met(extra_runtimes, no_engine):
    extra_runtimes.register("unplugged", needs=(Need("a cable", lambda: "the cable is unplugged"),), auto_rank=-2)
    extra_runtimes.register("unranked")  # never picked by auto
    assert get_runtime(AUTO).name == "local"  # unplugged's need is not met, docker has no engine
    assert extra_runtimes.created == []

    extra_runtimes.register("plugged", needs=(Need("nothing", lambda: None),), auto_rank=-1)
    assert isinstance(get_runtime(AUTO, cpus=1), OtherPythonRuntime)
    assert extra_runtimes.created == [{"cpus": 1}]


# --- notifiers ----------------------------------------------------------------------------------


@dataclass
class Recorder:
    """A notifier of the test's own (`notify.base.Notifier`): it records each summary it is
    given in a file, or refuses when told to."""

    path: Path
    recipients: tuple[str, ...]
    refuse: str | None = None
    channel: str = "recorder"

    def send(self, summary: RunSummary) -> Delivery:
        if self.refuse:
            raise DeliveryError(self.refuse, tries=1, permanent=True)
        with self.path.open("a", encoding="utf-8") as sent:
            sent.write(json.dumps({"to": list(self.recipients), "subject": summary.subject(),
                                   "run": summary.run_id}) + "\n")
        return Delivery(tries=1)


def recorder_factory(recipients: list[str] | None = None, settings: dict | None = None) -> Recorder:
    """Its settings: {"path": FILE, "to": [...]}; FILE is what it needs."""
    settings = settings or {}
    if "path" not in settings:
        raise UserError("no recorder file: set the recorder's path")
    return Recorder(Path(settings["path"]), tuple(recipients or settings.get("to", ())), settings.get("refuse"))


@pytest.fixture
def recorder_channel():
    channel = register_notifier(Channel("recorder", "summaries into a file", "a file to write to",
                                        recorder_factory))
    yield channel
    del NOTIFIERS["recorder"]


def sent_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_email_is_the_default_and_only_registered_channel():
    assert list(NOTIFIERS) == ["email"] and DEFAULT_CHANNEL == "email"
    email = NOTIFIERS["email"]
    assert "PUSHTUNE_SMTP_HOST" in email.needs and "--notify" in email.needs


def test_notify_run_goes_through_a_registered_channel(store, tmp_path, recorder_channel):
    run_id = make_run(store, tmp_path, passed=True)
    path = tmp_path / "sent.jsonl"

    result = notify_run(store, run_id, ["dev@example.org"], {"path": path, "to": ["lead@example.org"]},
                        channel="recorder")

    assert result.sent and (result.channel, result.recipients, result.tries) == ("recorder", ["dev@example.org"], 1)
    assert sent_lines(path) == [{"to": ["dev@example.org"], "subject": result.subject, "run": run_id}]
    (row,) = store.notifications(run_id)
    assert (row["status"], row["channel"], row["recipients"], row["error"]) == \
        ("sent", "recorder", ["dev@example.org"], None)

    printed: list[str] = []
    failed = notify_run(store, run_id, settings={"path": path, "to": ["lead@example.org"], "refuse": "disk full"},
                        channel="recorder", echo=printed.append)
    assert not failed.sent and failed.error == "disk full"
    assert printed == [f"recorder notification for run {run_id} not sent: disk full"]
    assert len(sent_lines(path)) == 1
    assert [(r["status"], r["channel"], r["recipients"], r["error"]) for r in store.notifications(run_id)][-1] == (
        "failed", "recorder", ["lead@example.org"], "disk full")


def test_missing_settings_and_unknown_channels_are_one_line(store, tmp_path, recorder_channel, monkeypatch):
    run_id = make_run(store, tmp_path, passed=True)
    with pytest.raises(UserError) as missing:
        notify_run(store, run_id, channel="recorder")
    assert one_line(missing) == "no recorder file: set the recorder's path"

    for variable in SMTP_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(UserError) as no_server:  # the email channel, as before the registry
        notify_run(store, run_id, ["dev@example.org"])
    assert one_line(no_server).startswith("no SMTP server: set PUSHTUNE_SMTP_HOST")

    with pytest.raises(UserError) as unknown:
        notify_run(store, run_id, channel="pager")
    assert one_line(unknown) == "unknown notification channel 'pager' (choose email, recorder)"
    assert store.notifications(run_id) == []  # nothing was attempted
    with pytest.raises(ValueError):
        register_notifier(recorder_channel)


def test_the_email_channel_still_mails_through_a_real_server(store, tmp_path, smtp_server, mail_env):
    inbox = Inbox()
    port = smtp_server(inbox)
    run_id = make_run(store, tmp_path, passed=False)
    settings = load_settings(env={**mail_env, "PUSHTUNE_SMTP_PORT": str(port)}, path=tmp_path / "none.ini")

    notifier = get_notifier("email", ["dev@example.org"], settings)
    assert isinstance(notifier, EmailNotifier) and notifier.recipients == ("dev@example.org",)

    assert notify_run(store, run_id, settings=settings).sent  # the default channel
    result = notify_run(store, run_id, ["dev@example.org"], settings, channel="email")
    assert result.sent and result.describe(run_id).startswith(f"mail for run {run_id} sent to dev@example.org")

    assert [mail.rcpt_tos for mail in inbox.received] == [[OWNER], ["dev@example.org"]]
    assert all(mail.tls and mail.message["Subject"] == result.subject for mail in inbox.received)
    rows = store.notifications(run_id)
    assert [(r["status"], r["channel"], r["recipients"]) for r in rows] == [
        ("sent", "email", [OWNER]), ("sent", "email", ["dev@example.org"])]
