"""The two-agent set-up holds together: jenkins/docker-compose.yml (controller, agents, PostgreSQL)
against jenkins/casc/jenkins.yaml (the agents the controller knows) and the agent image.

No Docker engine or controller runs here, so these read the files as Compose and JCasC would
(PyYAML resolves the `<<` merge keys as Compose does) and check what must agree: the agents'
names, label and connection, one database and one artifacts path for all, the secrets' sources.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import requires_engine

ROOT = Path(__file__).resolve().parent.parent
JENKINS = ROOT / "jenkins"
ENTRYPOINT = JENKINS / "agent-entrypoint.sh"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((JENKINS / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def casc() -> dict:
    return yaml.safe_load((JENKINS / "casc" / "jenkins.yaml").read_text())


def casc_agents(casc: dict) -> dict[str, dict]:
    """Node name -> its `permanent:` mapping."""
    nodes = casc["jenkins"].get("nodes") or []
    assert all(list(node) == ["permanent"] for node in nodes), nodes
    agents = {node["permanent"]["name"]: node["permanent"] for node in nodes}
    assert len(agents) == len(nodes), "two agents with one name"
    return agents


def agent_services(compose: dict) -> dict[str, dict]:
    """JENKINS_AGENT_NAME -> the compose service that runs that agent."""
    found = {}
    for service in compose["services"].values():
        agent = (service.get("environment") or {}).get("JENKINS_AGENT_NAME")
        if agent:
            assert agent not in found, f"{agent} run by two services"
            found[agent] = service
    return found


def mounts(service: dict) -> dict[str, str]:
    """Target path -> source (a named volume or a host path) of the service's short-form volumes."""
    result = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        assert target not in result, f"two mounts at {target}"
        result[target] = source
    return result


def project_label() -> str:
    return yaml.safe_load((JENKINS / "jobs" / "project.yaml").read_text())[0]["project"]["label"]


def test_controller_builds_nothing_and_two_inbound_agents_carry_the_jobs_label(casc):
    jenkins = casc["jenkins"]
    assert jenkins["numExecutors"] == 0  # so no build can land on the controller
    agents = casc_agents(casc)
    assert len(agents) == 2
    label = project_label()
    assert re.fullmatch(r"[\w.-]+", label), "the jobs' label is a single label here"
    for name, agent in agents.items():
        assert label in agent["labelString"].split(), name  # labels are whitespace-separated
        assert agent["mode"] == "EXCLUSIVE", name  # nothing else is scheduled there
        assert int(agent["numExecutors"]) >= 1, name
        assert agent["retentionStrategy"] == "always", name
        # the inbound (JNLP) launcher: the agent connects to the controller, over WebSocket
        # because the TCP agent port is closed
        assert agent["launcher"] == {"inbound": {"webSocket": True}}, name
    assert jenkins["slaveAgentPort"] == -1


def test_every_casc_agent_has_its_compose_service_and_reaches_the_controller(compose, casc):
    agents, services = casc_agents(casc), agent_services(compose)
    assert sorted(services) == sorted(agents)
    controller = compose["services"]["jenkins"]
    controller_ports = {p.split(":")[-1] for p in controller["ports"]}
    images = set()
    for name, service in services.items():
        env = service["environment"]
        url = urlsplit(env["JENKINS_URL"])
        # the controller's service name and container port, not localhost (that is the agent)
        assert url.hostname == "jenkins" and str(url.port) in controller_ports, name
        assert env["JENKINS_WEB_SOCKET"] == "true", name
        assert env["PUSHTUNE_JENKINS_URL"] == env["JENKINS_URL"], name
        assert env["JENKINS_AGENT_WORKDIR"] == agents[name]["remoteFS"], name
        assert "JENKINS_SECRET" not in env, name  # the secret comes from a file, never from here
        assert service["depends_on"]["jenkins"] == {"condition": "service_healthy"}, name
        assert service["init"] is True, name  # reaps the monitor's detached processes
        assert service["pull_policy"] == "never", name
        images.add(service["image"])
    assert len(images) == 1
    [image] = images
    builders = [s for s in compose["services"].values() if s.get("image") == image and "build" in s]
    assert [b["build"]["dockerfile"] for b in builders] == ["jenkins/agent.Dockerfile"]


