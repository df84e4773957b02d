"""A fleet of ``nnspam serve`` instances sharing their models through Redis (config
``store:``; nnspam/services/models/fleet.py, store.py, nnspam/model/delta.py): per-user models
stored as deltas, one learner, new versions seen by every server, Redis going away and
coming back, a server killed mid-run. Driven by a real ``redis-server`` (Debian's
package) and SpamAssassin's ``spamc``."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nnspam.services.delivery import pipefilter

from conftest import Server, free_port, need
from helpers import Redis


def _port_free_on(hosts: list[str]) -> int:
    """A port free on every one of ``hosts`` (the servers share one port: spamc -d takes
    several hosts but one port)."""
    for _ in range(50):
        port = free_port()
        try:
            for h in hosts:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def _serve(tmp: Path, cfg: Path, host: str, port: int, workers: int) -> Server:
    """One ``nnspam serve`` of the fleet (the shared config, no Unix socket), in its own
    process group: :meth:`~conftest.Server.kill` (SIGKILL) takes its workers too, as
    systemd's KillMode=control-group would."""
    return Server(tmp, cfg=cfg, host=host, port=port, args=("--workers", str(workers)),
                  unix=False, own_group=True, start_timeout=90)


def _filter_output(raw: bytes, cfg: Path) -> bytes:
    """What ``nnspam filter -c cfg`` writes (in-process, its own code path, the model
    on disk)."""
    out = io.BytesIO()
    args = pipefilter.build_parser().parse_args(["-c", str(cfg)])
    assert pipefilter.run(args, io.BytesIO(raw), out) == 0
    return out.getvalue()


def _hams(sa_corpus: Path, n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((sa_corpus / "easy_ham").iterdir())[:n]]


def _wait_for(what, timeout: float, step: float = 0.05):
    """Poll ``what()`` until it is true; returns (value, seconds taken)."""
    t0 = time.monotonic()
    while True:
        got = what()
        if got or time.monotonic() - t0 > timeout:
            return got, time.monotonic() - t0
        time.sleep(step)


def _settled(what, timeout: float, times: int = 6):
    """Poll ``what()`` until it is true ``times`` times in a row (a server's requests go
    to any of its workers, each with its own watcher: one true answer says one worker has
    the new version); returns (whether it settled, seconds taken)."""
    t0 = time.monotonic()
    run = 0
    while time.monotonic() - t0 <= timeout:
        run = run + 1 if what() else 0
        if run >= times:
            return True, time.monotonic() - t0
        time.sleep(0.02)
    return False, time.monotonic() - t0


# -- the model delta, without Redis ---------------------------------------------------

@pytest.fixture(scope="module")
def site_model():
    from nnspam.model.core import Model

    return Model.load("default")


def test_a_user_model_is_its_delta_over_the_site_model(site_model, sa_corpus):
    """Rebuilt from its delta, a per-user model scores exactly as the model that learned
    (both ways of building it), shares the site network, and its delta is small."""
    from nnspam.model import delta as D
    from nnspam.model.correct import Rule, correct

    site = site_model
    user = D.private_copy(site)
    hams = _hams(sa_corpus, 40)
    spams = [p.read_bytes() for p in sorted((sa_corpus / "spam").iterdir())[:20]]
    for raw in hams[:5]:
        correct(user, [user.tokens(raw)], "spam", Rule(), source="tell")
    for raw in spams[:3]:
        correct(user, [user.tokens(raw)], "ham", Rule(), source="tell")
    delta = D.make_delta(site, user)
    # the site model's files: 13 MB; the delta about 14 kB a correction, most of it the
    # grams part's weights and variances at the message's 4-gram slots
    assert D.delta_size(delta) < 200_000
    toks = [user.tokens(r) for r in hams + spams]
    want = user.spamicity_of_tokens(toks)
    assert (want != site.spamicity_of_tokens(toks)).any()
    shared = D.apply_delta(site, delta)
    private = D.apply_delta(site, delta, private=True)
    assert shared.network is site.network and private.network is not site.network
    assert (shared.spamicity_of_tokens(toks) == want).all()
    assert (private.spamicity_of_tokens(toks) == want).all()
    assert len(private.journal) == 8 and len(shared.journal) == 0
    # the general way (model files through Model.load) gives the same model
    head, arrays = D._read_delta(delta)
    meta = {**D._meta(site), **head["meta"]}
    files = D._through_files(meta, D._overlay(D._arrays(site), head, arrays), head, site)
    assert (files.spamicity_of_tokens(toks) == want).all()
    # the learner's copy learns on: forget undoes the first lesson through its journal
    from nnspam.model.correct import forget

    assert forget(private, [private.tokens(hams[0])])[0] is not None
    assert D.make_delta(site, private)["delta.json"] != delta["delta.json"]


