"""nnspam side by side with bogofilter, SpamAssassin (Bayes only), SpamProbe and CRM114.

Every filter sees the same files: the split's messages are written to a temporary
directory (SMS texts wrapped in the same minimal RFC 822 message for every tool), and
each filter keeps its database in that directory (never ``~/.bogofilter``,
``~/.spamassassin`` or ``~/.spamprobe``). Filters that are not installed are left out
with a note.

Batch mode (the split's protocol): train on the ``train`` part, score the ``test`` part.
Online mode (the TREC protocol): all messages of the split in one seeded shuffle (the
split files are sorted by folder); each message is classified, then trained on its true
label; the figures are over the whole stream.

Per filter it prints and writes (``--out DIR``: ``compare-<corpus>-<mode>.json``,
``.md`` and the ROC curves of all filters on one log-scale plot, ``.png``): ham lost
(FP) %, spam missed (FN) %, accuracy, 1-ROCA % from the per-message scores, the spam
missed by the best threshold that loses no ham (the same per-message scores), training
time, messages per second in bulk (one process for the whole test part) and with one
process per message, and peak memory (the largest resident set of any process the
filter ran, measured by GNU time, Debian package ``time``). The Markdown names the command
line that made it and its JSON ("Made by: ...").

How each filter is run, and where its verdict comes from:

nnspam        ``nnspam train --kind email|sms`` with the built-in defaults,
              ``nnspam classify`` (bulk), ``nnspam filter`` (one process per message);
              verdict: spamicity >= 0.5 (the default ham bias h=0.9, s=0.1). Online:
              :class:`nnspam.services.runs.online.OnlineFilter` (partial_fit and adaptive inputs),
              starting from an untrained network.
bogofilter    ``bogofilter -C -d DB`` (compiled-in defaults, no config file), ``-s/-n``
              to register, ``-v -B`` to score; verdict: "Spam" (spamicity >= 0.99, its
              spam_cutoff); "Unsure" counts as not spam, as it is not filed as spam.
spamassassin  Mail::SpamAssassin's Bayes classifier alone (``peers/sa_bayes.pl``: only the
              Bayes plugin, network tests off, no auto-learn), learning like ``sa-learn``;
              score: the Bayes probability; verdict: probability > 0.5 (with the stock
              scores Bayes alone, at most 3.7 points, can never reach required_score 5).
              Bayes abstains (0.5) until it has learned 200 spam and 200 ham.
spamprobe     ``spamprobe -d DB spam|good`` to learn, ``score`` to classify; verdict: SPAM.
crm114        ``crm`` with ``classify <osb unique microgroom>`` over spam.css | ham.css,
              ``learn`` into the true class; score: pR; verdict: pR > 0. CRM114 has no
              bulk mode: its bulk figure is one process per message.

Usage:
    python scripts/bench/compare.py --split ../shared/corpora/splits/spamassassin.tsv \\
        --corpus ../shared/corpora/spamassassin.tar.xz [--mode batch|online|both] \\
        [--limit N] [--limit-online N] [--seed 1] [--filters nnspam,bogofilter,...] \\
        [--out bench-out]
    python scripts/bench/compare.py --sms ../shared/corpora/sms/SMSSpamCollection \\
        --split ../shared/corpora/splits/sms.tsv --mode both --limit-online 3000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from nnspam.mail.corpus import load_split_samples  # noqa: E402
from nnspam.services.runs.evaluate import roc_auc, roc_curve  # noqa: E402

PEERS = ("nnspam", "bogofilter", "spamassassin", "spamprobe", "crm114")
CRM_CLASSIFY = ("-{ isolate (:s:); { classify <osb unique microgroom> "
                "( spam.css | ham.css ) (:s:) }; output /:*:s:/ }")
CRM_LEARN = "-{ learn <osb unique microgroom> ( %s.css ) }"


# -- running processes and measuring them ---------------------------------------------------

GNU_TIME = "/usr/bin/time"


def timed(cmd: Sequence[str], report: str) -> list[str]:
    """``cmd`` run under GNU time, which writes the peak resident set (KiB) to ``report``.

    The figure cannot be read with wait4 from here: Linux carries the forking process's
    peak RSS over into the child across exec, so every child of this (large) Python
    process would report at least this process's own peak. GNU time is small."""
    return [GNU_TIME, "-f", "%M", "-o", report, *cmd]


