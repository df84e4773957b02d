"""Benchmark: ``nnspam serve`` against SpamAssassin's own ``spamd``, both driven
by the real ``spamc``, in the same run.

N SpamAssassin-corpus messages (default 2,000: half spam, half ham, from
spam/spam_2 and easy_ham/easy_ham_2/hard_ham) are sent by C concurrent
clients (default 8), one ``spamc`` process per message in its default mode
(PROCESS: the whole message comes back, as procmail or maildrop use it).
Printed for each server: messages per second (wall clock over all N),
p50 and p99 latency of one ``spamc`` run (process start included), and the
accuracy of the verdicts (a side figure, not the point); then the ratio.

spamd is set up as a Bayes-only filter: a private site config and rules
directory (nothing from /etc/spamassassin or /usr/share/spamassassin is
read) that loads only the Bayes plugin, with the BAYES_* rules scored so
that P(spam) >= 0.6 reaches required_score 5 (SpamAssassin's own Bayes-only
scores top out at 4.0 and would call nothing spam), ``bayes_auto_learn 0``,
``-L`` (local tests only: no DNS, no network), ``-x`` (no per-user config),
a temporary ``bayes_path`` trained with ``sa-learn`` on the same N messages
(``--train split``: on the train part of the SpamAssassin split instead,
as the shipped nnspam model was). spamd gets C children and nnspam serve its
default workers (one per core), each server alone on the machine while it is
measured.

    .venv/bin/python scripts/bench/server.py [-n 2000] [-c 8] [--spamd-n N]
        [--train same|split] [--no-spamd]

``--spamd-n`` sends spamd only the first N of the messages (it is the slow
one) - its rate and latencies are still per message.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SA_RULES = Path("/usr/share/spamassassin")
BAYES_SCORES = {"BAYES_00": -3.0, "BAYES_05": -2.0, "BAYES_20": -1.0, "BAYES_40": -0.5,
                "BAYES_50": 2.5, "BAYES_60": 5.0, "BAYES_80": 5.0, "BAYES_95": 5.0,
                "BAYES_99": 5.0, "BAYES_999": 0.5}


def _messages(corpus: Path, n: int) -> list[tuple[bytes, bool]]:
    """n messages, half spam, alternating, in a fixed order."""
    def files(dirs: list[str]) -> list[Path]:
        return [p for d in dirs for p in sorted((corpus / d).iterdir()) if p.is_file()
                and p.name != "cmds"]
    spam = files(["spam", "spam_2"])[: n // 2]
    ham = files(["easy_ham", "hard_ham", "easy_ham_2"])
    ham = ham[:: max(1, len(ham) // (n - len(spam)))][: n - len(spam)]
    out: list[tuple[bytes, bool]] = []
    for i in range(max(len(spam), len(ham))):
        if i < len(spam):
            out.append((spam[i].read_bytes(), True))
        if i < len(ham):
            out.append((ham[i].read_bytes(), False))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ping(spamc: str, port: int, proc: subprocess.Popen, what: str,
               timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        if subprocess.run([spamc, "-d", "127.0.0.1", "-p", str(port), "-K"],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer PING")


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server: the process, its reaped children
    and its live children (the workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int, reaped: bool) -> int:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        n = int(fields[11]) + int(fields[12])  # utime, stime
        return n + (int(fields[13]) + int(fields[14]) if reaped else 0)
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    return (own(pid, True) + sum(own(k, True) for k in kids)) / tick


def _drive(spamc: str, port: int, msgs: list[tuple[bytes, bool]], clients: int,
           flag: bytes, server_pid: int | None = None) -> dict[str, float]:
    """Send every message through ``spamc`` with ``clients`` in parallel."""
    cmd = [spamc, "-d", "127.0.0.1", "-p", str(port), "-s", "10000000"]

    def one(item: tuple[bytes, bool]) -> tuple[float, bool, bool, bool]:
        raw, is_spam = item
        t = time.perf_counter()
        r = subprocess.run(cmd, input=raw, capture_output=True)
        dt = time.perf_counter() - t
        head = r.stdout.split(b"\n\n", 1)[0]
        said_spam = re.search(flag, head) is not None
        return dt, said_spam, is_spam, r.stdout != raw

    cpu0 = _cpu_seconds(server_pid) if server_pid else 0.0
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        res = list(ex.map(one, msgs))
    total = time.perf_counter() - t0
    cpu = (_cpu_seconds(server_pid) - cpu0) if server_pid else float("nan")
    lat = sorted(r[0] for r in res)
    return {
        "n": len(msgs),
        "rate": len(msgs) / total,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(round(0.99 * len(lat))) - 1)] * 1000,
        "acc": 100.0 * sum(r[1] == r[2] for r in res) / len(res),
        "classified": sum(r[3] for r in res),
        "cpu_ms": 1000 * cpu / len(msgs),
    }


def _bench_nnspam(spamc: str, msgs: list[tuple[bytes, bool]], clients: int,
                  workers: int | None, max_connections: int | None,
                  tmp: Path) -> dict[str, float]:
    cfg = tmp / "nnspam.yaml"
    cfg.write_text(f"serve:\n  max_connections: {max_connections}\n" if max_connections else "")
    port = _free_port()
    cmd = [sys.executable, "-m", "nnspam", "serve", "-c", str(cfg),
           "--listen", f"127.0.0.1:{port}"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    srv = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        _wait_ping(spamc, port, srv, "nnspam serve")
        _drive(spamc, port, msgs[:50], clients, rb"\nX-NNSpam-Flag: YES")  # warm up
        return _drive(spamc, port, msgs, clients, rb"\nX-NNSpam-Flag: YES", srv.pid)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)


def _spamd_config(tmp: Path) -> tuple[Path, Path, Path]:
    site, rules, bayes = tmp / "site", tmp / "rules", tmp / "bayes"
    for d in (site, rules, bayes):
        d.mkdir()
    os.chmod(tmp, 0o755)
    os.chmod(bayes, 0o777)  # spamd drops root for "nobody"
    # Check runs the rules; Bayes is the only test plugin loaded.
    (site / "init.pre").write_text("loadplugin Mail::SpamAssassin::Plugin::Check\n"
                                   "loadplugin Mail::SpamAssassin::Plugin::Bayes\n")
    # Default preferences (X-Spam-* headers, templates), the TLD list and the
    # Bayes rules: nothing else of SpamAssassin's rule set.
    for name in ("10_default_prefs.cf", "20_aux_tlds.cf", "23_bayes.cf"):
        text = (SA_RULES / name).read_text(errors="replace")
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("require_version"))
        if name == "23_bayes.cf":
            text += "\n" + "\n".join(f"score {k} {v}" for k, v in BAYES_SCORES.items())
        (rules / name).write_text(text + "\n")
    (site / "local.cf").write_text(
        "required_score 5\nuse_bayes 1\nbayes_auto_learn 0\nbayes_auto_expire 0\n"
        f"bayes_path {bayes}/bayes\nbayes_file_mode 0666\nlock_method flock\n"
        "bayes_learn_to_journal 0\nreport_safe 0\n")
    return site, rules, bayes


def _split_train(corpus: Path) -> tuple[list[Path], list[Path]]:
    split = Path(__file__).resolve().parents[2].parent / "shared/corpora/splits/spamassassin.tsv"
    spam, ham = [], []
    for line in split.read_text().splitlines():
        parts = line.split("\t")  # path, label, split
        if len(parts) == 3 and parts[2] == "train":
            (spam if parts[1] == "spam" else ham).append(corpus / parts[0])
    return spam, ham


def _bench_spamd(spamc: str, msgs: list[tuple[bytes, bool]], send: list[tuple[bytes, bool]],
                 clients: int, tmp: Path, train: str, corpus: Path) -> dict[str, float]:
    """Train spamd's Bayes on ``msgs`` (or the split), then send it ``send``."""
    spamd, sa_learn = shutil.which("spamd"), shutil.which("sa-learn")
    if spamd is None or sa_learn is None:
        raise SystemExit("spamd/sa-learn missing (apt-get install -y spamassassin)")
    site, rules, bayes = _spamd_config(tmp)
    paths = ["--siteconfigpath", str(site), "--configpath", str(rules)]
    if train == "split":
        spam_p, ham_p = _split_train(corpus)
    else:
        (tmp / "spam").mkdir()
        (tmp / "ham").mkdir()
        for i, (raw, is_spam) in enumerate(msgs):
            (tmp / ("spam" if is_spam else "ham") / f"{i}.eml").write_bytes(raw)
        spam_p, ham_p = [tmp / "spam"], [tmp / "ham"]
    t = time.perf_counter()
    for label, ps in (("--spam", spam_p), ("--ham", ham_p)):
        subprocess.run([sa_learn, *paths, "-L", "--no-sync", label, *map(str, ps)],
                       check=True, capture_output=True)
    subprocess.run([sa_learn, *paths, "--sync"], check=True, capture_output=True)
    info = subprocess.run([sa_learn, *paths, "--dump", "magic"], capture_output=True,
                          text=True).stdout
    nspam = re.search(r"(\d+)\s+0\s+non-token data: nspam", info)
    nham = re.search(r"(\d+)\s+0\s+non-token data: nham", info)
    print(f"spamd Bayes trained in {time.perf_counter() - t:.0f} s on "
          f"{nspam.group(1) if nspam else '?'} spam, {nham.group(1) if nham else '?'} ham",
          flush=True)
    for f in bayes.iterdir():
        os.chmod(f, 0o666)
    port = _free_port()
    srv = subprocess.Popen(
        [spamd, *paths, "-L", "-x", "-i", "127.0.0.1", "-A", "127.0.0.1", "-p", str(port),
         "-m", str(clients), "--min-children", str(clients), "--min-spare", str(clients),
         "-u", "nobody" if os.geteuid() == 0 else str(os.getuid()), "-s", "stderr",
         "--pidfile", str(tmp / "spamd.pid")], stderr=subprocess.DEVNULL)
    try:
        _wait_ping(spamc, port, srv, "spamd")
        _drive(spamc, port, msgs[:20], clients, rb"\nX-Spam-Flag: YES")  # warm up
        return _drive(spamc, port, send, clients, rb"\nX-Spam-Flag: YES", srv.pid)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)


