"""nnspam, bogofilter, SpamProbe, CRM114 and the TREC reference learner on the same ordered
mail streams, in one run.

Every filter sees the same messages in the same order, from the same start, under the same
feedback, and follows the same protocol for each message: classify it, record its score and
verdict, then learn it with its true label if the feedback mode says so. Nothing else is
learned and nothing is learned early.

Streams: TREC-toolkit index files (``--index``: one ``spam|ham PATH`` line per message, in
order; PATH relative to the corpus folder, e.g. ``/work/shared/corpora/streams/enron1.index``
.. ``enron6.index`` relative to ``enron-spam/``, ``spamassassin-by-date.index`` relative to
``spamassassin/``), and the UCI SMS collection in file order (``--sms``). The peers get each
SMS wrapped in the minimal RFC 822 message of ``compare.py`` (:func:`compare.wrap_sms`);
nnspam gets the text.

Enron-Spam's files are a ``Subject:`` line followed directly by the body, with no blank line
between, so an RFC 822 reader takes the body for more header lines: SpamProbe then learns the
subject alone, bogofilter tags every body word as a header word (``head:``), Python's email
parser (nnspam's) starts the body at the first line that is not a header, and CRM114 reads
plain text anyway. By default every filter gets the files as they are (the TREC way);
``--header-break`` gives every filter the same messages with a blank line after that line.

Feedback (``--feedback``):

errors  a user's corrections: a message is learned, with its true label, only when the
        filter's own verdict was wrong (train on error).
all     TREC full feedback: every message is learned with its true label after it was
        classified.

Start (``--start``):

trained the peers are first trained on the train part of ``splits/spamassassin.tsv`` (email
        streams) or ``splits/sms.tsv`` (SMS), the data the shipped nnspam models ``default``
        and ``default-sms`` were trained on; nnspam starts from that shipped model (``--model``
        / ``--sms-model``), loaded into memory and never written. Each peer is trained once
        per run; every stream starts from a copy of that database. ``--train-limit N`` trains
        the peers on a class-proportional sample of N (quick runs; nnspam's model is the
        shipped one regardless). The train part holds most of ``spamassassin-by-date`` and
        of the SMS collection: the reports give that overlap.
empty   every filter starts from an empty database; nnspam from an untrained network whose
        free input slots the stream fills (:func:`nnspam.services.runs.stream.start_model`
        with None).

How each filter is driven (each keeps its database in a temporary directory, never in ~):

nnspam      in this process: :func:`nnspam.services.runs.stream.replay` with the config's
            ``learn:`` rule (:func:`nnspam.model.correct.rule_from_config`) and adaptive
            inputs on, as ``nnspam stream`` and the daemon; score: the spamicity's logit;
            verdict: spamicity >= the model's threshold (0.5 at the ham bias h=0.9, s=0.1).
bogofilter  one process per step: ``bogofilter -C -d DB -v -I FILE`` to classify (score: its
            spamicity; verdict: "Spam"; "Unsure" counts as not spam, as in compare.py, so an
            unsure spam is a miss and is learned in errors mode), ``-s``/``-n -I FILE`` to
            learn. Before anything is learned (no wordlist) it scores 0.5, Unsure.
spamprobe   ``spamprobe -d DB score FILE`` (read-only; verdict: SPAM), ``spamprobe -d DB
            spam|good FILE`` to learn; the empty start is ``create-db``.
crm114      ``crm`` with ``classify <osb unique microgroom> ( spam.css | ham.css )`` (score:
            pR; verdict: pR > 0), ``learn <osb unique microgroom> ( spam.css|ham.css )`` with
            the message on standard input. The empty start learns an empty text into each
            .css file, so both exist and errors-only learning can begin (a missing ham.css
            would keep every verdict at ham, and no ham would ever be an error).
reference   the TREC spam track's reference learner (Goodman and Yih 2006; Cormack, TREC
            2007), ``peers/reference_lr.py``, in this process (NumPy): the message's first
            3,000 bytes (headers included) as binary hashed 4-byte substrings (2^22 slots),
            logistic regression from zero weights; score: w.x (a log-odds); verdict: score
            > 0; learning: one gradient step, w += 0.002 (y - sigmoid(w.x)) on the slots
            present. The trained start is one pass of the same steps over the train part,
            in its order. It reads the same files as the other peers.
spamassassin (optional, not in the default --filters) its Bayes classifier alone via
            ``peers/sa_bayes.pl``: ``score FILE`` and ``train spam|ham FILE``; verdict:
            probability > 0.5.

Peers are run by compare.py's Peer classes (their training, versions and GNU time's peak
memory); this script adds classify-one and learn-one steps to them.

Per stream and filter it writes (``--out DIR``): ``stream-<name>-<feedback>-<start>.json``,
``.md`` and ``.png`` (cumulative ham lost and spam missed against messages, one line per
filter): ham lost, spam missed (counts and %), 1-ROCA % from each filter's per-message scores,
the spam missed at the thresholds that lose at most 0.05% and 0.1% of the ham (from the same
scores: :func:`nnspam.services.runs.evaluate.spam_missed_at_ham_loss`; "at 0.05% ham"),
corrections (messages learned) and messages per second (classify and learn, the whole stream
over its wall time; with ``--jobs`` > 1 the filters share the cores, so their rates are lower
than alone). ``stream-summary-<feedback>-<start>.md`` and ``.json`` hold all streams of a run.
Every Markdown table is followed by the command line that measured it and the JSON it came
from ("Made by: ..."; for reports merged by ``stream_merge.py``, each filter's own run).

Usage:
    python scripts/bench/stream.py --index ../shared/corpora/streams/enron{1,2,3,4,5,6}.index \\
        --feedback errors --start trained --out bench-out
    python scripts/bench/stream.py --index ../shared/corpora/streams/spamassassin-by-date.index \\
        --sms ../shared/corpora/sms/SMSSpamCollection --feedback all --start empty \\
        [--corpus DIR|ARCHIVE] [--limit N] [--train-limit N] [--header-break] [--jobs 2] \\
        [--filters nnspam,bogofilter,spamprobe,crm114,reference] [--out bench-out]

``--corpus`` is a corpus folder or archive, or a folder holding them (``enron-spam/``,
``spamassassin/``, ``*.tar.xz``); by default the corpus is guessed from the index's name and
looked for beside the index's ``streams/`` folder, in ``$NNSPAM_CORPORA`` and in
``../shared/corpora`` relative to the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:  # for compare.py; last, so its neighbours shadow nothing
    sys.path.append(str(HERE))

from compare import (  # noqa: E402
    CRM114,
    CRM_LEARN,
    Bogofilter,
    Item,
    SpamAssassin,
    SpamProbe,
    figures,
    machine,
    subsample,
    write_messages,
)
from peers.reference_lr import ReferenceLR, features  # noqa: E402

from nnspam.config import load_config  # noqa: E402
from nnspam.mail.corpus import load_split_samples, read_sms, read_split  # noqa: E402
from nnspam.model.correct import rule_from_config  # noqa: E402
from nnspam.services.runs import stream as nn_stream  # noqa: E402
from nnspam.services.runs.evaluate import (  # noqa: E402
    HAM_LOSS_POINTS,
    spam_missed_at_ham_loss,
)

FILTERS = ("nnspam", "bogofilter", "spamprobe", "crm114", "reference", "spamassassin")
DEFAULT_FILTERS = ("nnspam", "bogofilter", "spamprobe", "crm114", "reference")
CORPUS_NAMES = {"enron": "enron-spam", "spamassassin": "spamassassin", "sa": "spamassassin"}
ARCHIVE_EXTS = (".tar.xz", ".tar.gz", ".tgz", ".tar")
PROGRESS_EVERY = 1000


# -- nnspam's start -------------------------------------------------------------------------

def nnspam_start_model(spec: str | None, cfg: dict[str, Any], kind: str) -> Any:
    """nnspam's start model: ``spec`` is a model name ("default", "default-sms") or a model
    directory, loaded into memory and never written; None is an untrained network of
    ``kind``. The config's ``adaptive:`` section applies
    (:func:`nnspam.services.runs.stream.start_model`)."""
    model = nn_stream.start_model(spec, cfg, kind)
    if model.kind != kind:
        raise ValueError(f"model {spec} is an {model.kind} model; this stream is {kind}")
    return model


# -- the peers, one message at a time -------------------------------------------------------

def copy_db(src: Path, dst: Path) -> None:
    """A trained database copied to a stream's own directory (Berkeley DB's environment
    region files ``__db.*`` are left behind: they are recreated)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__db.*"))