class Meter:
    """The peak resident set of every process a filter runs (via GNU time)."""

    def __init__(self) -> None:
        self.peak_kb = 0

    def note(self, report: str) -> None:
        try:
            text = Path(report).read_text().split()
            self.peak_kb = max(self.peak_kb, int(text[-1]))
        except (OSError, ValueError, IndexError):
            pass
        finally:
            Path(report).unlink(missing_ok=True)

    def run(self, cmd: Sequence[str], stdin: bytes | None = None, cwd: str | None = None,
            check: bool = True) -> bytes:
        """Run ``cmd`` to completion; return its standard output."""
        report = tempfile.mktemp(prefix="nnspam-compare-rss-")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(timed(cmd, report), stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd)
            if stdin is not None:
                try:
                    proc.stdin.write(stdin)  # type: ignore[union-attr]
                except BrokenPipeError:
                    pass
                proc.stdin.close()  # type: ignore[union-attr]
            proc.wait()
            self.note(report)
            out.seek(0)
            err.seek(0)
            data = out.read()
            if check and proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: "
                                   f"{err.read().decode(errors='replace')[-500:]}")
            return data


class LineProcess:
    """A long-running helper that answers one line per request line (the SA driver, the
    nnspam online driver); its peak memory is noted when it is closed."""

    def __init__(self, cmd: Sequence[str], meter: Meter, env: dict[str, str] | None = None):
        self.meter = meter
        self.report = tempfile.mktemp(prefix="nnspam-compare-rss-")
        self.proc = subprocess.Popen(timed(cmd, self.report), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, bufsize=0)

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"{self.proc.args[5]} stopped answering (at {line!r})")
        return answer.decode().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rc = self.proc.wait()
        self.meter.note(self.report)
        if rc != 0:
            raise RuntimeError(f"{self.proc.args[5]} exited {rc}")


# -- the filters --------------------------------------------------------------------------

Item = tuple[str, str]  # (message path, "spam" | "ham")


