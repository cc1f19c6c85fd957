"""The job chain as code: JJB renders six jobs with the expected triggers, steps and agent label
and no secret; the controller's files (JCasC, plugins, compose, Jenkinsfile) hold together.
The two-agent set-up (compose services against the JCasC agents) is tests/test_jenkins_compose.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import unavailable
from jobs.ci.jenkins import DEFAULT_LABEL, chain_jobs, check_label, render_jobs
from jobs.errors import UserError
from test_jenkins_client import pushtune

# the chain's six jobs, and the two that deploy its models (jobs.deploy.versions)
EXPECTED_JOBS = sorted(["pushtune-pull", "pushtune-classify", "pushtune-train", "pushtune-tweak", "pushtune-notify",
                        "pushtune-monitor", "pushtune-deploy", "pushtune-retrain"])
assert sorted(chain_jobs()) == EXPECTED_JOBS

ROOT = Path(__file__).resolve().parent.parent
JENKINS = ROOT / "jenkins"
# The Jenkins LTS the controller files were checked against (jenkins/Dockerfile, docs/jenkins.md)
CHECKED_LTS = "2.568.2"
# casc attributes the checked core no longer has: JCasC rejects unknown attributes, so any of
# them stops the controller's boot. (path in jenkins.yaml, attribute, core change)
REMOVED_CASC_ATTRIBUTES = [
    (("jenkins", "crumbIssuer", "standard"), "excludeClientIPFromCrumb", "07d2ff18a4, LTS 2.555.1"),
]
SECRETS = {
    "JENKINS_API_TOKEN": "api-7c1d0f3e9b2a",
    "PUSHTUNE_TRIGGER_TOKEN": "trig-5e8a2b6c4d1f",
    "PUSHTUNE_SMTP_PASSWORD": "smtp-3f9b1a7e5c2d",
    "JENKINS_PASSWORD": "pw-9d2c4e6a8b0f",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[dict[str, ET.Element], str, str]:
    """`pushtune jenkins render` with secret-looking variables set: (jobs, all text, output)."""
    home = tmp_path_factory.mktemp("home")
    outdir = tmp_path_factory.mktemp("xml")
    result = pushtune(home, "jenkins", "render", str(outdir), "--repo-url", "https://git.example.org/ml/models.git",
                      "--branch", "release", env={**SECRETS, "JENKINS_URL": "http://127.0.0.1:9/"})
    assert result.returncode == 0, result.stderr
    files = sorted(outdir.glob("*/config.xml"))
    assert [str(p) for p in files] == result.stdout.split()
    jobs = {p.parent.name: ET.parse(p).getroot() for p in files}
    text = "".join(p.read_text() for p in files)
    return jobs, text, result.stdout + result.stderr


def shell_commands(job: ET.Element) -> list[str]:
    return [c.text for c in job.findall("./builders/hudson.tasks.Shell/command")]


def trigger_configs(job: ET.Element) -> dict[str, ET.Element]:
    configs = job.findall("./publishers/hudson.plugins.parameterizedtrigger.BuildTrigger/configs/"
                          "hudson.plugins.parameterizedtrigger.BuildTriggerConfig")
    return {c.findtext("projects"): c for c in configs}


def test_six_jobs_each_a_thin_shell_over_pushtune(rendered):
    jobs, _, _ = rendered
    assert sorted(jobs) == EXPECTED_JOBS
    for name, job in jobs.items():
        assert job.tag == "project"
        commands = shell_commands(job)
        assert commands, name
        for command in commands:
            for line in filter(None, (raw.strip() for raw in command.splitlines())):
                # train keeps its exit code across the results step (TRAIN_SHELL)
                assert line.startswith(("pushtune ", "rm -rf runs")) or line in TRAIN_SHELL, (name, line)


def test_pull_polls_the_repository_and_hands_the_changed_files_on(rendered):
    pull = rendered[0]["pushtune-pull"]
    assert pull.findtext("./triggers/hudson.triggers.SCMTrigger/spec") == "H/5 * * * *"
    assert pull.find("./triggers/com.cloudbees.jenkins.GitHubPushTrigger") is not None
    scm = pull.find("./scm")
    assert scm.get("class") == "hudson.plugins.git.GitSCM"
    # the real URL and branch, not $REPO_URL/$BRANCH: push notifications (GitHub push trigger,
    # git's notifyCommit) compare against the unexpanded remote URL
    assert scm.findtext(".//hudson.plugins.git.UserRemoteConfig/url") == "https://git.example.org/ml/models.git"
    assert scm.findtext(".//hudson.plugins.git.BranchSpec/name") == "*/release"
    assert scm.findtext(".//hudson.plugins.git.UserRemoteConfig/credentialsId") == "pushtune-git"
    defaults = {p.findtext("name"): p.findtext("defaultValue")
                for p in pull.findall(".//hudson.model.StringParameterDefinition")}
    assert "REPO_URL" not in defaults  # the repository is the installed one, never a request's
    assert defaults["BRANCH"] == "release"
    assert "pushtune changed --from \"$GIT_PREVIOUS_COMMIT\" --to \"$GIT_COMMIT\"" in shell_commands(pull)[0]
    classify = trigger_configs(pull)["pushtune-classify"]
    assert classify.findtext("condition") == "SUCCESS"
    assert classify.findtext(".//propertiesFile") == "changed.properties"


def test_classify_starts_runs_and_one_train_build_per_run(rendered):
    classify = rendered[0]["pushtune-classify"]
    assert classify.findtext(".//hudson.plugins.git.BranchSpec/name") == "$MODEL_COMMIT"
    commands = shell_commands(classify)[0]
    # how MODEL_FILES is passed is the classify/start steps' business; the steps and flags are not
    assert re.match(r"pushtune classify \S*\$MODEL_FILES\S*\n", commands), commands
    assert re.search(r"pushtune start \S*\$MODEL_FILES\S* --skip-unsupported --build-image --properties-dir runs",
                     commands), commands
    factory = classify.find(".//hudson.plugins.parameterizedtrigger.FileBuildParameterFactory")
    assert factory.findtext("filePattern") == "runs/*.properties"
    triggered = classify.findtext(".//hudson.plugins.parameterizedtrigger.BlockableBuildTriggerConfig/projects")
    assert triggered == "pushtune-train"


TRAIN_SHELL = ("code=0", 'pushtune train "$RUN_ID" || code=$?', 'pushtune results "$RUN_ID" --to pushtune-results',
               "exit $code")


def test_train_marks_below_threshold_unstable_and_routes_by_result(rendered):
    train = rendered[0]["pushtune-train"]
    shell = train.find("./builders/hudson.tasks.Shell")
    # the results are copied whatever the attempt gave; the build ends with train's exit code
    assert shell.findtext("command") == "\n".join(TRAIN_SHELL) + "\n"
    assert shell.findtext("unstableReturn") == "3"
    configs = train.findall("./publishers/hudson.plugins.parameterizedtrigger.BuildTrigger/configs/"
                            "hudson.plugins.parameterizedtrigger.BuildTriggerConfig")
    routes = sorted((c.findtext("projects"), c.findtext("condition")) for c in configs)
    # never on ABORTED (UNSTABLE_OR_WORSE includes it): an aborted train build is the monitor's
    assert routes == [("pushtune-notify", "SUCCESS"), ("pushtune-tweak", "FAILED"), ("pushtune-tweak", "UNSTABLE")]
    assert train.findtext("concurrentBuild") == "true"


def test_tweak_and_notify_get_their_secrets_from_credentials(rendered):
    jobs = rendered[0]
    binding = jobs["pushtune-tweak"].find(".//org.jenkinsci.plugins.credentialsbinding.impl.StringBinding")
    assert binding.findtext("variable") == "PUSHTUNE_TRIGGER_TOKEN"
    assert binding.findtext("credentialsId") == "pushtune-trigger-token"
    tweak = "pushtune tweak \"$RUN_ID\" --train-job 'pushtune-train' --notify-job 'pushtune-notify'"
    assert tweak in shell_commands(jobs["pushtune-tweak"])[0]
    smtp = jobs["pushtune-notify"].find(".//org.jenkinsci.plugins.credentialsbinding.impl.UsernamePasswordMultiBinding")
    assert smtp.findtext("passwordVariable") == "PUSHTUNE_SMTP_PASSWORD"
    assert 'pushtune notify "$RUN_ID"' in shell_commands(jobs["pushtune-notify"])[0]


def test_monitor_runs_on_a_timer_and_after_train_or_tweak_whatever_the_result(rendered):
    monitor = rendered[0]["pushtune-monitor"]
    assert monitor.findtext("./triggers/hudson.triggers.TimerTrigger/spec") == "H/15 * * * *"
    reverse = monitor.find("./triggers/jenkins.triggers.ReverseBuildTrigger")
    assert reverse.findtext("upstreamProjects") == "pushtune-train,pushtune-tweak"
    # ReverseBuildTrigger fires when result.isBetterOrEqualTo(threshold); ABORTED is the worst
    # Result (ordinal 4), so an aborted train build starts the monitor too (FAILURE would skip it)
    threshold = reverse.find("threshold")
    assert (threshold.findtext("name"), threshold.findtext("ordinal"), threshold.findtext("color"),
            threshold.findtext("completeBuild")) == ("ABORTED", "4", "ABORTED", "false")
    assert shell_commands(monitor) == ["pushtune monitor --once"]


def test_no_secret_in_the_rendered_xml_or_the_output(rendered):
    _, text, output = rendered
    for value in SECRETS.values():
        assert value not in text and value not in output
    assert "<authToken" not in text


def test_render_uses_project_yaml_without_overrides():
    jobs = render_jobs()
    project = yaml.safe_load((JENKINS / "jobs" / "project.yaml").read_text())[0]["project"]
    for name in ("pushtune-pull", "pushtune-classify", "pushtune-retrain"):
        url = ET.fromstring(jobs[name]).findtext(".//hudson.plugins.git.UserRemoteConfig/url")
        assert url == project["repo-url"], name


def assigned_node(job: ET.Element) -> tuple[str | None, str | None]:
    """JJB's `node:` (general module): <assignedNode>EXPR</assignedNode><canRoam>false</canRoam>."""
    return job.findtext("./assignedNode"), job.findtext("./canRoam")


