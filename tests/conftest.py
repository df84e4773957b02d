"""Shared test helpers: where the shared corpora are, and small message builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NNSPAM_SHARED", ROOT.parent / "shared"))
CORPORA = SHARED / "corpora"
SA_TAR = CORPORA / "spamassassin.tar.xz"
SA_SPLIT = CORPORA / "splits" / "spamassassin.tsv"
SMS_FILE = CORPORA / "sms" / "SMSSpamCollection"
SMS_SPLIT = CORPORA / "splits" / "sms.tsv"


def have_corpora() -> bool:
    return SA_TAR.is_file() and SA_SPLIT.is_file() and SMS_FILE.is_file()


needs_corpora = pytest.mark.skipif(
    not have_corpora() and not os.environ.get("CI"),
    reason="../shared/corpora not found (CI always has it)",
)


# Debian packages of the programs the tests drive; .ci/run apt-installs them all.
PACKAGES = {"procmail": "procmail", "maildrop": "maildrop", "maildirmake": "maildrop",
            "sieve-test": "dovecot-sieve", "sievec": "dovecot-sieve", "setpriv": "util-linux",
            "flock": "util-linux", "spamc": "spamc", "exim": "exim4-daemon-heavy",
            "systemd-analyze": "systemd", "prometheus": "prometheus",
            "redis-server": "redis-server"}


def need(program: str) -> str:
    """The path of an installed program (PATH, then /usr/sbin and /sbin). A missing one
    fails the test under CI, where .ci/run installs it, and skips it elsewhere."""
    import shutil

    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        msg = f"{program} not installed (Debian package {PACKAGES.get(program, '?')})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def make_message(subject: str, body: str, sender: str = "alice@example.org",
                 extra: str = "") -> bytes:
    return (
        f"From: {sender}\nTo: bob@example.net\nSubject: {subject}\n"
        f"Message-ID: <1@example.org>\n{extra}\n{body}\n"
    ).encode()


@pytest.fixture(scope="session")
def sa_corpus(tmp_path_factory):
    """The SpamAssassin corpus unpacked once into a temporary directory."""
    import tarfile

    if not SA_TAR.is_file():
        pytest.fail(f"{SA_TAR} missing")
    d = tmp_path_factory.mktemp("sa")
    with tarfile.open(SA_TAR) as tar:
        tar.extractall(d, filter="data")
    return d / "spamassassin"