@dataclass
class Peer:
    """One filter: how to train it, score in bulk, score one message per process, and
    run it online. Scores are higher-is-spammier; verdicts are the filter's own."""

    name: str
    kind: str  # "email" or "sms"
    db: Path
    meter: Meter = field(default_factory=Meter)

    def available(self) -> str | None:
        """None if the filter can run here, else why not."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def train(self, items: Sequence[Item]) -> None:
        raise NotImplementedError

    def score(self, paths: Sequence[str]) -> list[tuple[float, bool]]:
        raise NotImplementedError

    def one_process(self, path: str) -> None:
        """Classify one message the way a per-message pipe filter would."""
        raise NotImplementedError

    def online(self, items: Sequence[Item]) -> list[tuple[float, bool]]:
        raise NotImplementedError


def _which(*progs: str) -> str | None:
    missing = [p for p in progs if shutil.which(p) is None]
    return f"not installed ({', '.join(missing)})" if missing else None


class NNSpam(Peer):
    def available(self) -> str | None:
        return None

    def version(self) -> str:
        from nnspam import __version__
        return f"nnspam {__version__}"

    def _nnspam(self) -> list[str]:
        return [sys.executable, "-m", "nnspam"]

    def train(self, items: Sequence[Item]) -> None:
        ham = self.db / "train-ham"
        spam = self.db / "train-spam"
        for d in (ham, spam):
            d.mkdir(parents=True, exist_ok=True)
        for i, (path, label) in enumerate(items):
            os.symlink(path, (spam if label == "spam" else ham) / f"{i:06d}")
        self.meter.run(self._nnspam() + ["train", "--kind", self.kind, "-m",
                                         str(self.db / "model"), "--ham", str(ham),
                                         "--spam", str(spam), "--no-progress"])

    def score(self, paths: Sequence[str]) -> list[tuple[float, bool]]:
        out = self.meter.run(self._nnspam() + ["classify", "-m", str(self.db / "model"),
                                               "--format", "tsv", *paths])
        by_name = {}
        for line in out.decode().splitlines():
            name, sp, verdict = line.rsplit("\t", 2)
            by_name[name] = (float(sp), verdict == "spam")
        return [by_name[p] for p in paths]

    def one_process(self, path: str) -> None:
        with open(path, "rb") as f:
            self.meter.run(self._nnspam() + ["filter", "-m", str(self.db / "model")],
                           stdin=f.read())

    def online(self, items: Sequence[Item]) -> list[tuple[float, bool]]:
        driver = LineProcess([sys.executable, str(HERE / "peers" / "nnspam_online.py"),
                              str(self.db / "online"), self.kind], self.meter)
        out = []
        for path, label in items:
            sp, verdict = driver.ask(f"score {path}").split()
            out.append((float(sp), verdict == "spam"))
            driver.ask(f"train {label} {path}")
        driver.close()
        return out


class Bogofilter(Peer):
    def _cmd(self) -> list[str]:
        return ["bogofilter", "-C", "-d", str(self.db)]

    def available(self) -> str | None:
        return _which("bogofilter")

    def version(self) -> str:
        return self.meter.run(["bogofilter", "-V"]).decode().splitlines()[0].strip()

    def train(self, items: Sequence[Item]) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        for label, flag in (("spam", "-s"), ("ham", "-n")):
            paths = [p for p, lab in items if lab == label]
            self.meter.run(self._cmd() + [flag, "-b"], stdin="\n".join(paths).encode() + b"\n")

    def score(self, paths: Sequence[str]) -> list[tuple[float, bool]]:
        out = self.meter.run(self._cmd() + ["--spamicity-formats=%0.8e, %0.8e, %0.8e",
                                            "--header-format=%c %p", "-v", "-b"],
                             stdin="\n".join(paths).encode() + b"\n", check=False)
        by_name = {}
        for line in out.decode(errors="replace").splitlines():
            name, verdict, sp = line.rsplit(" ", 2)
            by_name[name] = (float(sp), verdict == "Spam")
        return [by_name[p] for p in paths]

    def one_process(self, path: str) -> None:
        self.meter.run(self._cmd() + ["-T", "-I", path], check=False)

    def online(self, items: Sequence[Item]) -> list[tuple[float, bool]]:
        self.db.mkdir(parents=True, exist_ok=True)
        out = []
        for path, label in items:
            if (self.db / "wordlist.db").exists():
                line = self.meter.run(self._cmd() + ["-T", "-I", path], check=False).decode()
                letter, sp = line.split()[:2]
                out.append((float(sp), letter == "S"))
            else:  # nothing learned yet: bogofilter would say Unsure, 0.5
                out.append((0.5, False))
            self.meter.run(self._cmd() + ["-s" if label == "spam" else "-n", "-I", path])
        return out


class SpamAssassin(Peer):
    def available(self) -> str | None:
        why = _which("perl")
        if why:
            return why
        probe = subprocess.run(["perl", "-MMail::SpamAssassin", "-e", "1"],
                               capture_output=True)
        return None if probe.returncode == 0 else "not installed (Mail::SpamAssassin)"

    def version(self) -> str:
        v = self.meter.run(["perl", "-MMail::SpamAssassin", "-e",
                            "print $Mail::SpamAssassin::VERSION"]).decode()
        return f"SpamAssassin {v} (Bayes only)"

    def _driver(self) -> LineProcess:
        self.db.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HOME=str(self.db))
        return LineProcess(["perl", str(HERE / "peers" / "sa_bayes.pl"), str(self.db)],
                           self.meter, env=env)

    def train(self, items: Sequence[Item]) -> None:
        d = self._driver()
        for path, label in items:
            d.ask(f"train {label} {path}")
        d.ask("sync")
        d.close()

    @staticmethod
    def _verdict(p: float) -> tuple[float, bool]:
        return p, p > 0.5

    def score(self, paths: Sequence[str]) -> list[tuple[float, bool]]:
        d = self._driver()
        out = [self._verdict(float(d.ask(f"score {p}"))) for p in paths]
        d.close()
        return out

    def one_process(self, path: str) -> None:
        self.meter.run(["perl", str(HERE / "peers" / "sa_bayes.pl"), str(self.db)],
                       stdin=f"score {path}\n".encode())

    def online(self, items: Sequence[Item]) -> list[tuple[float, bool]]:
        d = self._driver()
        out = []
        for path, label in items:
            out.append(self._verdict(float(d.ask(f"score {path}"))))
            d.ask(f"train {label} {path}")
        d.close()
        return out


class SpamProbe(Peer):
    def _cmd(self) -> list[str]:
        return ["spamprobe", "-d", str(self.db)]

    def available(self) -> str | None:
        return _which("spamprobe")

    def version(self) -> str:
        out = subprocess.run(["spamprobe", "-V"], capture_output=True).stdout.decode()
        return out.splitlines()[0].split(" using ")[0].strip() if out else "SpamProbe"

    def train(self, items: Sequence[Item]) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        for label, verb in (("spam", "spam"), ("ham", "good")):
            paths = [p for p, lab in items if lab == label]
            for i in range(0, len(paths), 500):
                self.meter.run(self._cmd() + [verb, *paths[i:i + 500]])

    def _parse(self, out: bytes) -> list[tuple[float, bool]]:
        res = []
        for line in out.decode(errors="replace").splitlines():
            verdict, sp = line.split()[:2]
            res.append((float(sp), verdict == "SPAM"))
        return res

    def score(self, paths: Sequence[str]) -> list[tuple[float, bool]]:
        res = []
        for i in range(0, len(paths), 500):
            res += self._parse(self.meter.run(self._cmd() + ["score", *paths[i:i + 500]]))
        if len(res) != len(paths):
            raise RuntimeError(f"spamprobe scored {len(res)} of {len(paths)} messages")
        return res

    def one_process(self, path: str) -> None:
        self.meter.run(self._cmd() + ["score", path])

    def online(self, items: Sequence[Item]) -> list[tuple[float, bool]]:
        self.db.mkdir(parents=True, exist_ok=True)
        self.meter.run(self._cmd() + ["create-db"])
        out = []
        for path, label in items:
            out += self._parse(self.meter.run(self._cmd() + ["score", path]))
            self.meter.run(self._cmd() + ["spam" if label == "spam" else "good", path])
        return out


class CRM114(Peer):
    def available(self) -> str | None:
        return _which("crm")

    def version(self) -> str:
        out = subprocess.run(["crm", "-v"], capture_output=True)
        text = (out.stdout or out.stderr).decode()
        return ("CRM114 " + text.split("version", 1)[1].split()[0] if "version" in text
                else "CRM114")

    def _learn(self, path: str, label: str) -> None:
        with open(path, "rb") as f:
            self.meter.run(["crm", CRM_LEARN % label], stdin=f.read(), cwd=str(self.db))

    def _classify(self, path: str) -> tuple[float, bool]:
        if not (self.db / "spam.css").exists() or not (self.db / "ham.css").exists():
            return 0.0, False  # nothing learned yet for one class
        with open(path, "rb") as f:
            out = self.meter.run(["crm", CRM_CLASSIFY], stdin=f.read(), cwd=str(self.db))
        first = out.decode(errors="replace").splitlines()[0]
        pr = float(first.rsplit("pR:", 1)[1])
        return pr, pr > 0

    def train(self, items: Sequence[Item]) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        for path, label in items:
            self._learn(path, label)

    def score(self, paths: Sequence[str]) -> list[tuple[float, bool]]:
        return [self._classify(p) for p in paths]

    def one_process(self, path: str) -> None:
        self._classify(path)

    def online(self, items: Sequence[Item]) -> list[tuple[float, bool]]:
        self.db.mkdir(parents=True, exist_ok=True)
        out = []
        for path, label in items:
            out.append(self._classify(path))
            self._learn(path, label)
        return out


CLASSES: dict[str, Callable[..., Peer]] = {
    "nnspam": NNSpam, "bogofilter": Bogofilter, "spamassassin": SpamAssassin,
    "spamprobe": SpamProbe, "crm114": CRM114,
}


# -- data -----------------------------------------------------------------------------------

def wrap_sms(text: str) -> bytes:
    """The minimal RFC 822 message every filter gets for one SMS."""
    head = ("From: sms@sms.invalid\nTo: user@sms.invalid\nSubject: SMS\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
    return (head + text + "\n").encode("utf-8")


def write_messages(samples: Sequence[Any], root: Path, sms: bool) -> list[Item]:
    """Write each sample to its own file; return (path, label) in the same order."""
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i, s in enumerate(samples):
        p = root / f"{i:06d}"
        payload = s.payload
        if sms:
            payload = wrap_sms(payload)
        elif isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogateescape")
        p.write_bytes(payload)
        items.append((str(p), s.label))
    return items


def subsample(samples: list[Any], limit: int | None, seed: int) -> list[Any]:
    """At most ``limit`` samples, the same fraction of each class, order kept."""
    if limit is None or limit >= len(samples):
        return samples
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in ("spam", "ham"):
        idx = [i for i, s in enumerate(samples) if s.label == label]
        k = max(1, round(limit * len(idx) / len(samples)))
        keep.update(rng.sample(idx, min(k, len(idx))))
    return [s for i, s in enumerate(samples) if i in keep]


# -- figures --------------------------------------------------------------------------------

def figures(labels: Sequence[str], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    y = np.array([1 if lab == "spam" else 0 for lab in labels])
    scores = np.array([r[0] for r in results], dtype=np.float64)
    pred = np.array([r[1] for r in results], dtype=bool)
    n_spam, n_ham = int(y.sum()), int((y == 0).sum())
    fp = int(((y == 0) & pred).sum())
    fn = int(((y == 1) & ~pred).sum())
    # The threshold-free view at the strictest point: spam that scores no higher than the
    # spammiest ham is missed by any threshold that loses no ham (ties count as missed).
    top_ham = scores[y == 0].max() if n_ham else -np.inf
    fn_at_zero_fp = int((scores[y == 1] <= top_ham).sum())
    return {
        "n_ham": n_ham, "n_spam": n_spam, "fp": fp, "fn": fn,
        "fn_at_zero_fp": fn_at_zero_fp,
        "spam_missed_at_zero_fp_pct": 100.0 * fn_at_zero_fp / max(1, n_spam),
        "ham_lost_pct": 100.0 * fp / max(1, n_ham),
        "spam_missed_pct": 100.0 * fn / max(1, n_spam),
        "accuracy_pct": 100.0 * (len(y) - fp - fn) / max(1, len(y)),
        "one_minus_roca_pct": 100.0 * (1.0 - roc_auc(y, scores)),
    }


def run_batch(peer: Peer, train: Sequence[Item], test: Sequence[Item],
              per_process: int) -> tuple[dict[str, Any], list[float]]:
    t0 = time.perf_counter()
    peer.train(train)
    train_s = time.perf_counter() - t0
    paths = [p for p, _ in test]
    t0 = time.perf_counter()
    res = peer.score(paths)
    bulk_s = time.perf_counter() - t0
    rng = random.Random(7)
    sample = rng.sample(paths, min(per_process, len(paths)))
    t0 = time.perf_counter()
    for p in sample:
        peer.one_process(p)
    one_s = time.perf_counter() - t0
    fig = figures([lab for _, lab in test], res)
    fig.update({
        "train_s": train_s, "bulk_msgs_per_s": len(paths) / bulk_s,
        "one_process_msgs_per_s": len(sample) / one_s, "one_process_n": len(sample),
        "peak_mb": peer.meter.peak_kb / 1024.0,
    })
    return fig, [r[0] for r in res]


def run_online(peer: Peer, stream: Sequence[Item]) -> tuple[dict[str, Any], list[float]]:
    t0 = time.perf_counter()
    res = peer.online(stream)
    wall = time.perf_counter() - t0
    fig = figures([lab for _, lab in stream], res)
    fig.update({"total_s": wall, "msgs_per_s": len(stream) / wall,
                "peak_mb": peer.meter.peak_kb / 1024.0})
    return fig, [r[0] for r in res]


# -- reports --------------------------------------------------------------------------------

def markdown(report: dict[str, Any]) -> str:
    """The table of one corpus and mode, then the command line that made it and its JSON
    (``compare-<corpus>-<mode>.json``, written beside the page)."""
    rows = report["filters"]
    if report["mode"] == "batch":
        head = ("| filter | ham lost (FP) | spam missed (FN) | accuracy | 1-ROCA | "
                "missed, no ham lost | training | bulk msg/s | 1 process/msg, msg/s | "
                "peak memory |")
        sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    else:
        head = ("| filter | ham lost (FP) | spam missed (FN) | accuracy | 1-ROCA | "
                "missed, no ham lost | classify+train msg/s | peak memory |")
        sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, sep]
    for name, r in rows.items():
        if "skipped" in r:
            continue
        cells = [f"**{name}**" if name == "nnspam" else name,
                 f"{r['ham_lost_pct']:.2f}% ({r['fp']}/{r['n_ham']})",
                 f"{r['spam_missed_pct']:.2f}% ({r['fn']}/{r['n_spam']})",
                 f"{r['accuracy_pct']:.2f}%", f"{r['one_minus_roca_pct']:.3f}%",
                 f"{r['spam_missed_at_zero_fp_pct']:.2f}%"]
        if report["mode"] == "batch":
            cells += [f"{r['train_s']:.1f} s", f"{r['bulk_msgs_per_s']:.0f}",
                      f"{r['one_process_msgs_per_s']:.1f}"]
        else:
            cells += [f"{r['msgs_per_s']:.1f}"]
        cells.append(f"{r['peak_mb']:.0f} MB")
        lines.append("| " + " | ".join(cells) + " |")
    name = f"compare-{report['corpus']}-{report['mode']}.json"
    cmd = report["command"]
    code = f"`` {cmd} ``" if "`" in cmd else f"`{cmd}`"
    lines += ["", f"Made by: {code} (JSON: [{name}]({name}))."]
    skipped = [f"{n}: {r['skipped']}" for n, r in rows.items() if "skipped" in r]
    if skipped:
        lines.append("")
        lines.append("Not run: " + "; ".join(skipped) + ".")
    return "\n".join(lines) + "\n"


def plot(path: Path, labels: Sequence[str], curves: dict[str, list[float]],
         points: dict[str, dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([1 if lab == "spam" else 0 for lab in labels])
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for name, scores in curves.items():
        fpr, tpr = roc_curve(y, np.asarray(scores))
        r = points[name]
        line, = ax.plot(np.maximum(fpr * 100, 1e-2), np.maximum((1 - tpr) * 100, 1e-2),
                        drawstyle="steps-post", lw=2.2 if name == "nnspam" else 1.3,
                        label=f"{name} (1-ROCA {r['one_minus_roca_pct']:.3f}%)")
        ax.plot(max(r["ham_lost_pct"], 1e-2), max(r["spam_missed_pct"], 1e-2), "o",
                color=line.get_color(), ms=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-2, 100)
    ax.set_ylim(1e-2, 100)
    ax.set_xlabel("ham lost (% of ham, log scale; 0 drawn at 0.01)")
    ax.set_ylabel("spam missed (% of spam, log scale; 0 drawn at 0.01)")
    ax.set_title(title + "\n(dots: each filter's own verdict)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


# -- main -----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="split file (path<TAB>label<TAB>part)")
    ap.add_argument("--corpus", help="corpus root directory or .tar.xz (email)")
    ap.add_argument("--sms", help="the SMS Spam Collection file (SMS)")
    ap.add_argument("--mode", choices=("batch", "online", "both"), default="batch")
    ap.add_argument("--limit", type=int, help="at most N messages per part (batch) or in the "
                    "stream (online), each class in proportion: for quick runs")
    ap.add_argument("--limit-online", type=int, metavar="N",
                    help="length of the online stream (overrides --limit for online mode)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the online shuffle and of "
                    "--limit's sample (default 1)")
    ap.add_argument("--filters", default=",".join(PEERS),
                    help=f"comma-separated, from {','.join(PEERS)} (default: all)")
    ap.add_argument("--per-process", type=int, default=50, metavar="N",
                    help="messages timed with one process per message (default 50)")
    ap.add_argument("--out", default="bench-out", help="directory for JSON, Markdown, PNG")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    args = ap.parse_args(argv)
    if bool(args.corpus) == bool(args.sms):
        ap.error("give --corpus ROOT (email) or --sms FILE (SMS)")
    wanted = [f.strip() for f in args.filters.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in CLASSES]
    if unknown:
        ap.error(f"unknown filter(s): {', '.join(unknown)}")
    sms = bool(args.sms)
    kind = "sms" if sms else "email"
    corpus_name = "sms" if sms else Path(args.split).stem
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = ("batch", "online") if args.mode == "both" else (args.mode,)

    def load(part: str | None) -> list[Any]:
        return load_split_samples(args.split, corpus_root=args.corpus, part=part,
                                  sms_file=args.sms)

    status = 0
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="nnspam-compare-") as tmp:
            work = Path(tmp)
            if mode == "batch":
                train = write_messages(subsample(load("train"), args.limit, args.seed),
                                       work / "train", sms)
                test = write_messages(subsample(load("test"), args.limit, args.seed),
                                      work / "test", sms)
                labels = [lab for _, lab in test]
                what = (f"train {len(train)} ({sum(lab == 'spam' for _, lab in train)} spam), "
                        f"test {len(test)} ({sum(lab == 'spam' for _, lab in test)} spam)")
            else:
                samples = load(None)
                random.Random(args.seed).shuffle(samples)
                n = args.limit_online if args.limit_online is not None else args.limit
                if n is not None:
                    samples = samples[:n]
                stream = write_messages(samples, work / "stream", sms)
                labels = [lab for _, lab in stream]
                what = (f"stream of {len(stream)} ({sum(lab == 'spam' for lab in labels)} "
                        f"spam), seeded shuffle {args.seed}")
            print(f"== {corpus_name} {mode}: {what}", flush=True)
            report: dict[str, Any] = {
                "corpus": corpus_name, "mode": mode, "split": args.split, "what": what,
                "seed": args.seed, "limit": args.limit, "machine": machine(),
                "command": "python scripts/bench/compare.py " + " ".join(
                    sys.argv[1:] if argv is None else argv),
                "filters": {},
            }
            curves: dict[str, list[float]] = {}
            for name in wanted:
                peer = CLASSES[name](name=name, kind=kind, db=work / "db" / name)
                why = peer.available()
                if why:
                    print(f"   {name}: skipped, {why}", flush=True)
                    report["filters"][name] = {"skipped": why}
                    continue
                try:
                    version = peer.version()
                    if mode == "batch":
                        fig, scores = run_batch(peer, train, test, args.per_process)
                    else:
                        fig, scores = run_online(peer, stream)
                except Exception as exc:  # noqa: BLE001 - a broken peer must not hide the others
                    print(f"   {name}: FAILED: {exc}", file=sys.stderr, flush=True)
                    report["filters"][name] = {"skipped": f"failed: {exc}"}
                    status = 1
                    continue
                fig["version"] = version
                report["filters"][name] = fig
                curves[name] = scores
                print(f"   {name:12s} FP {fig['ham_lost_pct']:6.2f}%  "
                      f"FN {fig['spam_missed_pct']:6.2f}%  "
                      f"1-ROCA {fig['one_minus_roca_pct']:7.3f}%  "
                      f"peak {fig['peak_mb']:5.0f} MB  ({version})", flush=True)
            stem = out_dir / f"compare-{corpus_name}-{mode}"
            (stem.with_suffix(".json")).write_text(json.dumps(report, indent=2) + "\n")
            md = markdown(report)
            (stem.with_suffix(".md")).write_text(md)
            print(md, flush=True)
            if curves and not args.no_plot:
                plot(stem.with_suffix(".png"), labels, curves, report["filters"],
                     f"{corpus_name} split, {mode}: {what}")
    return status


if __name__ == "__main__":
    sys.exit(main())