def test_a_delta_with_network_passes_and_unknown_fields_rebuilds_exactly(site_model,
                                                                        sa_corpus):
    """learn.passes > 0 changes network rows (stored sparse); a model.json field this
    nnspam does not set directly goes through the model files."""
    from nnspam.model import delta as D
    from nnspam.model.correct import Rule, correct

    site = site_model
    user = D.private_copy(site)
    hams = _hams(sa_corpus, 10)
    for raw in hams[:3]:
        correct(user, [user.tokens(raw)], "spam", Rule(passes=1, max_passes=1))
    user.summary["note"] = "x"
    delta = D.make_delta(site, user)
    import json

    head = json.loads(delta["delta.json"])
    assert head["arrays"]["W1"] == "sparse" and "summary" in head["meta"]
    toks = [user.tokens(r) for r in hams]
    rebuilt = D.apply_delta(site, delta)
    assert rebuilt.network is not site.network
    assert (rebuilt.spamicity_of_tokens(toks) == user.spamicity_of_tokens(toks)).all()


# -- the store ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    yield r
    r.stop()


def test_store_versions_lease_and_fencing(redis_server):
    from nnspam.services.models.store import LeaseLost, Store, StoreUnavailable, VersionMoved

    redis_server.client().flushdb()
    a, b = Store(redis_server.url), Store(redis_server.url)
    v1 = a.seed("m", {"model.json": b"{}"}, {"kind": "full"})
    assert v1 and v1.startswith("1-") and b.seed("m", {"model.json": b"x"}) is None
    assert b.fetch("m") == (v1, {"kind": b"full", "model.json": b"{}"})
    assert a.acquire("A", 5000) and not b.acquire("B", 5000) and a.acquire("A", 5000)
    with pytest.raises(LeaseLost):  # fenced: only the lease holder publishes
        b.publish("m", {"model.json": b"b"}, token="B", expect=v1)
    with pytest.raises(VersionMoved):
        a.publish("m", {"model.json": b"a"}, token="A", expect="7-x")
    epoch = b.epoch()
    v2 = a.publish("m", {"model.json": b"a"}, token="A", expect=v1)
    assert v2.startswith("2-") and b.version("m") == v2 and b.epoch() == epoch + 1
    assert b.fetch("m", v1) is not None  # the old version stays readable for a while
    assert 0 < redis_server.client().ttl(a.model_key("m", v1)) <= 60
    a.release("A")
    assert b.acquire("B", 5000) and b.holder() == "B"
    with pytest.raises(StoreUnavailable):
        Store(f"redis://127.0.0.1:{free_port()}/0").epoch()


# -- a fleet of three servers -------------------------------------------------------------

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis_server):
    need("spamc")
    tmp = tmp_path_factory.mktemp("fleet")
    redis_server.client().flushdb()
    cfg = tmp / "config.yaml"
    cfg.write_text(f"store: {redis_server.url}\nserve:\n  user_model: \"users/%u\"\n")
    port = _port_free_on(HOSTS)
    servers: list[Server] = []
    try:
        for host, workers in zip(HOSTS, (2, 1, 1), strict=True):
            servers.append(_serve(tmp, cfg, host, port, workers))
        yield {"tmp": tmp, "cfg": cfg, "port": port, "servers": servers,
               "redis": redis_server}
    finally:
        for s in servers:
            s.stop()


def _learner_pid(redis_server) -> int | None:
    holder = redis_server.client().get("nnspam:learner")
    return int(holder.decode().split(":")[1]) if holder else None


