"""scripts/build-base-image.sh takes its Debian archive from the host's apt sources (or
DEBIAN_MIRROR): only the mirror detection runs here (`--print-mirror`, or the sourced function),
against fake sources under APT_SOURCES_DIR. No root, debootstrap or Docker needed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build-base-image.sh"

MIRROR = "http://mirror.example.net/debian"

# Entries a host has besides its Debian archive: none of them is it.
THIRD_PARTY_LIST = ("deb [signed-by=/usr/share/keyrings/sdk.gpg arch=amd64] https://apt.example.com/sdk"
                    " cloud-sdk-bookworm main\n")
THIRD_PARTY_SOURCES = """\
Types: deb
URIs: https://node.example.com/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/node.gpg
"""


def sources(tmp_path: Path, files: dict[str, str]) -> Path:
    """An /etc/apt look-alike holding `files` (paths relative to it)."""
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def detect(apt: Path, *, mirror: str | None = None, sourced: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBIAN_MIRROR", "APT_SOURCES_DIR")}
    env["APT_SOURCES_DIR"] = str(apt)
    if mirror is not None:
        env["DEBIAN_MIRROR"] = mirror
    # docker and debootstrap are never reached: a PATH without them would make a slip visible
    env["PATH"] = "/usr/bin:/bin"
    command = (["bash", "-c", 'source "$1" && debian_mirror', "bash", str(SCRIPT)] if sourced
               else ["bash", str(SCRIPT), "--print-mirror"])
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def assert_found(done: subprocess.CompletedProcess, expected: str) -> None:
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n" and done.stderr == ""


def test_one_line_format_skips_what_is_not_the_debian_archive(tmp_path):
    apt = sources(tmp_path, {"sources.list": f"""\
# the host's sources
{THIRD_PARTY_LIST}
deb-src {MIRROR} bookworm main
# deb http://commented.example.net/debian bookworm main
deb http://security.example.net/debian-security bookworm-security main
deb http://backports.example.net/debian bookworm-backports main
deb http://contrib-only.example.net/debian bookworm contrib non-free
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
  deb [ arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg ] {MIRROR} bookworm main contrib  # ours
deb http://later.example.net/debian bookworm main
"""})

    assert_found(detect(apt), MIRROR)
    assert_found(detect(apt, sourced=True), MIRROR)  # the function alone, as the build uses it


def test_deb822_format_reads_the_first_enabled_debian_stanza(tmp_path):
    apt = sources(tmp_path, {
        "sources.list.d/debian.sources": f"""\
# disabled, and source packages only: neither counts
Types: deb
URIs: http://disabled.example.net/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://source-only.example.net/debian
Suites: bookworm
Components: main

types: deb deb-src
# a comment inside the stanza
URIs: {MIRROR}
 http://second-uri.example.net/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGP...
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://security.example.net/debian-security
Suites: bookworm-security
Components: main
""",
        "sources.list.d/aaa-node.sources": THIRD_PARTY_SOURCES,  # read first, not Debian
        "sources.list.d/00-old.list.disabled": "deb http://disabled-file.example.net/debian bookworm main\n",
        "sources.list.d/01-notes.txt": "deb http://not-a-sources-file.example.net/debian bookworm main\n",
    })

    assert_found(detect(apt), MIRROR)


def test_sources_are_read_in_apt_order(tmp_path):
    """sources.list first, then sources.list.d by name with .list and .sources alike."""
    stanza = "Types: deb\nURIs: http://{}.example.net/debian\nSuites: trixie\nComponents: main\n"
    apt = sources(tmp_path, {
        "sources.list.d/20-b.sources": stanza.format("b"),
        "sources.list.d/10-a.list": "deb http://a.example.net/debian stable main\n",
    })
    assert_found(detect(apt), "http://a.example.net/debian")

    (apt / "sources.list").write_text("deb http://main-list.example.net/debian sid main\n")
    assert_found(detect(apt), "http://main-list.example.net/debian")


def test_debian_mirror_overrides_the_host_sources(tmp_path):
    apt = sources(tmp_path, {"sources.list": f"deb {MIRROR} bookworm main\n"})
    override = "http://override.example.org/debian"

    assert_found(detect(apt, mirror=override), override)
    assert_found(detect(apt, mirror=override, sourced=True), override)
    assert_found(detect(tmp_path / "nowhere", mirror=override), override)  # no sources needed
    assert_found(detect(apt, mirror=""), MIRROR)  # set but empty: the host's


@pytest.mark.parametrize("files", [
    {},
    {"sources.list": THIRD_PARTY_LIST + "deb http://security.example.net/debian-security bookworm-security main\n",
     "sources.list.d/node.sources": THIRD_PARTY_SOURCES,
     "sources.list.d/ubuntu.list": "deb http://ubuntu.example.net/ubuntu noble main restricted\n"},
], ids=["no sources", "no Debian archive among them"])
def test_no_archive_and_no_override_is_a_one_line_error(tmp_path, files):
    apt = sources(tmp_path, files)

    for done in (detect(apt), detect(apt, sourced=True)):
        assert done.returncode == 1 and done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert line.startswith("build-base-image: no Debian archive in the apt sources")
        assert str(apt / "sources.list") in line and "DEBIAN_MIRROR" in line


def test_the_script_names_no_archive_host():
    text = SCRIPT.read_text()
    assert re.findall(r"\b(?:https?|ftp)://[\w.-]+", text) == []
    assert "${DEBIAN_MIRROR:-http" not in text  # no built-in default address
