"""The maildir daemon on a fleet's model store (config ``store:``;
nnspam/services/models/fleet.py StoreWriter): two daemons on two mailboxes share the site
model in a real ``redis-server``; a correction made in one mailbox files the next
copy of that message in the other; a correction made while Redis is away is kept and
learned when it returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nnspam.mail import maildir as md
from nnspam.model.core import Model

from helpers import Daemon, Redis, pick, wait_until


@pytest.fixture
def fresh_redis(tmp_path):
    """A Redis of this test's own (a test may stop and start it)."""
    (tmp_path / "redis").mkdir()
    r = Redis(tmp_path / "redis")
    yield r
    r.stop()


def _site_version(fresh_redis) -> str | None:
    v = fresh_redis.client().hget("nnspam:versions", "site")
    return v.decode() if v else None


def _learned_version(fresh_redis) -> str | None:
    """The site version once the learner published one (a seed records no correction)."""
    v = _site_version(fresh_redis)
    if v and fresh_redis.client().hget(f"nnspam:model:site:{v}", "applied"):
        return v
    return None


def _daemons(tmp_path: Path, fresh_redis) -> list[Daemon]:
    out = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        box = md.ensure_maildir(d / "Maildir")
        # the seed model is the shipped one: read-only on disk, the fleet's own copy in Redis
        out.append(Daemon(d, box, Path("default"),
                          extra=f"  checkpoint_every: 1\nstore: {fresh_redis.url}\n"))
    return out


def _ham_the_model_keeps(sa_corpus: Path) -> list[bytes]:
    model = Model.load("default")
    hams = [p.read_bytes() for p in sorted((sa_corpus / "easy_ham").iterdir())[:400]]
    return pick(hams, model, spam=False, n=2)


def test_a_correction_in_one_mailbox_files_the_next_copy_in_another(tmp_path, fresh_redis,
                                                                    sa_corpus):
    ham1, ham2 = _ham_the_model_keeps(sa_corpus)
    a, b = _daemons(tmp_path, fresh_redis)
    a.start()
    b.start()
    try:
        v0 = _site_version(fresh_redis)
        assert v0 is not None, "the first daemon seeds the store with its model"
        for d in (a, b):
            assert "models from the store" in d.text()
        # both daemons keep the ham in the inbox
        pa, pb = md.deliver(a.box, ham1), md.deliver(b.box, ham1)
        wait_until(lambda: a.settled(1) and b.settled(1), 30, "the first decisions")
        assert pa.exists() and pb.exists()

        # the user of mailbox A moves it into Junk: learned as spam, by the fleet's learner
        os.rename(pa, a.box / ".Junk" / "cur" / (pa.name + ":2,S"))
        wait_until(lambda: "put in Junk by the user, learned as spam" in a.text(), 30,
                   "the correction", a)
        wait_until(lambda: _site_version(fresh_redis) != v0, 30, "a new site version")
        v = _site_version(fresh_redis)
        wait_until(lambda: f"site model version {v} loaded" in b.text(), 10, "B's reload", b)

        # its next copy in mailbox B goes to B's Junk (B's model came from the store)
        copy = md.deliver(b.box, ham1)
        wait_until(lambda: b.settled(2), 30, "B's second decision", b)
        assert (b.box / ".Junk" / "new" / copy.name).exists(), b.tail()

        # Redis goes away: both keep filing; a correction in A is kept, not lost ...
        fresh_redis.stop()
        pa2 = md.deliver(a.box, ham2)
        wait_until(lambda: a.settled(2), 30, "A files while Redis is away", a)
        os.rename(pa2, a.box / ".Junk" / "cur" / (pa2.name + ":2,S"))
        wait_until(lambda: "kept to send later" in a.text(), 30, "the correction kept", a)
        # ... and learned once Redis is back (empty: the daemons seed it again)
        fresh_redis.start()
        wait_until(lambda: "kept correction(s) sent" in a.text(), 30, "the kept correction", a)
        # learned: the current site version holds a correction of the new stream
        wait_until(lambda: _learned_version(fresh_redis), 30, "the kept correction learned")
        v2 = _learned_version(fresh_redis)
        wait_until(lambda: f"site model version {v2} loaded" in b.text(), 10, "B's reload", b)
        copy2 = md.deliver(b.box, ham2)
        wait_until(lambda: b.settled(3), 30, "B's third decision", b)
        assert (b.box / ".Junk" / "new" / copy2.name).exists(), b.tail()
    finally:
        rcs = [d.stop() for d in (a, b)]
    assert rcs == [0, 0]
    # the shipped model on disk was never written
    assert not (Path(a.tmp) / "default").exists()


def test_daemon_user_needs_user_model(tmp_path, fresh_redis):
    box = md.ensure_maildir(tmp_path / "Maildir")
    d = Daemon(tmp_path, box, Path("default"),
               extra=f"  user: alice\nstore: {fresh_redis.url}\n")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nnspam", "daemon", "-c", str(d.config),
                        "-m", "default"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "daemon.user needs serve.user_model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- nnspam store: list, push (a new site generation; a per-user directory), pull ----------

