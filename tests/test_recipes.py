"""The recipes in filters/, run through the real programs: procmail and
maildrop delivering into a temporary Maildir, Dovecot's sieve-test executing
the vnd.dovecot.filter script, sievec compiling the IMAPSieve report scripts,
and the learner wrapper updating a model.

Debian packages: procmail, maildrop, dovecot-core, dovecot-sieve (and
util-linux for setpriv/flock). Without CI set, a missing program skips its
test; with CI set it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import need
from helpers import (
    FILTERS,
    NNSPAM,
    SieveEnv,
    check_delivery,
    files_in,
    strip_from_line,
    without_our_headers,
)


@pytest.fixture
def model_copy(tmp_path) -> Path:
    from nnspam.model.core import resolve_model_path

    d = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), d)
    return d


# -- procmail -----------------------------------------------------------------------

def procmail(home: Path, msg: bytes, nnspam: str, flags: str) -> subprocess.CompletedProcess:
    for sub in ("tmp", "new", "cur"):
        (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [need("procmail"), f"HOME={home}", f"NNSPAM={nnspam}", f"NNSPAM_FLAGS={flags}",
         f"LOGFILE={home / 'procmail.log'}", "VERBOSE=on", str(FILTERS / "procmailrc")],
        input=msg, capture_output=True, timeout=120, cwd=home)


def test_procmail_spam_to_junk_ham_to_inbox(tmp_path, spam_ham, model_copy):
    spam, ham = spam_ham
    for msg in (spam, ham):
        r = procmail(tmp_path, msg, str(NNSPAM), f"-m {model_copy}")
        log = (tmp_path / "procmail.log").read_text(errors="replace")
        assert r.returncode == 0, log
    junk, inbox = files_in(tmp_path / "Maildir/.Junk/new"), files_in(tmp_path / "Maildir/new")
    assert len(junk) == 1 and len(inbox) == 1, log
    check_delivery(spam, ham, junk[0], inbox[0])


@pytest.mark.parametrize("nnspam,flags", [("/bin/false", ""), (str(NNSPAM), "-m /nonexistent")])
def test_procmail_failing_filter_still_delivers(tmp_path, spam_ham, nnspam, flags):
    spam, _ = spam_ham
    r = procmail(tmp_path, spam, nnspam, flags)
    assert r.returncode == 0
    inbox = files_in(tmp_path / "Maildir/new")
    assert len(inbox) == 1 and not files_in(tmp_path / "Maildir/.Junk/new")
    assert strip_from_line(inbox[0].read_bytes()) == strip_from_line(spam)


# -- maildrop -------------------------------------------------------------------------

def maildrop(home: Path, msg: bytes, nnspam: str, flags: str) -> subprocess.CompletedProcess:
    rc = home / ".mailfilter"
    if not rc.exists():
        shutil.copy(FILTERS / "mailfilter", rc)
        rc.chmod(0o600)
    for sub in ("tmp", "new", "cur"):
        (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MAILDIR=str(home / "Maildir"), NNSPAM=nnspam, NNSPAM_FLAGS=flags)
    return subprocess.run([need("maildrop"), str(rc)], input=msg, capture_output=True,
                          env=env, timeout=120, cwd=home)


def test_maildrop_spam_to_junk_ham_to_inbox(tmp_path, spam_ham, model_copy):
    need("maildirmake")
    spam, ham = spam_ham
    for msg in (spam, ham):
        r = maildrop(tmp_path, msg, str(NNSPAM), f"-m {model_copy}")
        assert r.returncode == 0, r.stderr
    junk, inbox = files_in(tmp_path / "Maildir/.Junk/new"), files_in(tmp_path / "Maildir/new")
    assert len(junk) == 1 and len(inbox) == 1
    assert (tmp_path / "Maildir/.Junk/maildirfolder").is_file()
    check_delivery(spam, ham, junk[0], inbox[0])


@pytest.mark.parametrize("nnspam,flags", [("/bin/false", ""), (str(NNSPAM), "-m /nonexistent")])
def test_maildrop_failing_filter_still_delivers(tmp_path, spam_ham, nnspam, flags):
    spam, _ = spam_ham
    r = maildrop(tmp_path, spam, nnspam, flags)
    assert r.returncode == 0, r.stderr
    inbox = files_in(tmp_path / "Maildir/new")
    assert len(inbox) == 1 and not files_in(tmp_path / "Maildir/.Junk/new")
    assert strip_from_line(inbox[0].read_bytes()) == strip_from_line(spam)


# -- Dovecot Sieve ----------------------------------------------------------------------

@pytest.fixture
def sieve_env():
    need("sieve-test")
    env = SieveEnv()
    yield env
    env.close()


def test_sieve_filter_script_files_spam_into_junk(sieve_env, spam_ham):
    from nnspam.model.core import resolve_model_path

    spam, ham = spam_ham
    model = sieve_env.dir / "model"
    shutil.copytree(resolve_model_path("default"), model)
    sieve_env.install("nnspam-filter", f'NNSPAM={sieve_env.nnspam}\nNNSPAM_FLAGS="-m {model}"\n')
    script = sieve_env.dir / "nnspam.sieve"
    shutil.copy(FILTERS / "nnspam.sieve", script)
    for name, msg in (("spam.eml", spam), ("ham.eml", ham)):
        (sieve_env.dir / name).write_bytes(msg)
        r = sieve_env.sieve_test(script, sieve_env.dir / name, "-e")
        assert r.returncode == 0, r.stderr.decode()
        assert b"non-zero exit code" not in r.stderr, r.stderr.decode()
    maildir = sieve_env.dir / "Maildir"
    junk, inbox = files_in(maildir / ".Junk/new"), files_in(maildir / "new")
    assert len(junk) == 1 and len(inbox) == 1, r.stderr.decode()
    s, h = junk[0].read_bytes(), inbox[0].read_bytes()
    assert b"X-NNSpam-Flag: YES" in s and b"X-NNSpam-Status: No, " in h
    # Dovecot stores the message as it came out of the filter (it may drop an
    # mbox From_ line and ends lines with LF): compare the decoded bodies.
    assert strip_from_line(without_our_headers(s)).split(b"\n\n", 1)[1] == \
        strip_from_line(spam).split(b"\n\n", 1)[1]


def test_sieve_failing_filter_still_delivers(sieve_env, spam_ham):
    spam, _ = spam_ham
    sieve_env.install("nnspam-filter", "NNSPAM=/bin/false\n")
    script = sieve_env.dir / "nnspam.sieve"
    shutil.copy(FILTERS / "nnspam.sieve", script)
    (sieve_env.dir / "spam.eml").write_bytes(spam)
    r = sieve_env.sieve_test(script, sieve_env.dir / "spam.eml", "-e")
    assert r.returncode == 0, r.stderr.decode()
    maildir = sieve_env.dir / "Maildir"
    inbox = files_in(maildir / "new")
    assert len(inbox) == 1 and not files_in(maildir / ".Junk/new")
    assert b"X-NNSpam" not in inbox[0].read_bytes()


@pytest.mark.parametrize("program", ["nnspam-learn", "nnspam-learn-spamc"])
def test_imapsieve_report_scripts_compile(tmp_path, program):
    """report-{spam,ham}.sieve (nnspam-learn) and report-{spam,ham}-spamc.sieve
    (nnspam-learn-spamc, through the scoring server) compile with the plugins they need."""
    sievec = need("sievec")
    suffix = program.removeprefix("nnspam-learn")
    names = (f"report-spam{suffix}.sieve", f"report-ham{suffix}.sieve")
    conf = tmp_path / "dovecot.conf"
    conf.write_text(
        "plugin {\n"
        "  sieve_plugins = sieve_extprograms sieve_imapsieve\n"
        "  sieve_global_extensions = +vnd.dovecot.pipe +vnd.dovecot.environment\n"
        f"  sieve_pipe_bin_dir = {tmp_path}\n"
        "}\n")
    for name in names:
        assert f'pipe :copy "{program}"' in (FILTERS / name).read_text()
        out = tmp_path / (name + ".svbin")
        r = subprocess.run([sievec, "-c", str(conf), str(FILTERS / name), str(out)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and out.stat().st_size > 0, r.stderr
    # Control: without the extprograms plugin the same script must not compile,
    # so the check above really checks the extensions the scripts use.
    bare = tmp_path / "bare.conf"
    bare.write_text("")
    r = subprocess.run([sievec, "-c", str(bare), str(FILTERS / names[0]),
                        str(tmp_path / "x.svbin")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def _spam_share(model_dir: Path, raw: bytes) -> float:
    from nnspam.model.core import Model

    m = Model.load(model_dir)
    return float(m.score([raw])[0])  # the spamicity: network and wide path


@pytest.mark.parametrize("cls", ["--spam", "--ham"])
def test_learner_wrapper_moves_the_score(tmp_path, spam_ham, model_copy, cls):
    need("flock")
    spam, ham = spam_ham
    msg = ham if cls == "--spam" else spam  # teach it the opposite of what it thinks
    before = _spam_share(model_copy, msg)
    env = dict(os.environ, NNSPAM=str(NNSPAM), NNSPAM_MODEL=str(model_copy))
    r = subprocess.run([str(FILTERS / "nnspam-learn"), cls], input=msg, capture_output=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    after = _spam_share(model_copy, msg)
    assert (after > before) if cls == "--spam" else (after < before)


def test_learner_wrapper_per_user_model_and_usage(tmp_path, spam_ham, model_copy):
    spam, _ = spam_ham
    user_dir = tmp_path / "users" / "bob"
    user_dir.mkdir(parents=True)
    shutil.copytree(model_copy, user_dir / "model")
    env = dict(os.environ, NNSPAM=str(NNSPAM), NNSPAM_MODEL=str(tmp_path / "users/%u/model"))
    before = (user_dir / "model/weights.npz").read_bytes()
    r = subprocess.run([str(FILTERS / "nnspam-learn"), "--ham", "bob"], input=spam,
                       capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (user_dir / "model/weights.npz").read_bytes() != before
    r = subprocess.run([str(FILTERS / "nnspam-learn")], input=spam, capture_output=True,
                       env=env, timeout=60)
    assert r.returncode == 64
    # The shipped model is read-only: learning into it fails, loudly.
    env["NNSPAM_MODEL"] = "default"
    r = subprocess.run([str(FILTERS / "nnspam-learn"), "--spam"], input=spam,
                       capture_output=True, env=env, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and b"read-only" in r.stderr


# -- the unsure band in the recipes ------------------------------------------------------

def test_recipes_file_unsure_mail_into_unsure(tmp_path, spam_ham, model_copy):
    """With filter.unsure set (here [0, 1]: every message unsure), procmail, maildrop
    and Sieve file the filter's "X-NNSpam-Status: Unsure" into the Unsure folder, as
    bogofilter's recipes file its Unsure; nothing goes to Junk or the inbox."""
    need("maildirmake")
    need("sieve-test")
    spam, ham = spam_ham
    cfg = tmp_path / "unsure.yaml"
    cfg.write_text("filter:\n  unsure: [0.0, 1.0]\n")
    flags = f"-c {cfg} -m {model_copy}"
    for name, run in (("procmail", procmail), ("maildrop", maildrop)):
        home = tmp_path / name
        home.mkdir()
        for msg in (spam, ham):
            r = run(home, msg, str(NNSPAM), flags)
            assert r.returncode == 0, (name, r.stderr)
        unsure = files_in(home / "Maildir/.Unsure/new")
        assert len(unsure) == 2, name
        assert not files_in(home / "Maildir/.Junk/new") and not files_in(home / "Maildir/new")
        assert all(b"X-NNSpam-Status: Unsure, spamicity=" in p.read_bytes() for p in unsure)
    env = SieveEnv()
    try:
        model = env.dir / "model"
        shutil.copytree(model_copy, model)
        conf = env.dir / "unsure.yaml"
        conf.write_text("filter:\n  unsure: [0.0, 1.0]\n")
        env.install("nnspam-filter", f'NNSPAM={env.nnspam}\nNNSPAM_FLAGS="-c {conf} -m {model}"\n')
        script = env.dir / "nnspam.sieve"
        shutil.copy(FILTERS / "nnspam.sieve", script)
        for name, msg in (("spam.eml", spam), ("ham.eml", ham)):
            (env.dir / name).write_bytes(msg)
            r = env.sieve_test(script, env.dir / name, "-e")
            assert r.returncode == 0, r.stderr.decode()
        maildir = env.dir / "Maildir"
        assert len(files_in(maildir / ".Unsure/new")) == 2
        assert not files_in(maildir / ".Junk/new") and not files_in(maildir / "new")
    finally:
        env.close()