def test_every_job_runs_only_on_the_pushtune_agents(rendered):
    jobs, _, _ = rendered
    project = yaml.safe_load((JENKINS / "jobs" / "project.yaml").read_text())[0]["project"]
    assert project["label"] == DEFAULT_LABEL == "pushtune"
    # all six, the monitor included: a build on the controller or on an agent without Docker fails
    assert {name: assigned_node(job) for name, job in jobs.items()} == \
        {name: ("pushtune", "false") for name in EXPECTED_JOBS}


def test_label_option_sets_the_node_of_every_job(tmp_path):
    expression = 'pushtune && (linux || "big box") && !windows'
    result = pushtune(tmp_path / "home", "jenkins", "render", str(tmp_path / "xml"), "--label", expression)
    assert result.returncode == 0, result.stderr
    jobs = {p.parent.name: ET.parse(p).getroot() for p in (tmp_path / "xml").glob("*/config.xml")}
    assert sorted(jobs) == EXPECTED_JOBS
    for name, job in jobs.items():
        assert assigned_node(job) == (expression, "false"), name
    # the XML escapes it; Jenkins reads it back as written
    assert "pushtune &amp;&amp; (linux || &quot;big box&quot;) &amp;&amp; !windows" in \
        (tmp_path / "xml" / "pushtune-train" / "config.xml").read_text()