class StreamBogofilter(Bogofilter):
    """bogofilter, classifying and learning one message per process."""

    def start(self) -> None:
        self.db.mkdir(parents=True, exist_ok=True)

    def classify(self, path: str) -> tuple[float, bool]:
        if not (self.db / "wordlist.db").exists():
            return 0.5, False  # nothing learned yet: bogofilter would say Unsure, 0.5
        out = self.meter.run(self._cmd() + ["--spamicity-formats=%0.8e, %0.8e, %0.8e",
                                            "--header-format=%c %p", "-v", "-I", path],
                             check=False).decode(errors="replace").split()
        if len(out) < 2:
            raise RuntimeError(f"bogofilter gave no verdict for {path}")
        return float(out[1]), out[0] == "Spam"

    def learn(self, path: str, label: str) -> None:
        self.meter.run(self._cmd() + ["-s" if label == "spam" else "-n", "-I", path])

    def finish(self) -> None:
        pass


class StreamSpamProbe(SpamProbe):
    """SpamProbe, scoring (read-only) and learning one message per process."""

    def start(self) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        if not (self.db / "sp_words").exists():
            self.meter.run(self._cmd() + ["create-db"])

    def classify(self, path: str) -> tuple[float, bool]:
        res = self._parse(self.meter.run(self._cmd() + ["score", path]))
        if len(res) != 1:
            raise RuntimeError(f"spamprobe gave {len(res)} scores for {path}")
        return res[0]

    def learn(self, path: str, label: str) -> None:
        self.meter.run(self._cmd() + ["spam" if label == "spam" else "good", path])

    def finish(self) -> None:
        pass


class StreamCRM114(CRM114):
    """CRM114 (OSB unique microgroom), one ``crm`` process per classify or learn."""

    def start(self) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        for label in ("spam", "ham"):
            if not (self.db / f"{label}.css").exists():
                self.meter.run(["crm", CRM_LEARN % label], stdin=b"", cwd=str(self.db))

    def classify(self, path: str) -> tuple[float, bool]:
        return self._classify(path)

    def learn(self, path: str, label: str) -> None:
        self._learn(path, label)

    def finish(self) -> None:
        pass


class StreamSpamAssassin(SpamAssassin):
    """SpamAssassin's Bayes alone, through one long-running driver per stream."""

    def start(self) -> None:
        self._d = self._driver()

    def classify(self, path: str) -> tuple[float, bool]:
        return self._verdict(float(self._d.ask(f"score {path}")))

    def learn(self, path: str, label: str) -> None:
        self._d.ask(f"train {label} {path}")

    def finish(self) -> None:
        self._d.close()