def test_agents_share_one_database_in_the_postgres_service(compose):
    services = agent_services(compose)
    urls = {service["environment"]["PUSHTUNE_DB"] for service in services.values()}
    assert len(urls) == 1, urls
    url = urlsplit(urls.pop())
    assert url.scheme == "postgresql" and url.password is None  # the password is a secret
    postgres = compose["services"][url.hostname]
    assert postgres["image"].startswith("postgres:") and postgres["image"] != "postgres:latest"
    env = postgres["environment"]
    assert (url.username, url.path.lstrip("/"), url.port or 5432) == (env["POSTGRES_USER"], env["POSTGRES_DB"], 5432)
    assert "POSTGRES_PASSWORD" not in env
    password_secret = env["POSTGRES_PASSWORD_FILE"].removeprefix("/run/secrets/")
    assert password_secret in postgres["secrets"] and password_secret in compose["secrets"]
    # the agents get the same password, where the image's entry point looks for it
    default = re.search(r'password_file="\$\{PUSHTUNE_DB_PASSWORD_FILE:-([^}]+)\}"', ENTRYPOINT.read_text())
    assert default and default.group(1) == f"/run/secrets/{password_secret}"
    for name, service in services.items():
        assert password_secret in service["secrets"], name
        assert service["depends_on"][url.hostname] == {"condition": "service_healthy"}, name
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert "/var/lib/postgresql/data" in mounts(postgres)


def test_agents_mount_one_artifacts_volume_at_the_same_path(compose):
    services = agent_services(compose)
    paths = {service["environment"]["PUSHTUNE_ARTIFACTS"] for service in services.values()}
    assert len(paths) == 1, paths
    [path] = paths
    sources = {name: mounts(service).get(path) for name, service in services.items()}
    assert len(set(sources.values())) == 1, sources  # the same storage behind the same path
    [volume] = set(sources.values())
    assert volume in (compose.get("volumes") or {}), "a named volume of this project, not a host path"
    # and nothing else of an agent is shared: its PUSHTUNE_HOME is its own
    homes = [mounts(service).get("/var/lib/pushtune") for service in services.values()]
    assert None not in homes and len(set(homes)) == len(homes) and volume not in homes
    agent_dockerfile = (JENKINS / "agent.Dockerfile").read_text()
    assert f"PUSHTUNE_ARTIFACTS={path}" in agent_dockerfile  # the image's default agrees
    assert re.search(rf"install -d -o jenkins -g jenkins [^\n]*{re.escape(path)}", agent_dockerfile)


def test_agents_reach_docker_and_copy_files_through_its_api(compose):
    for name, service in agent_services(compose).items():
        env = service["environment"]
        assert env["PUSHTUNE_DOCKER_TRANSFER"] == "copy", name
        socket_mounted = mounts(service).get("/var/run/docker.sock") == "/var/run/docker.sock"
        assert socket_mounted or env.get("DOCKER_HOST"), name
        if socket_mounted:  # the socket's group, never a silent default (gid 0 is root)
            [gid] = service["group_add"]
            assert gid.startswith("${DOCKER_GID:?"), name
        assert int(env["PUSHTUNE_LEASE_SECONDS"].removeprefix("${PUSHTUNE_LEASE_SECONDS:-").rstrip("}")) > 0


def test_each_agent_has_its_own_secret_file_kept_out_of_git(compose):
    sources = {}
    for name, service in agent_services(compose).items():
        [entry] = [s for s in service["secrets"] if isinstance(s, dict)]
        assert entry["target"] == "jenkins_agent_secret", name
        sources[name] = entry["source"]
    assert len(set(sources.values())) == len(sources), "two agents with one secret"
    default = re.search(r'secret_file="\$\{JENKINS_AGENT_SECRET_FILE:-([^}]+)\}"', ENTRYPOINT.read_text())
    assert default and default.group(1) == "/run/secrets/jenkins_agent_secret"
    for name, source in sources.items():
        path = compose["secrets"][source]["file"]
        assert path.startswith("./secrets/"), (name, path)
        if shutil.which("git") and (ROOT / ".git").exists():
            ignored = subprocess.run(["git", "check-ignore", "-q", str(JENKINS / path)], cwd=ROOT)
            assert ignored.returncode == 0, f"{path} would be committed"