@pytest.mark.parametrize("expression", ["", "   ", "pushtune &&", "pushtune linux", "(pushtune", "!!pushtune",
                                        "a -> b -> c", "pushtune & linux", "{name}", "'pushtune'"])
def test_a_bad_label_is_one_line_and_exit_2_before_anything_is_written(tmp_path, expression):
    result = pushtune(tmp_path / "home", "jenkins", "render", str(tmp_path / "xml"), f"--label={expression}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushtune: error: "), result.stderr
    assert "label expression" in lines[0]
    assert not (tmp_path / "xml").exists() and result.stdout == ""


@pytest.mark.parametrize("expression", [
    "pushtune", "pushtune && docker", "pushtune||gpu", "!windows", "!(!a)", "(a || b) && c", "a -> b",
    "a <-> b <-> c", "x86-64", "-", "gpu=2", '"big box"', r'"say \"hi\""', "a&&b||c", "\tpushtune ",
])
def test_label_expressions_jenkins_parses_are_accepted(expression):
    assert check_label(expression) == expression.strip(" \t")


@pytest.mark.parametrize("expression, says", [
    ("", "empty"), (" \t ", "empty"), ("a &&", "expected a label at the end"),
    ("a b", "expected an operator"), ("(a", "expected ')'"), ("a)", "found ')'"), ("()", "expected a label"),
    # Jenkins' grammar: term5 is `'!' term6`, and `->` is not chained (term2 has `?`)
    ("!!a", "!(!a)"), ("a -> b -> c", "chained"),
    ("a & b", "single '&'"), ("a | b", "single '|'"), ("a <- b", "'<'"), ("'a'", "unexpected"),
    ('"open', "no closing quote"), ('""', "empty quoted"), (r'"a\q"', "bad escape"),
    ("a\nb", "one line"), ("{name}", "braces"), ("pushtune-{x}", "braces"),
])
def test_malformed_label_expressions_are_refused_with_the_reason(expression, says):
    with pytest.raises(UserError) as caught:
        check_label(expression)
    message = str(caught.value)
    assert says in message and "\n" not in message