class StreamReference:
    """The reference learner (``peers/reference_lr.py``) as a peer, in this process: its
    database is one ``weights.npy`` (2^22 float64, 32 MB)."""

    in_process = True  # no peak memory of its own to measure

    def __init__(self, name: str, kind: str, db: Path) -> None:
        self.name, self.kind, self.db = name, kind, db
        self.meter = SimpleNamespace(peak_kb=0)
        self.lr: ReferenceLR | None = None
        self._last: tuple[str, np.ndarray, float] | None = None

    def available(self) -> str | None:
        return None

    def version(self) -> str:
        return f"reference LR, 4-byte grams 2^22, rate 0.002 (NumPy {np.__version__})"

    def train(self, items: Sequence[Item]) -> None:
        """One pass of the online steps over ``items`` in order; saved to the database."""
        lr = ReferenceLR()
        for path, label in items:
            lr.learn(features(Path(path).read_bytes()), label == "spam")
        self.db.mkdir(parents=True, exist_ok=True)
        lr.save(self.db / "weights.npy")

    def start(self) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        weights = self.db / "weights.npy"
        self.lr = ReferenceLR.load(weights) if weights.exists() else ReferenceLR()

    def classify(self, path: str) -> tuple[float, bool]:
        assert self.lr is not None
        slots = features(Path(path).read_bytes())
        score = self.lr.score(slots)
        self._last = (path, slots, score)
        return score, score > 0

    def learn(self, path: str, label: str) -> None:
        assert self.lr is not None
        if self._last is not None and self._last[0] == path:  # scored just before
            _, slots, score = self._last
            self.lr.learn(slots, label == "spam", score)
        else:
            self.lr.learn(features(Path(path).read_bytes()), label == "spam")
        self._last = None

    def finish(self) -> None:
        self.lr = None


PEERS: dict[str, Callable[..., Any]] = {
    "bogofilter": StreamBogofilter, "spamprobe": StreamSpamProbe, "crm114": StreamCRM114,
    "reference": StreamReference, "spamassassin": StreamSpamAssassin,
}


def peak_mb(peer: Any) -> float | None:
    """A peer's peak memory (GNU time's, of its processes); None in this process."""
    return None if getattr(peer, "in_process", False) else peer.meter.peak_kb / 1024.0


# -- streams --------------------------------------------------------------------------------

@dataclass
class Stream:
    """One ordered stream: ``items`` are ``(judge, key)`` pairs for nnspam's replay (``read``
    gives a key's message), ``files`` the same messages as files for the peers."""

    name: str
    kind: str
    source: str
    corpus: str
    items: list[tuple[str, str]]
    read: Callable[[str], bytes | str]
    files: list[str]

    @property
    def labels(self) -> list[str]:
        return [judge for judge, _ in self.items]


def corpora_roots() -> list[Path]:
    """Folders that may hold the shared corpora: ``$NNSPAM_CORPORA``, then
    ``../shared/corpora`` relative to the repository."""
    roots = []
    if os.environ.get("NNSPAM_CORPORA"):
        roots.append(Path(os.environ["NNSPAM_CORPORA"]))
    roots.append(REPO.parent / "shared" / "corpora")
    return roots


def corpus_name_of(index: str | Path) -> str | None:
    """The corpus an index belongs to, from its name (``enron3`` -> ``enron-spam``)."""
    stem = Path(index).name.lower()
    for prefix, name in CORPUS_NAMES.items():
        if stem.startswith(prefix):
            return name
    return None


def find_corpus(first_path: str, name: str | None, places: Sequence[Path]) -> Path | None:
    """The first of ``places`` that is, or holds, a corpus with ``first_path`` in it:
    an archive given directly, a folder the path is relative to, the unpacked ``name/``
    folder in it, or its ``name.tar.xz`` archive."""
    for place in places:
        if place.is_file():
            return place
        if not place.is_dir():
            continue
        if (place / first_path).is_file():
            return place
        if name:
            if (place / name / first_path).is_file():
                return place / name
            for ext in ARCHIVE_EXTS:
                if (place / (name + ext)).is_file():
                    return place / (name + ext)
    return None


def resolve_corpus(index: Path, first_path: str, given: str | None) -> Path:
    """The corpus folder or archive an index's paths refer to (SystemExit if none)."""
    name = corpus_name_of(index)
    if given:
        places = [Path(given)]
    else:
        places = [index.parent, index.parent.parent, *corpora_roots()]
    found = find_corpus(first_path, name, places)
    if found is None:
        raise SystemExit(f"stream.py: no corpus for {index} (looked for {first_path} or "
                         f"{name or '?'}.tar.xz in {', '.join(map(str, places))}); "
                         f"give --corpus DIR|ARCHIVE")
    return found


def header_break(data: bytes) -> bytes:
    """A message that is a bare ``Subject:`` line followed directly by its body (Enron-Spam's
    files) with the blank line that ends the headers put after that line; others unchanged.

    Without it, an RFC 822 reader takes the body for more header lines: SpamProbe then
    learns the subject alone, and bogofilter tags every body word as a header word."""
    first, nl, rest = data.partition(b"\n")
    if not nl or not first[:8].lower() == b"subject:" or rest[:1] in (b"\n", b"\r", b""):
        return data
    return first + nl + (b"\r\n" if first.endswith(b"\r") else b"\n") + rest