def test_agent_image_is_pinned_and_has_docker_and_pushtune():
    text = (JENKINS / "agent.Dockerfile").read_text()
    tag = re.search(r"^ARG INBOUND_AGENT_TAG=(\S+)$", text, re.M).group(1)
    # REMOTING_VERSION-BUILD-jdk21 (jenkinsci/docker-agent docker-bake.hcl linux_tags): no floating tag
    assert re.fullmatch(r"\d+\.v[0-9a-f_]+-\d+-jdk21", tag), tag
    assert "FROM jenkins/inbound-agent:${INBOUND_AGENT_TAG}" in text
    assert re.search(r"^COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker$", text, re.M)
    assert not re.search(r"install[^\n]*docker\.io", text)  # Debian's 20.10 CLI: engines 29+ refuse it
    assert "ln -s /opt/pushtune/venv/bin/pushtune /usr/local/bin/pushtune" in text
    assert "PUSHTUNE_DOCKER_TRANSFER=copy" in text
    assert re.findall(r"^ENTRYPOINT (.+)$", text, re.M) == ['["/usr/local/bin/pushtune-agent"]']
    assert "COPY jenkins/agent-entrypoint.sh /usr/local/bin/pushtune-agent" in text
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == "jenkins"  # builds never run as root


def test_no_address_is_written_into_the_jenkins_images():
    """Mirrors come from build arguments, never from an address in the files (package hosts least
    of all): the only URLs the images may name are the compose services'."""
    for path in [*JENKINS.glob("*Dockerfile"), *JENKINS.glob("*.sh")]:
        for host in re.findall(r"[a-z]+://([^/\s:'\"]+)", path.read_text()):
            assert host in ("jenkins", "postgres", "localhost"), (path, host)


@pytest.fixture
def entrypoint(tmp_path):
    """Runs jenkins/agent-entrypoint.sh with a stand-in for the inbound agent's launcher."""
    if not shutil.which("sh"):
        pytest.skip("no POSIX sh")
    home = tmp_path / "home"
    home.mkdir()
    launcher = tmp_path / "jenkins-agent"
    launcher.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/args"\nenv > "$HOME/env"\n')
    launcher.chmod(0o755)

    def run(secret: str | None, password: str | None = None, args: tuple = ("-extra", "arg"), **env: str):
        secret_file, password_file = tmp_path / "agent_secret", tmp_path / "postgres_password"
        for path, value in ((secret_file, secret), (password_file, password)):
            path.unlink(missing_ok=True)
            if value is not None:
                path.write_text(value)
        full = {"PATH": os.environ["PATH"], "HOME": str(home), "JENKINS_AGENT_NAME": "pushtune-agent-9",
                "JENKINS_AGENT_COMMAND": str(launcher), "JENKINS_AGENT_SECRET_FILE": str(secret_file),
                "PUSHTUNE_DB_PASSWORD_FILE": str(password_file), **env}
        return subprocess.run(["sh", str(ENTRYPOINT), *args], env=full, capture_output=True,
                              text=True, timeout=30)

    run.home, run.secret_file = home, tmp_path / "agent_secret"
    return run


def test_entrypoint_hands_the_secret_file_to_remoting_and_writes_pgpass(entrypoint):
    secret = "ab12" * 16
    result = entrypoint(secret + "\n", "pa:ss\\word\n")
    assert result.returncode == 0, result.stderr
    args = (entrypoint.home / "args").read_text().splitlines()
    # remoting's args4j reads `@FILE` from the file: the secret is in no argument, no variable
    assert args == ["-secret", f"@{entrypoint.secret_file}", "-extra", "arg"]
    assert secret not in (entrypoint.home / "env").read_text()
    pgpass = entrypoint.home / ".pgpass"
    assert pgpass.read_text() == "*:*:*:*:pa\\:ss\\\\word\n"  # libpq's escapes for : and \
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600  # libpq ignores a wider .pgpass


@pytest.mark.parametrize("secret", [None, ""])
def test_entrypoint_without_a_secret_says_how_to_get_one(entrypoint, secret):
    result = entrypoint(secret)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pushtune-agent-9" in lines[0] and "pushtune jenkins agent-secret" in lines[0]
    assert not (entrypoint.home / "args").exists()  # the agent was not started


def test_entrypoint_keeps_a_given_jenkins_secret_and_skips_a_missing_password(entrypoint):
    result = entrypoint(None, None, JENKINS_SECRET="cd34" * 16)
    assert result.returncode == 0, result.stderr
    assert (entrypoint.home / "args").read_text().splitlines() == ["-extra", "arg"]
    assert not (entrypoint.home / ".pgpass").exists()


