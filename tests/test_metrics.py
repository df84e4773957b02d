"""Prometheus metrics of ``nnspam serve`` and ``nnspam daemon`` (nnspam/services/metrics.py).

The end-to-end test runs a real Prometheus server (Debian package ``prometheus``) that
scrapes a pre-forked ``nnspam serve --workers 2 --metrics`` every second, sends
messages with the real ``spamc`` and asks Prometheus' HTTP API (PromQL) until the
count of scored messages is what was sent, also after every worker was killed and
replaced. The daemon's metrics, a single-worker server's, the names, the config check
and the pipe filter's independence from prometheus_client are checked too.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import parser as prom_parser  # the dev extra has it (CI: always)

from nnspam.config import DEFAULTS, ConfigError, load_config
from nnspam.mail import maildir as md
from nnspam.model.core import resolve_model_path
from nnspam.services import metrics

from conftest import ROOT, Server, free_port, make_message, need
from helpers import Daemon, spamd_request, wait_until

# -- helpers -------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> tuple[Samples, dict[str, tuple[str, str]]]:
    """Samples ((name, labels) -> value) and families (name -> (type, help)) of a scrape."""
    samples: Samples = {}
    families = {}
    for fam in prom_parser.text_string_to_metric_families(text):
        families[fam.name] = (fam.type, fam.documentation)
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return parse(r.read().decode())[0]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def writable_model(tmp: Path) -> Path:
    dest = tmp / "model"
    shutil.copytree(resolve_model_path("default"), dest)
    return dest


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


HAMS = [make_message(f"Minutes of meeting {i}", f"Hello Bob,\nthe minutes of our meeting "
                     f"number {i} are attached. Lunch on Thursday?\nAlice") for i in range(40)]
SPAMS = [make_message(f"WIN ${i},000,000 NOW", "Dear friend, you have WON a FREE prize! Click "
                      "here to claim your cash, viagra, cheap meds, no prescription, limited "
                      "offer, act now!!! $$$", sender="winner@lottery.example")
         for i in range(40)]


class Prometheus:
    """A real Prometheus server scraping ``target`` every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        binary = need("prometheus")
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                       "scrape_configs:\n  - job_name: nnspam\n    scrape_interval: 1s\n"
                       f"    static_configs:\n      - targets: ['{target}']\n")
        self.logfile = tmp / "prometheus.log"
        self._log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited:\n" + self.log())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not get ready:\n" + self.log())

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")[-3000:]

    def query(self, promql: str) -> float | None:
        """The value of an instant query with one result (None: no result yet)."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, want: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.query(promql)
            if got == want:
                return
            time.sleep(0.5)
        raise AssertionError(f"{promql} = {got}, not {want} after {timeout} s; targets: "
                             + self.targets())

    def targets(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets",
                                    timeout=10) as r:
            return json.dumps([(t["scrapeUrl"], t["health"], t["lastError"])
                               for t in json.load(r)["data"]["activeTargets"]])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _spamc_check(srv: Server, raw: bytes) -> None:
    got = srv.spamc(["-c"], raw)
    assert got.returncode in (0, 1), got.stderr  # 1: spam; anything else: not scored
    assert re.fullmatch(rb"\d+\.\d/5\.0\n", got.stdout), got.stdout


def _multiproc_dir(log: str) -> Path:
    m = re.search(r"worker files in (\S+)\)", log)
    assert m, log
    return Path(m.group(1))


# -- end to end: Prometheus scrapes a pre-forked server ---------------------------------------

def test_prometheus_sees_every_message_of_every_worker_also_after_they_died(tmp_path):
    need("spamc")
    mport = free_port()
    srv = Server(tmp_path, args=("--workers", "2", "--metrics", f"127.0.0.1:{mport}"))
    prom = None
    try:
        prom = Prometheus(tmp_path, f"127.0.0.1:{mport}")
        first = [m for pair in zip(SPAMS[:6], HAMS[:6], strict=True) for m in pair]  # 12
        second = SPAMS[6:10] + HAMS[6:10]  # 8
        n = len(first) + len(second)
        with cf.ThreadPoolExecutor(4) as ex:  # concurrent: both workers take some
            list(ex.map(lambda m: _spamc_check(srv, m), first))
        prom.wait_for("sum(nnspam_messages_scored_total)", len(first))
        assert prom.query('sum(nnspam_messages_scored_total{verdict="spam"})') >= 1
        assert prom.query('sum(nnspam_messages_scored_total{verdict="ham"})') >= 1
        prom.wait_for("sum(nnspam_serve_handler_threads)", 2 * 32)  # 2 workers x 32

        # Every worker that counted those messages dies; the supervisor starts others.
        # Their counts stay in the sum (their files are kept), their gauges go.
        old = children(srv.proc.pid)
        assert len(old) == 2
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(set(children(srv.proc.pid)) - set(old)) == 2, 30,
                   "two new workers")
        with cf.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda m: _spamc_check(srv, m), second))
        prom.wait_for("sum(nnspam_messages_scored_total)", n)
        prom.wait_for("sum(nnspam_scoring_duration_seconds_count)", n)
        prom.wait_for('sum(nnspam_errors_total{kind="worker_exit"})', 2)
        prom.wait_for("sum(nnspam_serve_handler_threads)", 2 * 32)
        prom.wait_for("sum(nnspam_serve_connections_in_progress)", 0)
        assert prom.query('up{job="nnspam"}') == 1
        # the latency histogram is usable as such
        p99 = prom.query("histogram_quantile(0.99, sum by (le) "
                         "(nnspam_scoring_duration_seconds_bucket))")
        assert p99 is not None and 0 < p99 <= 10
    finally:
        if prom is not None:
            prom.stop()
        assert srv.stop() == 0
    assert not _multiproc_dir(srv.log()).exists()  # the private directory is removed


# -- one worker, read /metrics directly -----------------------------------------------------

def test_single_worker_counts_verdicts_tells_reloads_and_errors(tmp_path):
    model = writable_model(tmp_path)
    mport = free_port()
    srv = Server(tmp_path, str(model), extra_cfg="serve:\n  max_size: 3000\n",
                 args=("--workers", "1", "--metrics", f"127.0.0.1:{mport}"))
    try:
        before = scrape(mport)
        # every series of the front exists from the start, at 0
        for v in metrics.VERDICTS:
            assert before[("nnspam_messages_scored_total",
                           frozenset({("front", "serve"), ("verdict", v)}))] == 0
        assert total(before, "nnspam_serve_handler_threads") == 32
        for raw in (HAMS[0], SPAMS[0], HAMS[1]):
            assert srv.request(spamd_request("CHECK", raw)).startswith(b"SPAMD/1.5 0 EX_OK")
        big = make_message("big", "word " * 1000)  # over serve.max_size: skipped
        assert b"Spam: False ; 0.0 / 5.0" in srv.request(spamd_request("CHECK", big))
        assert srv.request(b"NONSENSE\r\n\r\n").startswith(b"SPAMD/1.5 76 ")
        assert srv.request(b"FLY SPAMC/1.5\r\n\r\n").startswith(b"SPAMD/1.5 64 ")
        tell = spamd_request("TELL", HAMS[2], Message_class="spam", Set="local")
        assert b"DidSet: local" in srv.request(tell)
        # saved by another process (nnspam learn): loaded again on the next request
        learn = subprocess.run([sys.executable, "-m", "nnspam", "learn", "-c", str(srv.cfg),
                                "-m", str(model), "--ham", "-"], input=HAMS[3],
                               capture_output=True, cwd=ROOT)
        assert learn.returncode == 0, learn.stderr
        srv.request(spamd_request("CHECK", HAMS[4]))
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "INFO model reloaded" in srv.log(), 30, "the SIGHUP reload")

        s = scrape(mport)
        assert total(s, "nnspam_messages_scored_total") == 5
        assert total(s, "nnspam_messages_scored_total", verdict="skipped") == 1
        assert total(s, "nnspam_messages_scored_total", verdict="spam") >= 1
        assert total(s, "nnspam_scoring_duration_seconds_count") == 4  # skipped: not timed
        assert total(s, "nnspam_scoring_duration_seconds_bucket", le="+Inf") == 4
        assert 0 < total(s, "nnspam_scoring_duration_seconds_sum") < 40
        assert total(s, "nnspam_corrections_learned_total", path="tell", **{"class": "spam"}) == 1
        assert total(s, "nnspam_model_saves_total", front="serve") == 1
        assert total(s, "nnspam_model_reloads_total", reason="changed") == 1
        assert total(s, "nnspam_model_reloads_total", reason="signal") == 1
        assert total(s, "nnspam_errors_total", kind="protocol") == 1
        assert total(s, "nnspam_errors_total", kind="usage") == 1
        assert total(s, "nnspam_errors_total") == 2
        assert total(s, "nnspam_serve_connections_in_progress") == 0
    finally:
        assert srv.stop() == 0
    assert not _multiproc_dir(srv.log()).exists()


def test_metrics_port_in_use_is_one_line_exit_2_and_nothing_is_left(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sock = tmp_path / "s.sock"
        r = subprocess.run([sys.executable, "-m", "nnspam", "serve", "--socket", str(sock),
                            "--workers", "2", "--metrics", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120,
                           env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nnspam: cannot serve metrics on 127.0.0.1:{port}: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not sock.exists()
    assert not list(tmp_path.glob("nnspam-metrics-*"))


# -- the daemon ------------------------------------------------------------------------------

def test_daemon_metrics_count_scores_corrections_and_checkpoints(tmp_path):
    box = md.ensure_maildir(tmp_path / "Maildir")
    model = writable_model(tmp_path)
    mport = free_port()
    d = Daemon(tmp_path, box, model, extra="  checkpoint_every: 1\n  max_message_bytes: 3000\n"
               f"metrics: 127.0.0.1:{mport}\n").start()  # top-level key: the config's
    try:
        s = scrape(mport)
        assert total(s, "nnspam_messages_scored_total", front="daemon") == 0
        assert ("nnspam_daemon_queue_depth", frozenset()) in s
        assert ("nnspam_serve_handler_threads", frozenset()) not in s  # serve only
        sent = [md.deliver(box, m) for m in (HAMS[0], HAMS[1], SPAMS[0],
                                             make_message("big", "word " * 1000))]
        wait_until(lambda: d.settled(4), 30, "four decisions", d)
        kept = [p for p in sent if p.exists()]
        assert kept  # at least one ham stays in the inbox
        s = scrape(mport)
        assert total(s, "nnspam_messages_scored_total", front="daemon") == 4
        assert total(s, "nnspam_messages_scored_total", verdict="skipped") == 1
        assert total(s, "nnspam_scoring_duration_seconds_count", front="daemon") == 3
        # the user moves a message the daemon kept into Junk: a correction, learned
        os.rename(kept[0], box / ".Junk" / "cur" / (kept[0].name + ":2,S"))
        wait_until(lambda: "put in Junk by the user, learned as spam" in d.text(), 30,
                   "the correction", d)
        wait_until(lambda: total(scrape(mport), "nnspam_model_saves_total") >= 1, 30,
                   "the checkpoint", d)
        s = scrape(mport)
        assert total(s, "nnspam_corrections_learned_total", path="daemon",
                     **{"class": "spam"}) == 1
        assert total(s, "nnspam_errors_total", front="daemon") == 0
        assert total(s, "nnspam_daemon_queue_depth") == 0
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded config and model" in d.text(), 30, "the reload", d)
        assert total(scrape(mport), "nnspam_model_reloads_total", reason="signal") == 1
    finally:
        rc = d.stop()
    assert rc == 0


def test_daemon_bad_metrics_address_is_one_line_exit_2_before_it_starts(tmp_path):
    box = md.ensure_maildir(tmp_path / "Maildir")
    cfg = tmp_path / "c.yaml"
    state = tmp_path / "state.sqlite3"
    cfg.write_text(f"daemon:\n  state: {state}\n")
    r = subprocess.run([sys.executable, "-m", "nnspam", "daemon", "-c", str(cfg), "--maildir",
                        str(box), "--metrics", "localhost:9183"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("nnspam: --metrics 'localhost:9183': 'localhost' is not an IP "
                                "address (IPv6: [ADDRESS]:PORT)")
    assert not state.exists() and not (box / ".Junk").exists()


# -- names, the hooks, multiprocess mode in-process --------------------------------------------

NAME = re.compile(r"nnspam_[a-z][a-z0-9_]*")


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_metric_names_follow_prometheus_conventions(name):
    kind, labels, doc = metrics.METRICS[name]
    assert NAME.fullmatch(name) and "__" not in name
    assert name.endswith("_total") == (kind == "counter")
    if kind == "histogram":
        assert name.endswith("_seconds")  # base unit in the name
    for unit in ("milliseconds", "ms", "bytes_kb"):
        assert not name.endswith("_" + unit)
    for label in labels:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", label) and label not in ("le", "quantile")
    assert doc.strip() and doc == " ".join(doc.split())


def test_hooks_do_nothing_while_metrics_are_off():
    assert metrics.active() is None
    metrics.scored("spam", 0.1)
    metrics.learned("tell", "spam")
    metrics.reloaded("signal")
    metrics.saved()
    metrics.error("handler")
    metrics.request_error(76)
    metrics.handler_threads(4)
    metrics.watch_queue(lambda: 3)
    metrics.worker_ended(1, expected=False)
    with metrics.in_progress():
        pass
    models = object()
    assert metrics.instrument(models) is models


def test_daemon_front_in_process_exposes_exactly_the_documented_families():
    ex = metrics.start(("127.0.0.1", 0), "daemon")
    try:
        metrics.watch_queue(lambda: 7)
        metrics.scored("ham", 0.002)
        metrics.scored("spam", 0.3)
        metrics.learned("daemon", "ham")
        metrics.error("message")
        with urllib.request.urlopen(ex.where, timeout=10) as r:
            samples, families = parse(r.read().decode())
    finally:
        ex.close()
    want = {n for n in metrics.METRICS if not n.startswith("nnspam_serve_")}
    # the text parser names a counter family without its _total
    got = {n + "_total" if t == "counter" else n for n, (t, _) in families.items()}
    assert got == want
    for n, (t, doc) in families.items():
        name = n + "_total" if t == "counter" else n
        assert (t, doc) == (metrics.METRICS[name][0], metrics.METRICS[name][2])
    assert total(samples, "nnspam_messages_scored_total", verdict="ham") == 1
    assert total(samples, "nnspam_messages_scored_total", verdict="unsure") == 0
    assert total(samples, "nnspam_scoring_duration_seconds_bucket", le="0.0025") == 1
    assert total(samples, "nnspam_scoring_duration_seconds_bucket", le="0.5") == 2
    assert total(samples, "nnspam_corrections_learned_total", path="confident") == 0
    assert total(samples, "nnspam_errors_total", kind="message") == 1
    assert total(samples, "nnspam_daemon_queue_depth") == 7
    assert not any(n.endswith("_created") for n, _ in samples)
    # closed: the hooks are off again and the port is free
    assert metrics.active() is None
    with pytest.raises(OSError):
        urllib.request.urlopen(ex.where, timeout=5)


def test_multiprocess_mode_adds_up_forked_processes_in_process(tmp_path):
    from nnspam.model.writer import ModelWriter

    ex = metrics.start(("127.0.0.1", 0), "serve", multiprocess=True)
    directory = Path(ex.directory)
    try:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
        assert ModelWriter.observer is not None
        kids = []
        for verdict in ("spam", "spam", "unsure"):
            pid = os.fork()
            if pid == 0:  # a worker: counts, holds a connection, dies without cleanup
                code = 0
                try:
                    metrics.handler_threads(8)
                    metrics.scored(verdict, 0.01)
                    ModelWriter.observer("save")
                    held = metrics.in_progress()  # a connection in progress, never ended
                    held.__enter__()
                    with pytest.raises(OSError):  # the parent's /metrics socket is closed here
                        ex.httpd.socket.getsockname()
                except BaseException:  # noqa: BLE001 - any failure: the exit code says so
                    code = 1
                os._exit(code)
            kids.append(pid)
        for pid in kids:
            assert os.waitpid(pid, 0)[1] == 0
        metrics.scored("ham", 0.02)
        s = scrape(ex.port)
        assert total(s, "nnspam_messages_scored_total", verdict="spam") == 2
        assert total(s, "nnspam_messages_scored_total", verdict="unsure") == 1
        assert total(s, "nnspam_messages_scored_total") == 4
        assert total(s, "nnspam_model_saves_total") == 3
        assert total(s, "nnspam_serve_handler_threads") == 24
        assert total(s, "nnspam_serve_connections_in_progress") == 3
        metrics.worker_ended(kids[0], expected=False)
        for pid in kids[1:]:
            metrics.worker_ended(pid, expected=True)
        s = scrape(ex.port)
        assert total(s, "nnspam_messages_scored_total") == 4  # dead workers still count
        assert total(s, "nnspam_serve_handler_threads") == 0
        assert total(s, "nnspam_serve_connections_in_progress") == 0
        assert total(s, "nnspam_errors_total", kind="worker_exit") == 1
    finally:
        ex.close()
    assert not directory.exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert ModelWriter.observer is None and metrics.active() is None


def test_instrumented_models_time_and_count(tmp_path):
    from nnspam.services.scoring import Result

    class Models:
        def classify(self, raw, user=None):
            return Result(raw, "error" if raw == b"bad" else "ham", None)

        def learn(self, raw, label, user=None):
            return (raw != b"again", tmp_path)  # learned, unless already learned

        def forget(self, raw, user=None):
            return (raw == b"known", tmp_path)

        def reload(self):
            return "reloaded"

    ex = metrics.start(("127.0.0.1", 0), "serve")
    try:
        m = metrics.instrument(Models())
        assert m.classify(b"x").verdict == "ham"
        assert m.classify(b"bad", "alice").verdict == "error"
        assert m.learn(b"x", "spam", user="bob") == (True, tmp_path)
        assert m.learn(b"again", "spam", user="bob") == (False, tmp_path)  # not counted
        assert m.forget(b"known") == (True, tmp_path)
        assert m.forget(b"unknown") == (False, tmp_path)
        assert m.reload() == "reloaded"  # everything else passes through
        s = scrape(ex.port)
    finally:
        ex.close()
    assert total(s, "nnspam_messages_scored_total", verdict="ham") == 1
    assert total(s, "nnspam_messages_scored_total", verdict="error") == 1
    assert total(s, "nnspam_errors_total", kind="classify") == 1
    assert total(s, "nnspam_scoring_duration_seconds_count") == 2
    assert total(s, "nnspam_corrections_learned_total", path="tell", **{"class": "spam"}) == 1
    assert total(s, "nnspam_corrections_learned_total", **{"class": "forget"}) == 1


# -- the setting and the option ---------------------------------------------------------------

def test_metrics_setting_is_off_by_default_and_documented():
    assert DEFAULTS["metrics"] is None
    assert re.search(r"^metrics: null$", (ROOT / "config.yaml").read_text(), re.M)


@pytest.mark.parametrize("value", ["127.0.0.1:9183", '"[::1]:9183"', "0.0.0.0:0", "null"])
def test_good_metrics_settings(tmp_path, value):
    f = tmp_path / "c.yaml"
    f.write_text(f"metrics: {value}\n")
    got = load_config(str(f))["metrics"]
    assert got == (None if value == "null" else value.strip('"'))


@pytest.mark.parametrize("value", ["9183", "localhost:9183", "127.0.0.1:99999", ":9183",
                                   '"127.0.0.1:"', "[127.0.0.1, 9183]", "true"])
def test_bad_metrics_settings_are_one_line_naming_it(tmp_path, value):
    f = tmp_path / "c.yaml"
    f.write_text(f"metrics: {value}\n")
    with pytest.raises(ConfigError, match=r": metrics must be null or IP:PORT"):
        load_config(str(f))


def test_the_option_wins_over_the_setting_and_is_checked():
    cfg = {"metrics": "127.0.0.1:9183"}
    assert metrics.address(cfg, None) == ("127.0.0.1", 9183)
    assert metrics.address(cfg, "[::1]:0") == ("::1", 0)
    assert metrics.address({"metrics": None}, None) is None
    with pytest.raises(metrics.MetricsError, match=r"^--metrics '1\.2\.3\.4': no port"):
        metrics.address(cfg, "1.2.3.4")
    with pytest.raises(metrics.MetricsError, match=r"^metrics '127\.0\.0\.1:x': port 'x'"):
        metrics.address({"metrics": "127.0.0.1:x"}, None)


def test_serve_bad_metrics_address_is_one_line_exit_2_before_anything_starts(tmp_path):
    sock = tmp_path / "s.sock"
    r = subprocess.run([sys.executable, "-m", "nnspam", "serve", "-m", str(tmp_path / "none"),
                        "--socket", str(sock), "--metrics", "127.0.0.1:70000"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    # the address is checked first: before the (missing) model is loaded or a socket bound
    assert r.stderr.strip() == ("nnspam: --metrics '127.0.0.1:70000': port 70000 is out of "
                                "range (0..65535)")
    assert not sock.exists()


def test_the_pipe_filter_never_imports_prometheus_client(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("metrics: 127.0.0.1:9183\n")
    code = ("import sys, io\n"
            "from nnspam.front.cli import main\n"
            "rc = main(['filter', '-c', sys.argv[1]])\n"
            "sys.stderr.write(repr(sorted(m for m in sys.modules if 'prometheus' in m "
            "or m == 'nnspam.services.metrics')))\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code, str(cfg)], input=HAMS[0],
                       capture_output=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"X-NNSpam-Status:" in r.stdout
    assert r.stderr.decode().strip().splitlines()[-1] == "[]"