def load_index_stream(index: str, corpus: str | None, limit: int | None,
                      work: Path, fix_headers: bool = False) -> Stream:
    """An index file's stream; archive members (and, with ``fix_headers``, every message,
    through :func:`header_break`) are written to files for the peers."""
    idx = Path(index)
    items = nn_stream.read_index(idx)
    if limit is not None:
        items = items[:limit]
    keys = [p for _, p in items]
    root = resolve_corpus(idx, keys[0], corpus)
    read = nn_stream.load_messages(keys, root)
    if fix_headers:
        raw = read

        def read(p: str) -> bytes:
            return header_break(raw(p))
    name = idx.name.removesuffix(".index")
    if root.is_dir() and not fix_headers:
        files = [str((root / k).resolve()) for k in keys]
    else:
        folder = work / "messages" / name
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, k in enumerate(keys):
            f = folder / f"{i:06d}"
            f.write_bytes(read(k))
            files.append(str(f))
    return Stream(name=name, kind="email", source=str(idx), corpus=str(root), items=items,
                  read=read, files=files)


def load_sms_stream(sms_file: str, limit: int | None, work: Path) -> Stream:
    """The SMS collection in file order: nnspam reads the text, the peers a wrapped file."""
    samples = read_sms(sms_file)
    if limit is not None:
        samples = samples[:limit]
    texts = {s.name: s.payload for s in samples}
    written = write_messages(samples, work / "messages" / "sms", sms=True)
    return Stream(name="sms", kind="sms", source=str(sms_file), corpus=str(sms_file),
                  items=[(s.label, s.name) for s in samples], read=texts.__getitem__,
                  files=[p for p, _ in written])


# -- the trained start ----------------------------------------------------------------------

@dataclass
class TrainSet:
    """The peers' training data for one kind of stream."""

    split: str
    corpus: str
    items: list[Item]
    keys: set[str]
    dbs: dict[str, Any] = field(default_factory=dict)  # name -> trained db, or the error


def find_split(kind: str, hints: Sequence[Path], given: str | None) -> Path:
    """``splits/spamassassin.tsv`` (email) or ``splits/sms.tsv`` (SMS)."""
    if given:
        return Path(given)
    name = "sms.tsv" if kind == "sms" else "spamassassin.tsv"
    for root in [*hints, *corpora_roots()]:
        if (root / "splits" / name).is_file():
            return root / "splits" / name
    raise SystemExit(f"stream.py: splits/{name} not found; give --train-split FILE")


def load_train_set(kind: str, args: argparse.Namespace, hints: Sequence[Path],
                   work: Path) -> TrainSet:
    """The train part of the split that the shipped nnspam model of ``kind`` learned,
    written to files (SMS texts wrapped)."""
    split = find_split(kind, hints, args.train_split)
    rows = read_split(str(split), "train")
    if kind == "sms":
        corpus = args.sms
        samples = load_split_samples(str(split), part="train", sms_file=corpus)
    else:
        places = [Path(args.train_corpus)] if args.train_corpus else []
        if args.corpus:
            places += [Path(args.corpus), Path(args.corpus).parent]
        places += [*hints, *corpora_roots()]
        found = find_corpus(rows[0][0], "spamassassin", places)
        if found is None:
            raise SystemExit("stream.py: the SpamAssassin corpus for the trained start was "
                             "not found; give --train-corpus DIR|ARCHIVE")
        corpus = str(found)
        samples = load_split_samples(str(split), corpus_root=corpus, part="train")
    samples = subsample(samples, args.train_limit, args.seed)
    items = write_messages(samples, work / "train" / kind, sms=kind == "sms")
    return TrainSet(split=str(split), corpus=corpus, items=items,
                    keys={s.name for s in samples})


def train_peer(name: str, kind: str, train: TrainSet, work: Path) -> dict[str, Any]:
    """Train one peer's start database once; every stream copies it."""
    peer = PEERS[name](name=name, kind=kind, db=work / "trained" / kind / name)
    t0 = time.perf_counter()
    peer.train(train.items)
    return {"db": peer.db, "train_s": time.perf_counter() - t0,
            "train_peak_mb": peak_mb(peer)}


# -- running one filter on one stream -------------------------------------------------------

@dataclass
class Run:
    """One filter's pass over a stream: per-message score, verdict and learned flag."""

    scores: list[float] = field(default_factory=list)
    spam: list[bool] = field(default_factory=list)
    learned: list[bool] = field(default_factory=list)
    setup_s: float = 0.0
    total_s: float = 0.0
    peak_mb: float | None = None
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_print_lock = threading.Lock()


def say(text: str, err: bool = False) -> None:
    """Print a line (threads print whole lines)."""
    with _print_lock:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def run_peer(peer: Any, stream: Stream, feedback: str, start_db: Path | None) -> Run:
    """Classify, record, then (by ``feedback``) learn each message of ``stream`` in order."""
    run = Run(version=peer.version())
    t0 = time.perf_counter()
    if start_db is not None:
        copy_db(start_db, peer.db)
    peer.start()
    run.setup_s = time.perf_counter() - t0
    n = len(stream.files)
    t0 = time.perf_counter()
    for i, (path, judge) in enumerate(zip(stream.files, stream.labels, strict=True), 1):
        score, spam = peer.classify(path)
        learn = feedback == "all" or spam != (judge == "spam")
        if learn:
            peer.learn(path, judge)
        run.scores.append(score)
        run.spam.append(spam)
        run.learned.append(learn)
        if i % PROGRESS_EVERY == 0:
            say(f"   {stream.name}/{peer.name}: {i}/{n}", err=True)
    peer.finish()
    run.total_s = time.perf_counter() - t0
    run.peak_mb = peak_mb(peer)
    return run