def test_docs_explain_the_agents(compose, casc):
    docs = (ROOT / "docs" / "jenkins.md").read_text()
    assert "## Several agents" in docs
    for needed in ("PUSHTUNE_DB", "PUSHTUNE_ARTIFACTS", "PUSHTUNE_LEASE_SECONDS", "PUSHTUNE_AGENT",
                   "PUSHTUNE_DOCKER_TRANSFER", "PUSHTUNE_JENKINS_URL", "NTP", "--label",
                   "pushtune jenkins agent-secret", *casc_agents(casc), *agent_services(compose)):
        assert needed in docs, needed


def test_entrypoint_runs_a_single_command_as_the_base_image_does(entrypoint):
    result = entrypoint(None, args=("pwd",))  # no secret needed to look around in the image
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and not (entrypoint.home / "args").exists()


def test_the_controller_answers_this_host_only_and_mail_is_off_until_configured(compose, casc):
    controller = compose["services"]["jenkins"]
    assert controller["ports"] == ["127.0.0.1:8080:8080"]  # plain HTTP: never on 0.0.0.0
    # no SMTP server by default (not localhost, where no server runs): pushtune notify skips the mail
    assert controller["environment"]["PUSHTUNE_SMTP_HOST"] == "${PUSHTUNE_SMTP_HOST:-}"
    assert controller["environment"]["PUSHTUNE_MAIL_TO"] == "${PUSHTUNE_MAIL_TO:-}"
    # SSL on 465 without editing files: PUSHTUNE_SMTP_SECURITY=ssl reaches every build
    assert controller["environment"]["PUSHTUNE_SMTP_SECURITY"] == "${PUSHTUNE_SMTP_SECURITY:-starttls}"
    # git's /git/notifyCommit: a tokenless notification may only start polling (GitStatus)
    assert ("-Dhudson.plugins.git.GitStatus.NOTIFY_COMMIT_ACCESS_CONTROL=disabled-for-polling"
            in controller["environment"]["JENKINS_JAVA_OPTS"].split())
    assert "-Djenkins.install.runSetupWizard=false" in controller["environment"]["JENKINS_JAVA_OPTS"].split()
    build_env = {e["key"]: e["value"] for e in casc["jenkins"]["globalNodeProperties"][0]["envVars"]["env"]}
    assert build_env["PUSHTUNE_SMTP_HOST"] == "${PUSHTUNE_SMTP_HOST:-}"
    assert build_env["PUSHTUNE_MAIL_TO"] == "${PUSHTUNE_MAIL_TO:-}"


@pytest.mark.docker
@requires_engine
def test_an_agent_running_as_uid_1000_reads_the_secret_agent_secret_wrote(tmp_path):
    """As compose mounts a file secret (a bind mount keeping the host file's owner and mode), into
    a container running the agent's entry point as uid 1000: it finds the secret and hands it on."""
    import docker

    from jobs.ci.jenkins import write_secret

    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    secret = "ab12" * 16
    write_secret(secrets / "agent_1_secret", secret)
    launcher = tmp_path / "jenkins-agent"  # remoting's stand-in: reads `-secret @FILE` as args4j does
    launcher.write_text('#!/bin/sh\n[ "$1" = -secret ] && cat "${2#@}"\n')
    launcher.chmod(0o755)
    client = docker.from_env()

    def agent(secret_file: Path) -> tuple[int, str]:
        container = client.containers.run(
            "pushtune/base:bookworm", ["/usr/local/bin/pushtune-agent"], user="1000:1000", detach=True,
            network_mode="none", environment={"JENKINS_AGENT_NAME": "pushtune-agent-1", "HOME": "/tmp",
                                              "JENKINS_AGENT_COMMAND": "/usr/local/bin/jenkins-agent"},
            volumes={str(secret_file): {"bind": "/run/secrets/jenkins_agent_secret", "mode": "ro"},
                     str(ENTRYPOINT): {"bind": "/usr/local/bin/pushtune-agent", "mode": "ro"},
                     str(launcher): {"bind": "/usr/local/bin/jenkins-agent", "mode": "ro"}})
        try:
            status = container.wait(timeout=60)["StatusCode"]
            return status, container.logs().decode()
        finally:
            container.remove(force=True)

    assert agent(secrets / "agent_1_secret") == (0, secret + "\n")
    if os.getuid() != 1000:  # the mode agent-secret used to write: the agent finds no secret
        (secrets / "agent_1_secret").chmod(0o600)
        status, output = agent(secrets / "agent_1_secret")
        assert status == 2 and "no secret for agent pushtune-agent-1" in output