def test_project_yaml_label_is_checked_and_required(tmp_path):
    jobs_dir = tmp_path / "jobs"
    shutil.copytree(JENKINS / "jobs", jobs_dir)
    project_file = jobs_dir / "project.yaml"
    documents = yaml.safe_load(project_file.read_text())
    documents[0]["project"]["label"] = "pushtune &&"
    project_file.write_text(yaml.safe_dump(documents))
    with pytest.raises(UserError, match="not a Jenkins label expression"):
        render_jobs(jobs_dir=jobs_dir)
    jobs = render_jobs(jobs_dir=jobs_dir, label="docker")  # the option replaces the file's value
    assert all("<assignedNode>docker</assignedNode>" in xml for xml in jobs.values())
    del documents[0]["project"]["label"]
    project_file.write_text(yaml.safe_dump(documents))
    with pytest.raises(UserError, match="has no `label`"):
        render_jobs(jobs_dir=jobs_dir)


def test_a_jenkins_job_builder_that_cannot_load_is_one_line(monkeypatch):
    """JJB 6.5.0 imports pkg_resources (jenkins_jobs/registry.py), which setuptools 82 dropped."""
    import sys

    for name in [m for m in sys.modules if m == "jenkins_jobs" or m.startswith("jenkins_jobs.")]:
        monkeypatch.delitem(sys.modules, name)  # put back as they were afterwards
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # import pkg_resources fails
    with pytest.raises(UserError) as caught:
        render_jobs()
    assert "Jenkins Job Builder cannot be loaded" in str(caught.value)
    assert "setuptools<82" in str(caught.value) and "\n" not in str(caught.value)