def run_nnspam(stream: Stream, feedback: str, spec: str | None, cfg: dict[str, Any]) -> Run:
    """nnspam's pass, in this process, through :func:`nnspam.services.runs.stream.replay`."""
    from nnspam import __version__

    run = Run(version=f"nnspam {__version__}")
    t0 = time.perf_counter()
    model = nnspam_start_model(spec, cfg, stream.kind)
    rule = rule_from_config(cfg, untrained=spec is None)
    run.setup_s = time.perf_counter() - t0
    run.extra["start_model"] = spec
    n = len(stream.items)
    t0 = time.perf_counter()
    for i, step in enumerate(nn_stream.replay(model, stream.items, stream.read, feedback,
                                              rule), 1):
        run.scores.append(step.score)
        run.spam.append(step.verdict == "spam")
        run.learned.append(step.learned)
        if i % PROGRESS_EVERY == 0:
            say(f"   {stream.name}/nnspam: {i}/{n}", err=True)
    run.total_s = time.perf_counter() - t0
    return run


def _clean(x: Any) -> Any:
    """NaN -> None, for JSON."""
    return None if isinstance(x, float) and math.isnan(x) else x


def ham_loss_key(fraction: float) -> str:
    """The result's key of the spam missed (%) at ``fraction`` of ham lost (0.0005 ->
    ``spam_missed_at_ham_loss_0.05_pct``)."""
    return f"spam_missed_at_ham_loss_{100 * fraction:g}_pct"


def result(labels: Sequence[str], run: Run) -> dict[str, Any]:
    """The figures of one filter's pass (counts, %, 1-ROCA, spam missed at 0.05% and 0.1%
    of ham lost, corrections, speed)."""
    fig = figures(labels, list(zip(run.scores, run.spam, strict=True)))
    y = np.array([lab == "spam" for lab in labels])
    pred = np.array(run.spam, dtype=bool)
    scores = np.array(run.scores, dtype=np.float64)
    n = len(labels)
    out = {
        "version": run.version,
        "messages": n, "ham": fig["n_ham"], "spam": fig["n_spam"],
        "ham_lost": fig["fp"], "ham_lost_pct": fig["ham_lost_pct"],
        "spam_missed": fig["fn"], "spam_missed_pct": fig["spam_missed_pct"],
        "accuracy_pct": fig["accuracy_pct"],
        "one_minus_roca_pct": _clean(fig["one_minus_roca_pct"]),
        "spam_missed_at_zero_fp_pct": fig["spam_missed_at_zero_fp_pct"],
        **{ham_loss_key(f): _clean(100.0 * spam_missed_at_ham_loss(y.astype(int), scores, f))
           for f in HAM_LOSS_POINTS},
        "corrections": int(sum(run.learned)),
        "setup_s": run.setup_s, "total_s": run.total_s,
        "msgs_per_s": n / run.total_s if run.total_s > 0 else None,
        "peak_mb": run.peak_mb,
        # 1-based message numbers of the errors: the learning curves
        "ham_lost_at": [int(i) + 1 for i in np.flatnonzero(~y & pred)],
        "spam_missed_at": [int(i) + 1 for i in np.flatnonzero(y & ~pred)],
    }
    out.update(run.extra)
    return out


# -- reports --------------------------------------------------------------------------------

def _pct(r: dict[str, Any], what: str, of: str) -> str:
    return f"{r[what + '_pct']:.2f}% ({r[what]:,}/{r[of]:,})"


def _roca(r: dict[str, Any]) -> str:
    v = r["one_minus_roca_pct"]
    if v is None:
        return "n/a"
    return f"{v:.3f}%" if v >= 0.1 else f"{v:.4f}%"  # 0.0084%, not 0.008%


def _at_ham_loss(r: dict[str, Any]) -> str:
    """The spam missed at 0.05% and at 0.1% of ham lost, as two table cells."""
    cells = []
    for f in HAM_LOSS_POINTS:
        v = r.get(ham_loss_key(f))
        cells.append("n/a" if v is None else f"{v:.2f}%")
    return " | ".join(cells)


_AT_HAM_LOSS_HEAD = " | ".join(f"spam missed at {100 * f:g}% ham" for f in HAM_LOSS_POINTS)


def _rate(r: dict[str, Any]) -> str:
    v = r["msgs_per_s"]
    return "n/a" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def describe(report: dict[str, Any]) -> str:
    """One line: the stream, its size, feedback and start."""
    return (f"{report['stream']}: {report['messages']:,} messages ({report['ham']:,} ham, "
            f"{report['spam']:,} spam), feedback {report['feedback']}, start {report['start']}")