def _line(name: str, r: dict[str, float]) -> str:
    return (f"{name:<24} {r['n']:5d} msgs  {r['rate']:7.1f} msgs/s  p50 {r['p50']:6.1f} ms  "
            f"p99 {r['p99']:7.1f} ms  server CPU {r['cpu_ms']:6.1f} ms/msg  "
            f"accuracy {r['acc']:5.1f}%  classified {r['classified']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/tmp/corpus/spamassassin", type=Path)
    ap.add_argument("-n", type=int, default=2000, help="messages (default 2000)")
    ap.add_argument("-c", "--clients", type=int, default=8, help="concurrent spamc (8)")
    ap.add_argument("--workers", type=int, help="nnspam serve --workers (default: cores)")
    ap.add_argument("--max-connections", type=int,
                    help="nnspam serve's serve.max_connections (default: the config default)")
    ap.add_argument("--spamd-n", type=int, help="send spamd only the first N messages")
    ap.add_argument("--train", choices=["same", "split"], default="same",
                    help="train spamd's Bayes on the benchmark messages or the split's "
                    "train part (default: same)")
    ap.add_argument("--no-spamd", action="store_true", help="measure nnspam serve only")
    args = ap.parse_args()
    spamc = shutil.which("spamc")
    if spamc is None:
        print("spamc is not installed (apt-get install -y spamc)", file=sys.stderr)
        return 2
    msgs = _messages(args.corpus, args.n)
    print(f"{len(msgs)} messages ({sum(s for _, s in msgs)} spam), {args.clients} concurrent "
          f"spamc clients, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} before the run", flush=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        nn = _bench_nnspam(spamc, msgs, args.clients, args.workers, args.max_connections, tmp)
        print(_line("spamc -> nnspam serve", nn), flush=True)
        if args.no_spamd:
            return 0
        sd = _bench_spamd(spamc, msgs, msgs[: args.spamd_n or len(msgs)], args.clients, tmp,
                          args.train, args.corpus)
        print(_line("spamc -> spamd (Bayes)", sd))
    print(f"nnspam serve / spamd: {nn['rate'] / sd['rate']:.1f}x messages/s, "
          f"{sd['cpu_ms'] / nn['cpu_ms']:.1f}x less server CPU per message, "
          f"p99 {nn['p99']:.1f} ms vs {sd['p99']:.1f} ms; load average now "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