@pytest.mark.slow
def test_a_tell_on_one_server_changes_the_verdict_on_the_other_two(fleet, sa_corpus):
    """spamc -L spam on one server: the other two (every worker) say spam within 2 s,
    for the user who told it (their per-user model, ~10 kB in Redis), and for nobody
    else (the site model is taught at the end of the module: the next test compares
    with the shipped model)."""
    spamc = need("spamc")
    s1, s2, s3 = fleet["servers"]
    raw, other = _hams(sa_corpus, 2)
    assert all(s.check(raw, "alice") < 5.0 for s in (s1, s2, s3))
    got = subprocess.run([spamc, "-d", s1.host, "-p", str(fleet["port"]), "-u", "alice",
                          "-L", "spam"], input=raw, capture_output=True, timeout=30)
    assert got.returncode == 0, got.stderr
    t0 = time.monotonic()
    for s in (s2, s3, s1, s2, s3):  # several requests: s1 has two workers
        ok, took = _settled(lambda s=s: s.check(raw, "alice") >= 5.0, 2.0)
        assert ok, s.log()
    assert time.monotonic() - t0 < 2.0
    assert s2.check(raw, "bob") < 5.0 and s3.check(raw) < 5.0  # only alice's model
    r = fleet["redis"].client()
    version = r.hget("nnspam:versions", "user:users/alice").decode()
    assert r.memory_usage(f"nnspam:model:user:users/alice:{version}") < 50_000
    # one learner in the fleet; the stream is empty once it learned
    assert _learner_pid(fleet["redis"]) is not None
    assert r.xlen("nnspam:corrections") == 0


@pytest.mark.slow
def test_1000_messages_while_redis_restarts_and_a_server_is_killed(fleet, sa_corpus):
    """1,000 real messages spread over the three servers with spamc -d (rotating the
    host list; spamc fails over): Redis is stopped (TELL answers 75, classification goes
    on), the learner's server is SIGKILLed, Redis comes back empty; every message comes
    back exactly as in-process nnspam filter writes it (the site model is untouched:
    the TELLs of this test go to a user's model) and TELL works again by itself."""
    spamc = need("spamc")
    redis = fleet["redis"]
    servers = list(fleet["servers"])
    port = fleet["port"]
    files = (sorted((sa_corpus / "spam").iterdir())[:300]
             + sorted((sa_corpus / "easy_ham").iterdir())[2:602]
             + sorted((sa_corpus / "hard_ham").iterdir())[:100])
    msgs = [p.read_bytes() for p in files]
    assert len(msgs) == 1000
    cfg = fleet["tmp"] / "filter.yaml"
    cfg.write_text("")  # the filter: the shipped model from disk, as the site model
    want = [_filter_output(raw, cfg) for raw in msgs]
    events: dict[str, object] = {}
    lock = threading.Lock()
    done = [0]

    def one(i: int) -> bytes:
        order = HOSTS[i % 3:] + HOSTS[: i % 3]
        got = subprocess.run([spamc, "-d", ",".join(order), "-p", str(port),
                              "--filter-retries", "3", "--filter-retry-sleep", "0",
                              "-u", "carol"], input=msgs[i], capture_output=True, timeout=120)
        with lock:
            done[0] += 1
        return got.stdout

    def chaos() -> None:
        def at(n: int) -> None:
            while done[0] < n:
                time.sleep(0.01)

        at(200)
        victim_pid = _learner_pid(redis)
        redis.stop()
        events["tells"] = [s.tell(msgs[0], "ham", "probe") for s in servers]
        at(450)
        # SIGKILL the server whose worker holds the learner's lease
        victim = next((s for s in servers if victim_pid is not None and (
            s.proc.pid == victim_pid or _parent(victim_pid) == s.proc.pid)), servers[2])
        victim.kill()
        events["victim"] = victim
        at(650)
        redis.start()
        events["restarted"] = time.monotonic()

    t = threading.Thread(target=chaos)
    t.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(one, range(len(msgs))))
    elapsed = time.monotonic() - t0
    t.join()
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, (f"{len(bad)} differ, first {files[bad[0]]}:\n"
                     f"{got[bad[0]][:600]!r}\n{want[bad[0]][:600]!r}")
    assert all(r.startswith(b"SPAMD/1.5 75 ") for r in events["tells"]), events["tells"]
    victim = events["victim"]
    live = [s for s in servers if s is not victim]
    # TELL works again by itself once Redis is back; a new learner learns it
    ok, took = _wait_for(lambda: live[0].tell(msgs[1], "spam", "probe")
                         .startswith(b"SPAMD/1.5 0 "), 15, 0.2)
    assert ok, live[0].log()
    _, took = _wait_for(lambda: live[1].check(msgs[1], "probe") >= 5.0, 10, 0.1)
    assert live[1].check(msgs[1], "probe") >= 5.0, live[1].log()
    assert _learner_pid(redis) is not None
    # the outage was logged once per process, not per request
    for s in live:
        text = s.log()
        assert text.count("unreachable") <= 3 and "is back" in text
    print(f"1000 messages in {elapsed:.1f} s through the fleet")
    # the killed server comes back and learns the fleet's models
    fleet["servers"][fleet["servers"].index(victim)] = _serve(
        fleet["tmp"], fleet["cfg"], victim.host, port, 1)