def _nnspam(*args: str, cfg: Path, ok: int = 0) -> str:
    import subprocess
    import sys

    if args[0] == "store":  # nnspam store ACTION -c CONFIG ...
        args = (*args[:2], "-c", str(cfg), *args[2:])
    r = subprocess.run([sys.executable, "-m", "nnspam", *args], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == ok, r.stderr
    return r.stdout + r.stderr


def test_store_push_migrates_users_and_rebases_them_on_a_new_site_model(
        tmp_path, fresh_redis, sa_corpus):
    import shutil

    from nnspam.model.core import resolve_model_path

    cfg = tmp_path / "config.yaml"
    users = tmp_path / "users"
    cfg.write_text(f"store: {fresh_redis.url}\nserve:\n  user_model: \"{users}/%u\"\n")
    plain = tmp_path / "plain.yaml"  # the same site, models on disk
    plain.write_text("learn:\n  passes: 0\n")
    ham1, ham2 = _ham_the_model_keeps(sa_corpus)
    msgs = tmp_path / "msgs"
    msgs.mkdir()
    (msgs / "h1").write_bytes(ham1)
    (msgs / "h2").write_bytes(ham2)
    site_a = tmp_path / "site-a"
    shutil.copytree(resolve_model_path("default"), site_a)

    # a new store gets its site model from push (no learner runs: done in-process)
    out = _nnspam("store", "push", str(site_a), cfg=cfg)
    assert "installed as the site model" in out and "0 user model(s) rebased" in out

    # alice's per-user model on disk (before the store) moves into it
    alice = users / "alice"
    users.mkdir()
    shutil.copytree(site_a, alice)
    _nnspam("learn", "-c", str(plain), "-m", str(alice), "--spam", str(msgs / "h1"), cfg=cfg)
    out = _nnspam("store", "push", "--user", "alice", cfg=cfg)
    assert "stored as user:" in out
    listing = _nnspam("store", "list", cfg=cfg)
    assert "site" in listing and f"user:{alice}" in listing and "delta" in listing
    _nnspam("store", "pull", "--user", "alice", str(tmp_path / "alice-out"), cfg=cfg)
    want = Model.load(alice).score([ham1, ham2])
    got = Model.load(tmp_path / "alice-out").score([ham1, ham2])
    assert abs(got - want).max() < 1e-6 and got[0] > 0.5

    # a newly trained site model (here: site A taught 20 more messages) replaces it, and
    # alice's corrections are learned again on it
    site_b = tmp_path / "site-b"
    shutil.copytree(site_a, site_b)
    extra = sorted((sa_corpus / "spam").iterdir())[:20]
    _nnspam("learn", "-c", str(plain), "-m", str(site_b), "--spam", *map(str, extra), cfg=cfg)
    gen_a = fresh_redis.client().hget(
        f"nnspam:model:site:{_site_version(fresh_redis)}", "generation")
    out = _nnspam("store", "push", str(site_b), cfg=cfg)
    assert "1 user model(s) rebased" in out and "1 correction(s) learned again" in out
    gen_b = fresh_redis.client().hget(
        f"nnspam:model:site:{_site_version(fresh_redis)}", "generation")
    assert gen_a and gen_b and gen_a != gen_b
    expected = tmp_path / "expected"
    shutil.copytree(site_b, expected)
    _nnspam("learn", "-c", str(plain), "-m", str(expected), "--spam", str(msgs / "h1"),
            cfg=cfg)
    _nnspam("store", "pull", "--user", "alice", str(tmp_path / "alice-b"), cfg=cfg)
    want = Model.load(expected).score([ham1, ham2])
    got = Model.load(tmp_path / "alice-b").score([ham1, ham2])
    assert abs(got - want).max() < 1e-5

    # with a learner running (a daemon of the fleet), push goes through it
    box = md.ensure_maildir(tmp_path / "Maildir")
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", box, Path("default"),
               extra=f"store: {fresh_redis.url}\nserve:\n  user_model: \"{users}/%u\"\n")
    d.start()
    try:
        wait_until(lambda: fresh_redis.client().get("nnspam:learner"), 30, "the learner", d)
        before = _site_version(fresh_redis)
        out = _nnspam("store", "push", str(site_a), "--wait", "60", cfg=cfg)
        assert "sent to the fleet's learner" in out and "installed" in out
        assert _site_version(fresh_redis) != before
        wait_until(lambda: "new site model installed" in d.text(), 10, "the daemon's log", d)
    finally:
        assert d.stop() == 0
    _nnspam("store", "pull", "--user", "alice", str(tmp_path / "alice-c"), cfg=cfg)
    got = Model.load(tmp_path / "alice-c").score([ham1, ham2])
    want = Model.load(alice).score([ham1, ham2])
    assert abs(got - want).max() < 1e-5  # back on site A: as alice's own model