def _code(text: str) -> str:
    """``text`` as a Markdown code span (a longer fence when it holds backticks)."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def json_name(report: dict[str, Any]) -> str:
    """The name of a per-stream report's JSON beside its page, for a caller that does not
    give it (``stream_merge.py``): ``stream-<name>-<feedback>-<start>.json``, with
    ``-header-break`` for a header-break report (the ``--tag`` docs/stream/ gives those;
    a dead link fails the docs build). :func:`write_reports` gives the name it wrote."""
    tag = "-header-break" if report.get("header_break") else ""
    return f"stream-{report['stream']}-{report['feedback']}-{report['start']}{tag}.json"


def measured_by(report: dict[str, Any]) -> dict[str, str]:
    """The command line that measured each filter of ``report`` (not the skipped ones):
    the report's ``command``, or, in a report merged by ``stream_merge.py``, the last of its
    ``runs`` that drove the filter (the merge keeps the last run's figures)."""
    out: dict[str, str] = {}
    for name, r in report["filters"].items():
        if "skipped" in r:
            continue
        cmd = report.get("command") or ""
        for run in report.get("runs") or []:
            if name in run.get("filters", ()) and run.get("command"):
                cmd = run["command"]
        out[name] = cmd
    return out


def made_by(commands: dict[str, list[str]], json_links: str) -> list[str]:
    """The "Made by" lines under a table: ``commands`` maps each command line to what it
    measured (e.g. ["bogofilter, crm114", "nnspam (sms)"]); ``json_links`` is Markdown."""
    def code(cmd: str) -> str:
        return _code(cmd) if cmd else "command not recorded"

    if len(commands) == 1:
        (cmd,) = commands
        return [f"Made by: {code(cmd)} (JSON: {json_links})."]
    lines = [f"Made by these runs, each filter's figures from the run that measured them, "
             f"merged by `scripts/bench/stream_merge.py` (JSON: {json_links}):", ""]
    lines += [f"- {'; '.join(what)}: {code(cmd)}" for cmd, what in commands.items()]
    return lines


def markdown(report: dict[str, Any], json_file: str | None = None) -> str:
    """The per-stream table, and the command line(s) that made it; ``json_file`` is the name
    of the report's JSON beside the page (default: :func:`json_name`)."""
    lines = [f"### {describe(report)}", "",
             f"| filter | ham lost | spam missed | 1-ROCA | {_AT_HAM_LOSS_HEAD} | corrections "
             "| msg/s | peak memory |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = report["filters"]
    for name, r in rows.items():
        if "skipped" in r:
            continue
        mem = "in-process" if r["peak_mb"] is None else f"{r['peak_mb']:.0f} MB"
        lines.append(f"| {'**nnspam**' if name == 'nnspam' else name} | "
                     f"{_pct(r, 'ham_lost', 'ham')} | {_pct(r, 'spam_missed', 'spam')} | "
                     f"{_roca(r)} | {_at_ham_loss(r)} | {r['corrections']:,} | {_rate(r)} | "
                     f"{mem} |")
    names: dict[str, list[str]] = {}
    for name, cmd in measured_by(report).items():
        names.setdefault(cmd, []).append(name)
    commands = {cmd: [", ".join(what)] for cmd, what in names.items()}
    json_file = json_file or json_name(report)
    lines += [""] + made_by(commands, f"[{json_file}]({json_file})")
    notes = []
    start = report.get("start_detail") or {}
    if start.get("peers_trained_on"):
        timing = ", ".join(f"{n} {r['train_s']:.1f} s" for n, r in rows.items()
                           if "train_s" in r)
        notes.append(f"Peers trained first on {start['peers_trained_on']:,} messages of "
                     f"{Path(start['split']).name} (train part)"
                     + (f": {timing}" if timing else "") + ".")
        if start.get("overlap_with_training"):
            notes.append(f"{start['overlap_with_training']:,} messages of this stream are in "
                         f"that train part.")
    skipped = [f"{n}: {r['skipped']}" for n, r in rows.items() if "skipped" in r]
    if skipped:
        notes.append("Not run: " + "; ".join(skipped) + ".")
    if report.get("header_break"):
        notes.append("Messages that are a bare Subject: line and body got a blank line after "
                     "the Subject line (--header-break), for every filter.")
    if report.get("jobs", 1) > 1:
        notes.append(f"Filters ran {report['jobs']} at a time: msg/s are shared-core rates.")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def summary_markdown(reports: Sequence[dict[str, Any]], json_file: str | None = None) -> str:
    """One table over every stream of the run, and the command line(s) that made it;
    ``json_file`` is the summary's JSON beside the page (default: each stream's JSON,
    :func:`json_name`, as ``stream_merge.py`` writes no summary JSON)."""
    lines = [f"| stream | filter | ham lost | spam missed | 1-ROCA | {_AT_HAM_LOSS_HEAD} | "
             "corrections | msg/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    skipped: list[str] = []
    for rep in reports:
        for name, r in rep["filters"].items():
            if "skipped" in r:
                skipped.append(f"{rep['stream']}/{name}: {r['skipped']}")
                continue
            lines.append(f"| {rep['stream']} | {'**nnspam**' if name == 'nnspam' else name} | "
                         f"{_pct(r, 'ham_lost', 'ham')} | {_pct(r, 'spam_missed', 'spam')} | "
                         f"{_roca(r)} | {_at_ham_loss(r)} | {r['corrections']:,} | "
                         f"{_rate(r)} |")
    by_cmd: dict[str, dict[str, list[str]]] = {}  # command -> filter -> streams
    for rep in reports:
        for name, cmd in measured_by(rep).items():
            by_cmd.setdefault(cmd, {}).setdefault(name, []).append(rep["stream"])
    every = [rep["stream"] for rep in reports]
    commands: dict[str, list[str]] = {}
    for cmd, filters in by_cmd.items():
        groups: dict[tuple[str, ...], list[str]] = {}  # the same streams: one group
        for name, streams in filters.items():
            groups.setdefault(tuple(streams), []).append(name)
        commands[cmd] = [", ".join(names) + ("" if list(streams) == every else
                                             f" ({', '.join(streams)})")
                         for streams, names in groups.items()]
    if json_file:
        links = f"[{json_file}]({json_file})"
    else:
        links = "per stream, " + ", ".join(
            f"[{rep['stream']}]({json_name(rep)})" for rep in reports)
    lines += [""] + made_by(commands, links)
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def plot(path: Path, report: dict[str, Any], labels: Sequence[str],
         runs: dict[str, Run]) -> None:
    """Learning curves: cumulative ham lost and spam missed against messages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([lab == "spam" for lab in labels])
    x = np.arange(1, len(labels) + 1)
    fig, (ax_ham, ax_spam) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, run in runs.items():
        pred = np.array(run.spam, dtype=bool)
        lw = 2.2 if name == "nnspam" else 1.3
        ax_ham.plot(x, np.cumsum(~y & pred), lw=lw, drawstyle="steps-post",
                    label=f"{name} ({int((~y & pred).sum())})")
        ax_spam.plot(x, np.cumsum(y & ~pred), lw=lw, drawstyle="steps-post",
                     label=f"{name} ({int((y & ~pred).sum())})")
    for ax, what in ((ax_ham, f"ham lost (of {int((~y).sum()):,} ham)"),
                     (ax_spam, f"spam missed (of {int(y.sum()):,} spam)")):
        ax.set_xlabel("messages")
        ax.set_ylabel(f"cumulative {what}")
        ax.set_title(what)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    fig.suptitle(describe(report))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (argparse errors for bad combinations)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", nargs="+", action="extend", default=[], metavar="FILE",
                    help="TREC index file(s): 'spam|ham PATH' per line, in stream order")
    ap.add_argument("--sms", metavar="FILE", help="the SMS Spam Collection, as a stream in "
                    "file order")
    ap.add_argument("--corpus", metavar="DIR|ARCHIVE", help="the index's corpus folder or "
                    "archive, or a folder holding corpora (default: guessed)")
    ap.add_argument("--feedback", choices=("errors", "all"), default="errors")
    ap.add_argument("--start", choices=("trained", "empty"), default="trained")
    ap.add_argument("--limit", type=int, metavar="N", help="first N messages of each stream")
    ap.add_argument("--train-limit", type=int, metavar="N", help="trained start: train the "
                    "peers on N messages of the train part (class-proportional sample)")
    ap.add_argument("--train-split", metavar="FILE", help="split whose train part the peers "
                    "learn (default: splits/spamassassin.tsv or splits/sms.tsv)")
    ap.add_argument("--train-corpus", metavar="DIR|ARCHIVE", help="the SpamAssassin corpus "
                    "for the email train part (default: guessed)")
    ap.add_argument("--model", default="default", help="nnspam's trained start for email "
                    "(default: the shipped 'default')")
    ap.add_argument("--sms-model", default="default-sms", help="nnspam's trained start for "
                    "SMS (default: the shipped 'default-sms')")
    ap.add_argument("--config", metavar="FILE", help="nnspam config (default: the usual "
                    "lookup; its learn: and adaptive: sections apply)")
    ap.add_argument("--seed", type=int, default=1, help="seed of --train-limit's sample")
    ap.add_argument("--filters", default=",".join(DEFAULT_FILTERS),
                    help=f"comma-separated, from {','.join(FILTERS)} "
                         f"(default: {','.join(DEFAULT_FILTERS)})")
    ap.add_argument("--header-break", action="store_true",
                    help="give every filter each bare 'Subject:' line + body message (the "
                         "Enron-Spam files) with a blank line after the Subject line")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run up to N filters of a stream at once (default 1)")
    ap.add_argument("--out", default="bench-out", help="directory for JSON, Markdown, PNG")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    args = ap.parse_args(argv)
    if not args.index and not args.sms:
        ap.error("give --index FILE... and/or --sms FILE")
    args.filters = [f.strip() for f in args.filters.split(",") if f.strip()]
    unknown = [f for f in args.filters if f not in FILTERS]
    if unknown:
        ap.error(f"unknown filter(s): {', '.join(unknown)}")
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    return args


class Bench:
    """One run: the options, the filters usable here, and the peers' trained starts (built
    once per kind of stream, in ``work``)."""

    def __init__(self, args: argparse.Namespace, work: Path,
                 pool: ThreadPoolExecutor | None) -> None:
        self.args = args
        self.work = work
        self.pool = pool
        self.cfg = load_config(args.config)
        self.why_not: dict[str, str] = {}
        for name in args.filters:
            if name != "nnspam":
                why = PEERS[name](name=name, kind="email", db=Path(os.devnull)).available()
                if why:
                    self.why_not[name] = why
                    say(f"{name}: skipped, {why}")
        self.usable = [n for n in args.filters if n not in self.why_not]
        self.peers = [n for n in self.usable if n != "nnspam"]
        self.train_sets: dict[str, TrainSet] = {}

    def each(self, fn: Callable[[str], Any], names: Sequence[str]) -> dict[str, Any]:
        """``fn(name)`` for every name, ``--jobs`` at a time, in order; an exception is
        returned in the result's place, so a broken filter cannot hide the others."""
        def safe(name: str) -> Any:
            try:
                return fn(name)
            except Exception as exc:  # noqa: BLE001 - a broken filter must not hide the others
                return exc
        if self.pool is None:
            return {n: safe(n) for n in names}
        futures = {n: self.pool.submit(safe, n) for n in names}
        return {n: f.result() for n, f in futures.items()}

    def train_set(self, kind: str, hints: Sequence[Path]) -> TrainSet | None:
        """The peers' trained start for ``kind`` (None for an empty start or no peers)."""
        if self.args.start != "trained" or not self.peers:
            return None
        if kind not in self.train_sets:
            ts = load_train_set(kind, self.args, hints, self.work)
            say(f"   training the peers on {len(ts.items):,} messages of {ts.split} "
                f"(train part)")
            ts.dbs = self.each(lambda n: train_peer(n, kind, ts, self.work), self.peers)
            self.train_sets[kind] = ts
        return self.train_sets[kind]

    def nnspam_spec(self, kind: str) -> str | None:
        """nnspam's start: the shipped model of ``kind`` (trained) or None (empty)."""
        if self.args.start != "trained":
            return None
        return self.args.sms_model if kind == "sms" else self.args.model

    def run_filter(self, name: str, stream: Stream, train: TrainSet | None) -> Run:
        """One filter's pass over ``stream``, from the run's start."""
        if name == "nnspam":
            return run_nnspam(stream, self.args.feedback, self.nnspam_spec(stream.kind),
                              self.cfg)
        start_db = None
        if train is not None:
            trained = train.dbs[name]
            if isinstance(trained, Exception):
                raise RuntimeError(f"training failed: {trained}")
            start_db = trained["db"]
        peer = PEERS[name](name=name, kind=stream.kind,
                           db=self.work / "db" / stream.name / name)
        return run_peer(peer, stream, self.args.feedback, start_db)

    def run_stream(self, stream: Stream, hints: Sequence[Path],
                   command: str) -> tuple[dict[str, Any], dict[str, Run], bool]:
        """Every filter on one stream: its report, the runs, and whether all went well."""
        args = self.args
        labels = stream.labels
        report: dict[str, Any] = {
            "stream": stream.name, "kind": stream.kind, "source": stream.source,
            "corpus": stream.corpus, "messages": len(labels), "ham": labels.count("ham"),
            "spam": labels.count("spam"), "feedback": args.feedback, "start": args.start,
            "limit": args.limit, "header_break": bool(args.header_break and
                                                      stream.kind == "email"),
            "jobs": args.jobs, "machine": machine(), "command": command,
            "start_detail": {}, "filters": {},
        }
        say(f"== {describe(report)}")
        train = self.train_set(stream.kind, hints)
        if train is not None:
            report["start_detail"] = {
                "split": train.split, "corpus": train.corpus,
                "peers_trained_on": len(train.items),
                "overlap_with_training": sum(k in train.keys for _, k in stream.items),
            }
        if args.start == "trained":
            report["start_detail"]["nnspam_model"] = self.nnspam_spec(stream.kind)
        ok = True
        runs: dict[str, Run] = {}
        got = self.each(lambda n: self.run_filter(n, stream, train), self.usable)
        for name in args.filters:
            if name in self.why_not:
                report["filters"][name] = {"skipped": self.why_not[name]}
                continue
            run = got[name]
            if isinstance(run, Exception):
                say(f"   {name}: FAILED: {run}", err=True)
                report["filters"][name] = {"skipped": f"failed: {run}"}
                ok = False
                continue
            runs[name] = run
            r = result(labels, run)
            if train is not None and name in train.dbs:
                r["train_s"] = train.dbs[name]["train_s"]
                r["train_peak_mb"] = train.dbs[name]["train_peak_mb"]
            report["filters"][name] = r
            say(f"   {name:12s} ham lost {r['ham_lost']:5d} ({r['ham_lost_pct']:6.2f}%)  "
                f"spam missed {r['spam_missed']:5d} ({r['spam_missed_pct']:6.2f}%)  "
                f"1-ROCA {_roca(r):>8s}  at 0.05%/0.1% ham {_at_ham_loss(r).replace(' | ', '/')}"
                f"  corrections {r['corrections']:5d}  "
                f"{_rate(r)} msg/s  ({r['version']})")
        return report, runs, ok


def write_reports(out_dir: Path, report: dict[str, Any], labels: Sequence[str],
                  runs: dict[str, Run], plot_too: bool) -> None:
    """``stream-<name>-<feedback>-<start>.json``, ``.md`` and ``.png``."""
    stem = out_dir / f"stream-{report['stream']}-{report['feedback']}-{report['start']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report, stem.with_suffix(".json").name)
    stem.with_suffix(".md").write_text(md)
    say(md)
    if runs and plot_too:
        plot(stem.with_suffix(".png"), report, labels, runs)


def write_summary(out_dir: Path, args: argparse.Namespace, command: str,
                  reports: Sequence[dict[str, Any]]) -> None:
    """``stream-summary-<feedback>-<start>.json`` and ``.md``: every stream of the run
    (the JSON without the per-message error positions)."""
    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in ("ham_lost_at", "spam_missed_at")}

    streams = [{**{k: v for k, v in rep.items() if k != "filters"},
                "filters": {n: brief(r) for n, r in rep["filters"].items()}}
               for rep in reports]
    stem = out_dir / f"stream-summary-{args.feedback}-{args.start}"
    summary = {"feedback": args.feedback, "start": args.start, "command": command,
               "machine": machine(), "streams": streams}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary_markdown(reports, stem.with_suffix(".json").name)
    stem.with_suffix(".md").write_text(md)
    say(f"== all streams, feedback {args.feedback}, start {args.start}\n{md}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every filter on every stream; write the reports; 1 if a filter failed."""
    args = parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench/stream.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    sources = [("index", i) for i in args.index] + ([("sms", args.sms)] if args.sms else [])
    reports: list[dict[str, Any]] = []
    status = 0
    pool = ThreadPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else None
    try:
        with tempfile.TemporaryDirectory(prefix="nnspam-stream-") as tmp:
            work = Path(tmp)
            bench = Bench(args, work, pool)
            for what, source in sources:
                if what == "sms":
                    stream = load_sms_stream(source, args.limit, work)
                else:
                    stream = load_index_stream(source, args.corpus, args.limit, work,
                                               args.header_break)
                hints = [Path(source).resolve().parent.parent]
                report, runs, ok = bench.run_stream(stream, hints, command)
                status |= 0 if ok else 1
                write_reports(out_dir, report, stream.labels, runs, not args.no_plot)
                reports.append(report)
                shutil.rmtree(work / "db" / stream.name, ignore_errors=True)
                shutil.rmtree(work / "messages" / stream.name, ignore_errors=True)
    finally:
        if pool is not None:
            pool.shutdown()
    write_summary(out_dir, args, command, reports)
    return status


if __name__ == "__main__":
    sys.exit(main())