def _parent(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.mark.slow
def test_nnspam_learn_goes_through_the_stream(fleet, sa_corpus, tmp_path):
    """nnspam learn with the store configured: its corrections reach the fleet's learner
    and every server; --forget undoes them through the user model's journal."""
    raw = _hams(sa_corpus, 5)[4]
    msg = tmp_path / "m.eml"
    msg.write_bytes(raw)
    s1, s2, s3 = fleet["servers"]
    assert s2.check(raw, "dave") < 5.0
    run = [sys.executable, "-m", "nnspam", "learn", "-c", str(fleet["cfg"])]
    got = subprocess.run(run + ["--spam", "--user", "dave", str(msg)], capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 0 and "learned 1 spam message(s) into user:users/dave" in \
        got.stderr, got.stderr
    ok, _ = _settled(lambda: s2.check(raw, "dave") >= 5.0 and s3.check(raw, "dave") >= 5.0,
                     2.0)
    assert ok, s2.log()[-2000:] + s3.log()[-2000:]
    got = subprocess.run(run + ["--forget", "--user", "dave", str(msg)], capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 0 and "forgot 1 of 1" in got.stderr, got.stderr
    ok, _ = _settled(lambda: s1.check(raw, "dave") < 5.0, 2.0)
    assert ok, s1.log()[-2000:]
    # spamc -L forget: the learner answers whether the journal held it
    again = subprocess.run(run + ["--forget", "--user", "dave", str(msg)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "not in the correction journal" in again.stderr


@pytest.mark.slow
def test_a_tell_without_user_teaches_the_site_model_of_every_server(fleet, sa_corpus):
    """Last in the module (it changes the site model): a TELL without User learns into
    the site model; the other servers score with the new version within 2 s."""
    s1, s2, s3 = fleet["servers"]
    raw = _hams(sa_corpus, 8)[7]
    assert all(s.check(raw) < 5.0 for s in (s1, s2, s3))
    before = fleet["redis"].client().hget("nnspam:versions", "site")
    assert s3.tell(raw, "spam").startswith(b"SPAMD/1.5 0 EX_OK")
    ok, took = _settled(lambda: all(s.check(raw) >= 5.0 for s in (s1, s2, s3)), 2.0)
    assert ok, (took, [s.log()[-3000:] for s in (s1, s2, s3)])
    assert fleet["redis"].client().hget("nnspam:versions", "site") != before


def test_the_instance_unit_passes_systemd_analyze_verify(tmp_path):
    """scripts/nnspam-serve@.service: one instance per listening address."""
    exe = need("systemd-analyze")
    text = (Path(__file__).resolve().parents[1] / "scripts" / "nnspam-serve@.service"
            ).read_text()
    for key in ("Type=notify", "--listen %i:783", "Wants=redis-server.service",
                "ProtectSystem=strict", "KillMode=mixed"):
        assert key in text
    nnspam = Path(sys.executable).with_name("nnspam")
    (tmp_path / "nnspam-serve@.service").write_text(
        text.replace("/opt/nnspam/bin/nnspam", str(nnspam)))
    r = subprocess.run([exe, "verify", str(tmp_path / "nnspam-serve@127.0.0.2.service")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