def test_every_plugin_the_jobs_use_is_installed_by_the_image(rendered):
    _, text, _ = rendered
    plugins = {line.split(":")[0].strip() for line in (JENKINS / "plugins.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    needed = {
        "hudson.plugins.git.": "git", "com.cloudbees.jenkins.GitHubPushTrigger": "github",
        "hudson.plugins.parameterizedtrigger.": "parameterized-trigger",
        "org.jenkinsci.plugins.credentialsbinding.": "credentials-binding",
        "hudson.plugins.descriptionsetter.": "description-setter", "htmlpublisher.": "htmlpublisher",
    }
    for marker, plugin in needed.items():
        assert marker in text and plugin in plugins
    assert {"configuration-as-code", "build-token-root", "email-ext", "workflow-aggregator"} <= plugins
    assert "docker-workflow" not in plugins  # nothing uses Docker Pipeline steps


def test_casc_reads_every_secret_from_a_file_and_shuts_anonymous_out():
    text = (JENKINS / "casc" / "jenkins.yaml").read_text()
    casc = yaml.safe_load(text)
    jenkins = casc["jenkins"]
    assert jenkins["authorizationStrategy"]["loggedInUsersCanDoAnything"]["allowAnonymousRead"] is False
    assert jenkins["securityRealm"]["local"]["allowsSignup"] is False
    assert jenkins["crumbIssuer"] == "standard"  # CSRF crumbs on, with no removed attribute
    assert casc["unclassified"]["location"]["url"]
    assert casc["unclassified"]["mailer"]["smtpHost"]
    credentials = casc["credentials"]["system"]["domainCredentials"][0]["credentials"]
    token = next(c["string"] for c in credentials if "string" in c)
    assert token["id"] == "pushtune-trigger-token"
    logins = {c["usernamePassword"]["id"]: c["usernamePassword"] for c in credentials if "usernamePassword" in c}
    assert set(logins) == {"pushtune-smtp", "pushtune-git"}
    secret_values = [jenkins["securityRealm"]["local"]["users"][0]["password"], token["secret"],
                     casc["unclassified"]["mailer"]["authentication"]["password"],
                     *(login["password"] for login in logins.values())]
    for value in secret_values:
        assert re.fullmatch(r"\$\{trim:\$\{readFile:/run/secrets/\w+\}\}", value), value


def test_compose_and_dockerfile_hold_together():
    compose = yaml.safe_load((JENKINS / "docker-compose.yml").read_text())
    controller = compose["services"]["jenkins"]
    assert controller["ports"] == ["127.0.0.1:8080:8080"]  # this host only: plain HTTP
    # the controller runs no builds, so it gets neither the Docker socket nor a run store
    assert not [v for v in controller["volumes"] if "docker.sock" in v], controller["volumes"]
    assert "group_add" not in controller
    assert set(controller["secrets"]) <= set(compose["secrets"])
    assert "pushtune jenkins install" in compose["services"]["jobs"]["command"][0]
    # images built here are never pulled: a registry image of the same name is someone else's
    for name, service in compose["services"].items():
        if service["image"].startswith("pushtune/"):
            assert service.get("pull_policy") == "never", name
    dockerfile = (JENKINS / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and f"FROM jenkins/jenkins:{CHECKED_LTS}-lts-jdk21\n" in dockerfile
    assert "docker.io" not in dockerfile  # the controller runs no builds, needs no Docker at all
    assert "-Djenkins.install.runSetupWizard=false" in dockerfile
    assert "jenkins-plugin-cli -f /usr/share/jenkins/ref/plugins.txt" in dockerfile


def _compose() -> list[str]:
    """`docker compose` (the plugin the quickstart runs), else `docker-compose` (Debian's 1.29, which
    reads the same Compose Specification; .ci/run installs it where the plugin is missing)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("no Docker Compose to check docker-compose.yml (apt-get install docker-compose)")


def test_compose_accepts_the_compose_file():
    check = [*_compose(), "-f", str(JENKINS / "docker-compose.yml"), "config", "-q"]
    env = {name: value for name, value in os.environ.items() if name != "DOCKER_GID"}
    env["PUSHTUNE_MODEL_REPO"] = "x"
    checked = subprocess.run(check, capture_output=True, text=True, env={**env, "DOCKER_GID": "999"})
    assert checked.returncode == 0, checked.stderr
    # it did read the file: its own `${DOCKER_GID:?…}` stops it when the variable is missing
    unset = subprocess.run(check, capture_output=True, text=True, env=env)
    assert unset.returncode != 0 and "set DOCKER_GID to the host's docker group id" in unset.stderr, unset.stderr


def _code_only(groovy: str) -> str:
    """The Jenkinsfile without comments and string literals, to count its brackets."""
    pattern = re.compile(r"//[^\n]*|/\*.*?\*/"  # comments
                         r"|'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"", re.S)
    return pattern.sub("", groovy)


def test_jenkinsfile_structure():
    text = (JENKINS / "Jenkinsfile").read_text()
    code = _code_only(text)
    for opening, closing in ("{}", "()", "[]"):
        depth = 0
        for char in code:
            depth += (char == opening) - (char == closing)
            assert depth >= 0, f"unbalanced {closing}"
        assert depth == 0, f"unbalanced {opening}"
    assert re.search(r"^pipeline \{", code, re.M)
    for section in ("agent { label", "triggers {", "pollSCM(", "parameters {", "stages {", "post {",
                    "success {", "failure {", "emailext("):
        assert section in code, section
    for step in ("pushtune changed", "pushtune start", "pushtune train", "pushtune tweak", "pushtune notify",
                 "pushtune deploy"):
        assert step in text
    assert "MAX_ATTEMPTS" in text and "--no-trigger" in text
    assert text.index("pushtune notify") < text.index("pushtune deploy")  # as notify -> deploy in the chain
    # the build page as the freestyle jobs' (docs/jenkins.md "What a build shows"): each run's results
    # archived and its report linked, the runs' lines as the description (RunWrapper.setDescription)
    assert text.index("pushtune deploy") < text.index("pushtune results") < text.index("publishHTML(")
    assert "archiveArtifacts(artifacts: 'pushtune-results/**', allowEmptyArchive: true, followSymlinks: false)" in text
    assert "currentBuild.description = " in text
    # the same agents as the freestyle chain, never `agent any` (the controller has no executors)
    assert f"agent {{ label '{DEFAULT_LABEL}' }}" in text
    assert "agent any" not in code


def test_jenkinsfile_passes_npm_groovy_lint():
    linter = os.environ.get("NPM_GROOVY_LINT") or shutil.which("npm-groovy-lint")
    if not linter:
        unavailable("npm-groovy-lint not installed (npm install -g npm-groovy-lint; needs Java 17+)")
    if not shutil.which("java"):
        unavailable("npm-groovy-lint needs Java 17+, which is not installed (it would download one)")
    result = subprocess.run([linter, "--noserver", "--failon", "error", "--output", "txt",
                             str(JENKINS / "Jenkinsfile")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]


def _walk(node, path=()):
    """Every (path, mapping) of a parsed YAML tree."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, path)


def test_casc_sets_no_attribute_the_checked_core_removed():
    casc = yaml.safe_load((JENKINS / "casc" / "jenkins.yaml").read_text())
    for path, attribute, change in REMOVED_CASC_ATTRIBUTES:
        for where, mapping in _walk(casc):
            assert not (where == path and attribute in mapping), (attribute, change)
        assert attribute not in (JENKINS / "casc" / "jenkins.yaml").read_text().replace(
            f"No `{attribute}`", ""), (attribute, change)


def test_controller_image_is_pinned_to_the_checked_lts():
    dockerfile = (JENKINS / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert froms == [f"jenkins/jenkins:{CHECKED_LTS}-lts-jdk21"]
    assert not re.search(r"^FROM\s+jenkins/jenkins:(lts|latest|jdk)", dockerfile, re.M)  # no floating tag
    docs = (ROOT / "docs" / "jenkins.md").read_text()
    assert f"jenkins/jenkins:{CHECKED_LTS}-lts-jdk21" in docs and f"checked against Jenkins {CHECKED_LTS}" in docs


def test_git_credential_the_jobs_use_is_created_by_casc(rendered):
    jobs = rendered[0]
    used = {e.text for job in jobs.values() for e in job.iter("credentialsId")
            if e.text and job.find("./scm") is not None and e in job.find("./scm").iter()}
    assert used == {"pushtune-git"}
    casc = yaml.safe_load((JENKINS / "casc" / "jenkins.yaml").read_text())
    credentials = casc["credentials"]["system"]["domainCredentials"][0]["credentials"]
    git = next(c["usernamePassword"] for c in credentials
               if c.get("usernamePassword", {}).get("id") == "pushtune-git")
    assert git["password"] == "${trim:${readFile:/run/secrets/git_password}}"
    compose = yaml.safe_load((JENKINS / "docker-compose.yml").read_text())
    assert "git_password" in compose["services"]["jenkins"]["secrets"]
    assert compose["secrets"]["git_password"] == {"file": "./secrets/git_password"}


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_dockerignore_keeps_the_secrets_out_of_the_image():
    compose = yaml.safe_load((JENKINS / "docker-compose.yml").read_text())
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    assert {b["dockerfile"] for b in builds} == {"jenkins/Dockerfile", "jenkins/agent.Dockerfile"}
    for build in builds:
        assert (JENKINS / build["context"]).resolve() == ROOT  # so /.dockerignore is the one used
        assert not (ROOT / f"{build['dockerfile']}.dockerignore").exists()  # it would take precedence
    patterns = _dockerignore_patterns()
    assert not any(p.startswith("!") for p in patterns)  # no exception re-includes anything
    assert "jenkins/secrets" in patterns
    # what the Dockerfile copies must stay in the context
    from fnmatch import fnmatch
    for needed in ("requirements.txt", "pyproject.toml", "README.md", "jobs", "notify", "jenkins",
                   "dockerfiles", "jenkins/plugins.txt", "jenkins/casc/jenkins.yaml",
                   "jenkins/agent-entrypoint.sh"):
        assert not any(fnmatch(needed, p) for p in patterns), needed
    for secret in ("jenkins/secrets", "jenkins/secrets/trigger_token"):
        assert any(secret == p or secret.startswith(p + "/") for p in patterns), secret


def test_no_request_chooses_the_repository_or_widens_the_runtime(rendered):
    """A trigger-token holder may start pull (and train/notify of a recorded run): the git login
    goes only to the installed URL, and RUNTIME offers only the installed choices (core's
    ChoiceParameterDefinition refuses others; the fake's table shows it)."""
    jobs = rendered[0]
    for name, job in jobs.items():
        names = [d.findtext("name") for d in job.iter() if d.tag.endswith("ParameterDefinition")]
        assert "REPO_URL" not in names, name
        url = job.findtext(".//hudson.plugins.git.UserRemoteConfig/url")
        assert url in (None, "https://git.example.org/ml/models.git"), name
        for choice in job.iter("hudson.model.ChoiceParameterDefinition"):
            if choice.findtext("name") == "RUNTIME":
                assert [c.text for c in choice.findall("./choices/a/string")] == ["docker"], name


def test_the_jenkinsfile_header_counts_the_freestyle_jobs():
    from jobs.ci.jenkins import CHAIN

    header = (ROOT / "jenkins" / "Jenkinsfile").read_text().split("pipeline {")[0]
    assert "of the eight" in header and len(CHAIN) == 8
    assert "six jobs" not in header


def test_every_plugin_is_pinned():
    lines = [line.strip() for line in (ROOT / "jenkins" / "plugins.txt").read_text().splitlines()]
    plugins = [line for line in lines if line and not line.startswith("#")]
    assert len(plugins) >= 9
    for line in plugins:
        plugin, sep, version = line.partition(":")
        assert sep and version and plugin, line
    # the controller image: a full LTS version (2.568.2 is the newest LTS tag of jenkinsci/jenkins
    # and jenkinsci/docker as read; 2.568.3 was only a release candidate), never a moving tag
    base = re.search(r"^FROM (\S+)", (ROOT / "jenkins" / "Dockerfile").read_text(), re.M)[1]
    assert re.fullmatch(r"jenkins/jenkins:2\.\d+\.\d+-lts-jdk21", base), base


# The publishers that make the build page tell the story, and the fields their classes read
# (XStream binds elements to fields by name; a misspelt one is dropped with a warning):
#   Description Setter 264.v1957f215dcd5 (jenkinsci/description-setter-plugin)
#     DescriptionSetterPublisher: regexp, regexpForFailed, description, descriptionForFailed,
#     setForMatrix, appendMode. perform(): a build worse than UNSTABLE uses regexpForFailed and
#     descriptionForFailed whenever either is non-null; DescriptionSetterHelper: first matching
#     line, group 1 when description is null.
#   core 2.568.2 ArtifactArchiver: artifacts, excludes, latestOnly, allowEmptyArchive,
#     onlyIfSuccessful, fingerprint, defaultExcludes, caseSensitive, followSymlinks (default true;
#     readResolve sets true when absent). perform(): nothing matched and allowEmptyArchive false
#     on a SUCCESS/UNSTABLE build is an AbortException (a FAILURE).
#   HTML Publisher 427.1 (jenkinsci/htmlpublisher-plugin) HtmlPublisher: reportTargets;
#     HtmlPublisherTarget: reportName, reportDir, reportFiles, alwaysLinkToLastBuild, keepAll,
#     allowMissing (and optional icon, includes, escapeUnderscores, useWrapperFileDirectly,
#     numberOfWorkers, reportTitles); wrapperName is a transient field kept so that old XML
#     still loads (JENKINS-31366), and JJB writes it.
DESCRIBED = {"pushtune-train", "pushtune-tweak", "pushtune-notify", "pushtune-deploy"}
ARCHIVED = {"pushtune-train", "pushtune-notify", "pushtune-deploy"}


def test_train_tweak_notify_and_deploy_set_the_build_description_from_pushtune_results(rendered):
    from jobs.commands.results import DESCRIPTION_PREFIX

    jobs = rendered[0]
    for name, job in jobs.items():
        publishers = job.findall("./publishers/hudson.plugins.descriptionsetter.DescriptionSetterPublisher")
        assert len(publishers) == (1 if name in DESCRIBED else 0), name
        if name not in DESCRIBED:
            continue
        [publisher] = publishers
        regexp = publisher.findtext("regexp")
        # the same for failed builds: JJB's default regexpForFailed is "", which matches any line
        assert regexp and publisher.findtext("regexpForFailed") == regexp, name
        assert publisher.find("description") is None and publisher.find("descriptionForFailed") is None
        assert publisher.find("appendMode") is None  # false: the description is replaced, not appended
        line = f"{DESCRIPTION_PREFIX}run 12 · accuracy 0.9670 ≥ 0.9 at attempt 3 · m v4 is production"
        assert re.search(regexp, line).group(1) == line.removeprefix(DESCRIPTION_PREFIX)
        for other in ("+ pushtune results 12 --to pushtune-results", "description: of something else",
                      "  epoch 1/3: loss 0.2, description: run 1 · x"):
            assert not re.search(regexp, other), other
        assert 'pushtune results "$RUN_ID"' in shell_commands(job)[0], name


def test_train_notify_and_deploy_archive_the_results_and_publish_the_report(rendered):
    jobs = rendered[0]
    for name, job in jobs.items():
        archivers = job.findall("./publishers/hudson.tasks.ArtifactArchiver")
        reports = job.findall("./publishers/htmlpublisher.HtmlPublisher/reportTargets/"
                              "htmlpublisher.HtmlPublisherTarget")
        assert (len(archivers), len(reports)) == ((1, 1) if name in ARCHIVED else (0, 0)), name
        if name not in ARCHIVED:
            continue
        assert 'pushtune results "$RUN_ID" --to pushtune-results' in shell_commands(job)[0], name
        [archiver], [report] = archivers, reports
        fields = {child.tag: child.text for child in archiver}
        assert fields == {"artifacts": "pushtune-results/**", "allowEmptyArchive": "true", "onlyIfSuccessful": "false",
                          "fingerprint": "false", "defaultExcludes": "true", "caseSensitive": "true",
                          "latestOnly": "false", "followSymlinks": "false"}, name
        target = {child.tag: child.text for child in report}
        assert target == {"reportName": "pushtune report", "reportDir": "pushtune-results/report",
                          "reportFiles": "report.html", "alwaysLinkToLastBuild": "true", "keepAll": "true",
                          "allowMissing": "true", "wrapperName": "htmlpublisher-wrapper.html"}, name


def test_the_new_plugins_are_pinned_to_releases_for_the_checked_core():
    pins = dict(line.split(":", 1) for line in (JENKINS / "plugins.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    # release tags checked 2026-12-07, both with jenkins.baseline 2.479 (<= 2.568.2)
    assert pins["description-setter"] == "264.v1957f215dcd5"
    assert pins["htmlpublisher"] == "427.1"  # the SECURITY-3706 fix


def test_casc_keeps_descriptions_plain_text():
    """Descriptions hold text from pushed files: the escaping formatter (core EscapedMarkupFormatter,
    @Symbol plainText), never raw HTML."""
    casc = yaml.safe_load((JENKINS / "casc" / "jenkins.yaml").read_text())
    assert casc["jenkins"]["markupFormatter"] == "plainText"
