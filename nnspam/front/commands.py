"""The commands of ``nnspam``: one ``cmd_NAME(args) -> exit status`` per subcommand.

Each command reads its arguments (parsed by :mod:`nnspam.front.cli`), calls the
layers below (corpus, training, model, services) and formats the result. Exit
codes: 0 success, 1 a run that went wrong in an ordinary way (e.g. nothing to
classify), 2 bad usage or an unusable model, config or input (:class:`UsageError`
and the errors :func:`nnspam.front.cli.main` maps: a one-line message, never a
traceback), 74 (EX_IOERR) a model ``nnspam learn`` could not save. Whatever costs
(NumPy, the model, Flask) is imported inside the command that needs it, so ``nnspam
--help`` and the pipe filter load none of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnspam.mail.corpus import Sample
    from nnspam.model.core import Model


class UsageError(Exception):
    """Bad combination of arguments; reported in one line, exit 2."""


def die(msg: str, code: int = 2) -> int:
    print(f"nnspam: {msg}", file=sys.stderr)
    return code


# -- helpers -------------------------------------------------------------------

def _config(args: argparse.Namespace) -> dict[str, Any]:
    from nnspam.config import load_config

    return load_config(getattr(args, "config", None))


def _load_model(args: argparse.Namespace, cfg: dict[str, Any], sms_default: bool = False):
    from nnspam.model.core import Model

    name = args.model
    if name is None:
        name = cfg["sms"]["model"] if sms_default else cfg["model"]
    return Model.load(name)


def _bias(args: argparse.Namespace, cfg: dict[str, Any]) -> tuple[float, float, float]:
    h, s, t, _ = _point(args, cfg)
    return h, s, t


def _lists(cfg: dict[str, Any]) -> Any:
    """The config's allow/deny lists of senders (verdict.SenderLists), checked."""
    from nnspam.services.verdict import SenderLists

    try:
        return SenderLists.from_config(cfg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _point(args: argparse.Namespace, cfg: dict[str, Any]
           ) -> tuple[float, float, float, tuple[float, float] | None]:
    """The operating point of a command: (ham factor, spam factor, threshold, unsure
    band), the config's with the command line's --ham-factor/--spam-factor/--threshold
    over it, checked as every front checks it (:func:`nnspam.services.scoring.settings`)."""
    from nnspam.services.scoring import settings

    h = args.ham_factor if getattr(args, "ham_factor", None) is not None else cfg["ham_factor"]
    s = args.spam_factor if getattr(args, "spam_factor", None) is not None else cfg["spam_factor"]
    t = args.threshold if getattr(args, "threshold", None) is not None else cfg["threshold"]
    if h < 0 or s < 0 or h + s <= 0:
        raise UsageError("ham and spam factors must be >= 0 and not both 0")
    try:
        f = settings({**cfg, "ham_factor": h, "spam_factor": s, "threshold": t}, None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f.ham_factor, f.spam_factor, f.threshold, f.unsure


def _labelled_samples(args: argparse.Namespace, part: str | None):
    """Samples from --split/--corpus or --sms [--split], or None if neither given."""
    from nnspam.mail.corpus import load_split_samples, read_sms

    if args.sms:
        if args.split:
            return load_split_samples(args.split, part=part, sms_file=args.sms)
        return read_sms(args.sms)
    if args.split:
        if not args.corpus:
            raise UsageError("--split needs --corpus ROOT (or --sms FILE)")
        return load_split_samples(args.split, args.corpus, part=part)
    if args.corpus:
        raise UsageError("--corpus needs --split FILE")
    return None


def _find_shared_corpora() -> tuple[str, str] | None:
    """The SpamAssassin split of the shared development corpora, if present:
    $NNSPAM_CORPORA, else ../shared/corpora from here or from the source tree."""
    import os
    from pathlib import Path

    candidates = []
    if os.environ.get("NNSPAM_CORPORA"):
        candidates.append(Path(os.environ["NNSPAM_CORPORA"]))
    candidates.append(Path.cwd().parent / "shared" / "corpora")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "corpora")
    for c in candidates:
        split, tar = c / "splits" / "spamassassin.tsv", c / "spamassassin.tar.xz"
        if split.is_file() and tar.is_file():
            return str(split), str(tar)
    return None


def _progress_printer(enabled: bool):
    if not enabled:
        return None
    start = time.perf_counter()

    def show(epoch: int, loss: float, val_loss: float, val_err: float) -> None:
        print(f"epoch {epoch:3d}  loss {loss:.4f}  val loss {val_loss:.4f}  "
              f"val error {val_err * 100:5.2f}%  {time.perf_counter() - start:6.1f}s",
              file=sys.stderr, flush=True)
    return show


# -- commands ------------------------------------------------------------------

#: ``nnspam train`` options that replace one training setting: option -> (section, key).
TRAIN_OVERRIDES = {"size": ("wordlist", "size"), "method": ("wordlist", "method"),
                   "scaling": ("features", "scaling"), "hidden": ("network", "hidden"),
                   "epochs": ("network", "max_epochs"), "seed": ("network", "seed")}


def cmd_train(args: argparse.Namespace) -> int:
    from nnspam.learning.wordlist import read_wordlist
    from nnspam.mail.corpus import iter_messages
    from nnspam.services.runs.training import Recipe, train_model

    if args.dask:  # a bad --dask value is told before the corpus is read
        from nnspam.services.runs.distributed import DistributedError, parse_address

        try:
            parse_address(args.dask)
        except DistributedError as exc:
            raise UsageError(str(exc)) from None
    from nnspam.front.progress import counted, shown

    cfg = _config(args)
    h, s, t = _bias(args, cfg)
    show = shown(args.progress)
    stream = None
    if args.dask and args.split and args.corpus and not args.sms:
        # on a cluster, the archive is read a shard at a time and each shard sent on as it
        # is read (nnspam.services.runs.distributed); here only the names and labels are held
        from nnspam.mail.corpus import Sample, iter_split_samples, read_split

        samples = [Sample(p, b"", label) for p, label, _ in read_split(args.split, "train")]
        stream = iter_split_samples(args.split, args.corpus)
    else:
        if show and (args.split or args.sms):
            print(f"nnspam: reading the train part of {args.split or args.sms}...",
                  file=sys.stderr, flush=True)
        samples = _labelled_samples(args, "train")
    if samples is None:
        if not args.ham or not args.spam:
            raise UsageError("give --ham PATH... and --spam PATH..., or --split/--corpus, "
                             "or --sms FILE")
        samples = (list(counted(iter_messages(args.ham, "ham"), "reading ham", show))
                   + list(counted(iter_messages(args.spam, "spam"), "reading spam", show)))
    elif args.ham or args.spam:
        raise UsageError("--ham/--spam cannot be combined with --split or --sms")
    kind = args.kind or ("sms" if args.sms else "email")
    if args.sms and kind != "sms":
        raise UsageError("--sms trains an SMS model; --kind email does not apply")
    # the command line's options over the config's training settings (Recipe.from_config)
    overrides: dict[str, Any] = {"ham_factor": h, "spam_factor": s, "threshold": t}
    for option, (section, key) in TRAIN_OVERRIDES.items():
        if getattr(args, option) is not None:
            overrides.setdefault(section, {})[key] = getattr(args, option)
    if args.members is not None:
        if args.members < 1:
            raise UsageError(f"--members must be at least 1, not {args.members}")
        overrides.setdefault("network", {})["members"] = args.members
    if args.backend == "keras":
        from nnspam.learning.keras_backend import available

        if not available():
            raise UsageError("--backend keras needs TensorFlow and Keras 3: "
                             "pip install 'nnspam[keras]'")
    if args.arch == "sms-embedding" and args.balance != "none":
        raise UsageError("--balance dbb needs feature vectors: not with --arch sms-embedding")
    wordlist = read_wordlist(args.wordlist) if args.wordlist else None
    try:
        recipe = Recipe.from_config(cfg, kind, faithful=args.faithful, overrides=overrides,
                                    arch=args.arch, backend=args.backend,
                                    balance=args.balance, wordlist=wordlist)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    n_spam = sum(1 for x in samples if x.label == "spam")
    print(f"nnspam: training a {kind} model on {len(samples) - n_spam} ham and {n_spam} spam"
          + (" (tokenizing first)" if show else ""), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    provenance = {"command": "nnspam " + " ".join(sys.argv[1:]) if sys.argv else ""}
    progress = _progress_printer(show)
    if args.dask:
        # the expensive parts on a Dask cluster (nnspam.services.runs.distributed); same model
        from nnspam.services.runs.distributed import cluster, train_on_cluster

        try:
            with cluster(args.dask) as client:
                model = train_on_cluster(
                    client, samples if stream is None else stream, recipe,
                    order=None if stream is None else [x.name for x in samples],
                    progress=progress, provenance=provenance)
        except DistributedError as exc:
            raise UsageError(str(exc)) from None
    else:
        model = train_model(samples, recipe, progress=progress, provenance=provenance)
    from nnspam.model.writer import replace_model

    replace_model(model, args.model)  # under the model writers' lock (nnspam.model.writer)
    print(f"nnspam: wrote {args.model} ({len(model.words)} inputs, {_epochs_of(model.summary)}, "
          f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return 0


def _classify_stream(model, samples, h: float, s: float, t: float, chunk: int = 4000,
                     unsure: tuple[float, float] | None = None, lists: Any = None):
    """Yield (sample, spamicity, verdict) over an iterable of samples, scored and judged
    by the one routine of every front (:func:`nnspam.services.verdict.score_tokens`, the
    unsure band included), chunked so that memory stays bounded on big maildirs."""
    from nnspam.services.runs.training import tokenize_samples
    from nnspam.services.verdict import score_tokens

    buf: list[Sample] = []

    def flush():
        toks = tokenize_samples([x.payload for x in buf], model.kind, model.max_part_bytes,
                                for_model=True)
        judged = score_tokens(model, toks, t, h, s, unsure, lists)
        return [(x, sp, v) for x, (sp, v) in zip(buf, judged, strict=True)]

    for sample in samples:
        buf.append(sample)
        if len(buf) >= chunk:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def cmd_classify(args: argparse.Namespace) -> int:
    from nnspam.mail.corpus import iter_messages

    cfg = _config(args)
    h, s, t, band = _point(args, cfg)
    samples = _labelled_samples(args, "test")
    if samples is None:
        if not args.paths:
            raise UsageError("give PATH... to classify, or --split/--corpus, or --sms FILE")
        samples = iter_messages(args.paths)
    elif args.paths:
        raise UsageError("PATH arguments cannot be combined with --split or --sms")
    model = _load_model(args, cfg, sms_default=bool(args.sms))
    out = sys.stdout
    n = 0
    from nnspam.front.progress import counted, shown

    for sample, sp, verdict in counted(_classify_stream(model, samples, h, s, t, unsure=band,
                                                        lists=_lists(cfg)),
                                       "classifying", shown(args.progress),
                                       len(samples) if isinstance(samples, list) else None):
        if args.format == "tsv":
            out.write(f"{sample.name}\t{sp:.6f}\t{verdict}\n")
        else:
            out.write(f"{verdict.upper():6s}  {sp:.6f}  {sample.name}\n")
        n += 1
    out.flush()
    if n == 0:
        return die("no messages found", 1)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain the verdict of each message (:func:`nnspam.model.explain.explain`) at the
    filter's settings (ham bias, threshold, unsure band), so it explains what nnspam
    filter decided; the output is :mod:`nnspam.services.explanation`'s."""
    from nnspam.mail.corpus import iter_messages
    from nnspam.model.core import Model
    from nnspam.model.explain import explain
    from nnspam.services.explanation import explain_json, explain_text
    from nnspam.services.scoring import settings
    from nnspam.services.verdict import verdict

    if args.words < 1:
        raise UsageError(f"--words must be at least 1, not {args.words}")
    try:
        s = settings(_config(args), args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model = Model.load(s.model)
    n = 0
    for sample in iter_messages(args.messages):
        got = explain(model, model.tokens(sample.payload), s.ham_factor, s.spam_factor)
        v = verdict(got.spamicity, s.threshold, s.unsure)
        if args.json:
            print(json.dumps(explain_json(sample.name, got, s.threshold, v, args.words),
                             ensure_ascii=False), flush=True)
        else:
            print(explain_text(sample.name, got, s.threshold, v, args.words), flush=True)
        n += 1
    if n == 0:
        return die("no messages found", 1)
    return 0


def _training_lines(summary: dict[str, Any]) -> list[str]:
    """A model's training summary as lines to read (``inspect --json`` gives it whole)."""
    out = []
    if summary.get("trained_at"):
        out.append(f"trained {summary['trained_at']} by nnspam "
                   f"{summary.get('nnspam_version', '?')}")
    msgs = summary.get("messages") or {}
    if msgs:
        out.append(f"on {msgs.get('ham', 0)} ham and {msgs.get('spam', 0)} spam messages")
    wl = summary.get("wordlist") or {}
    if wl:
        out.append(f"word list: {wl.get('size')} words by {wl.get('method')}"
                   + (f", in at least {wl['min_df']} messages" if wl.get("min_df") else ""))
    if summary.get("epochs") is not None:
        members = summary.get("members") or [summary]
        best = ", ".join(str(m.get("best_epoch")) for m in members)
        errs = [((m.get("final_validation") or {}).get("val_error")) for m in members]
        known = [e for e in errs if e is not None]
        out.append(f"{_epochs_of(summary)}; best epoch{'s' * (len(members) > 1)} {best}"
                   + ("; validation error " + ", ".join(f"{100 * e:.2f}%" for e in known)
                      if len(known) == len(errs) else ""))
    secs = summary.get("seconds") or {}
    if secs:
        out.append("seconds: " + ", ".join(f"{k} {v:g}" for k, v in secs.items()))
    learned = summary.get("learned") or {}
    out.append(f"learned since: {int(summary.get('learned_messages', 0))} messages "
               f"({int(learned.get('spam', 0))} spam, {int(learned.get('ham', 0))} ham)")
    prov = summary.get("provenance") or {}
    if isinstance(prov, dict) and prov:
        out.append("from: " + "; ".join(str(prov[k]) for k in ("trained_on", "command")
                                         if k in prov) + " (inspect --json: all of it)")
    for k, v in summary.items():  # anything else, as it is
        if k not in ("trained_at", "nnspam_version", "messages", "wordlist", "epochs",
                     "best_epoch", "final_validation", "refit", "members", "seconds",
                     "learned_messages", "learned", "provenance"):
            out.append(f"{k}: {json.dumps(v, ensure_ascii=False)}")
    return out


def _epochs_of(summary: dict[str, Any]) -> str:
    """The epochs a training ran, every member's when several networks were trained and
    merged (the first member's alone read as the run's: "10 epochs" where the others ran
    32 and 33)."""
    members = summary.get("members") or []
    if len(members) > 1:
        return (f"{len(members)} networks of "
                + ", ".join(str(m.get("epochs")) for m in members) + " epochs")
    return f"{summary.get('epochs')} epochs"


def cmd_test(args: argparse.Namespace) -> int:
    import numpy as np

    from nnspam.mail.corpus import iter_messages
    from nnspam.services.runs.evaluate import evaluate, format_table, plot
    from nnspam.services.runs.training import labels_of

    if args.plot:  # before minutes of scoring, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'nnspam[plot]'") from None
    cfg = _config(args)
    h, s, t, band = _point(args, cfg)
    samples = _labelled_samples(args, "test")
    if samples is None and not args.ham and not args.spam:
        found = _find_shared_corpora()
        if found is None:
            raise UsageError("give --ham PATH and --spam PATH (e.g. --ham ~/Maildir --spam "
                             "~/Maildir/.Junk), or --split/--corpus, or --sms FILE --split FILE")
        args.split, args.corpus = found
        print(f"nnspam: testing on the test part of {args.split}", file=sys.stderr)
        samples = _labelled_samples(args, "test")
    if samples is None:
        if not args.ham or not args.spam:
            raise UsageError("give both --ham PATH and --spam PATH")
        samples = list(iter_messages(args.ham, "ham")) + list(iter_messages(args.spam, "spam"))
    model = _load_model(args, cfg, sms_default=bool(args.sms))
    t0 = time.perf_counter()
    from nnspam.front.progress import counted, shown

    scored = list(counted(_classify_stream(model, samples, h, s, t, unsure=band), "testing",
                          shown(args.progress), len(samples)))
    elapsed = time.perf_counter() - t0
    y = labels_of([x for x, _, _ in scored])
    sp = np.array([v for _, v, _ in scored])
    ev = evaluate(y, sp, t, h, s, band)
    print(f"Model: {args.model or cfg['model']}  ({model.kind}, {len(model.words)} inputs)")
    print(f"Messages: {len(y)}  ({elapsed:.2f}s, {len(y) / max(elapsed, 1e-9):.0f} messages/s)")
    print()
    print(format_table(ev))
    if args.errors:
        print()
        for (x, v, verdict), lab in zip(scored, y, strict=True):
            if verdict == "unsure":
                print(f"{'unsure (' + ('ham' if lab == 0 else 'spam') + ')':17s} {v:.6f}  "
                      f"{x.name}")
            elif (verdict == "spam") != (lab == 1):
                kind = "FP (ham lost)" if lab == 0 else "FN (spam missed)"
                print(f"{kind:17s} {v:.6f}  {x.name}")
    if args.json:
        from pathlib import Path

        from nnspam.mail.atomic import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(ev.to_dict(), indent=1) + "\n")
    if args.plot:
        plot(args.plot, y, sp, t, title=f"nnspam {args.model or cfg['model']}")
        print(f"\nnnspam: wrote {args.plot}", file=sys.stderr)
    return 0


def _print_journal(model: Model, n: int) -> None:
    """The latest ``n`` corrections of the model's journal, newest first."""
    journal = model.journal
    print(f"Correction journal: {len(journal)} of at most {journal.limit} kept; latest "
          f"{min(n, len(journal))}, newest first (time, source, class, key, subject):")
    for e in journal.recent(n):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
        extra = (f" ({e.replacements} input replacement{'s' * (e.replacements != 1)})"
                 if e.replacements else "")
        print(f"  {when}  {e.source or '-':9s} {e.label:4s}  {e.key[:12]}  "
              f"{e.subject or '(no subject)'}{extra}")


def cmd_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    cfg = _config(args)
    model = _load_model(args, cfg)
    if args.journal is not None:
        _print_journal(model, args.journal)
        return 0
    net = model.network
    ncfg = net.get_config()
    print(f"Model:       {args.model or cfg['model']}")
    print(f"Kind:        {model.kind}")
    print(f"Arch:        {getattr(model, 'arch', 'nnspam')}, trained with "
          f"{getattr(model, 'backend', 'numpy')} "
          f"{' '.join(f'{k} {v}' for k, v in (getattr(model, 'libraries', {}) or {}).items())}")
    if hasattr(net, "layers"):
        print(f"Layers:      {ncfg.get('layers')}, dropout {ncfg.get('dropout')}, "
              f"embedding {ncfg.get('embedding')}, length {ncfg.get('length')}")
    members = (model.summary or {}).get("members") or []
    merged = (f", {len(members)} merged members of {net.hidden_size // len(members)}"
              if len(members) > 1 else "")
    print(f"Network:     {len(model.words)} inputs -> {net.hidden_size} hidden "
          f"({ncfg.get('hidden_activation', 'relu')}{merged}) -> 2 outputs "
          f"({ncfg.get('output')})")
    print(f"Features:    {model.scaling} scaling of word counts")
    print(f"Ham bias:    h={model.ham_factor:g} s={model.spam_factor:g} "
          f"threshold={model.threshold:g}")
    if getattr(args, "json", False):
        print("Training (model.json's summary):")
        for line in json.dumps(model.summary, indent=2).splitlines()[1:-1]:
            print("  " + line)
    else:
        print("Training:")
        for line in _training_lines(model.summary):
            print("  " + line)
    shown = model.words if args.all else model.words[:args.words]
    print(f"Input words ({len(model.words)}; first {len(shown)}):")
    counts = model.wordlist_counts or [0] * len(model.words)
    for c, w in zip(counts, shown, strict=False):
        print(f"  {c}\t{w}")
    if model.grams is not None and model.grams.active:
        g = model.grams
        print(f"Grams part: {g.updates} messages learned, {int(np.count_nonzero(g.w))} of "
              f"2^{g.bits} slots taught (byte 4-grams of the head and tokens, AROW)")
    wide = model.wide
    if wide is not None:
        learned = model.summary.get("learned") or {}
        print(f"Wide path: {wide.updates} corrections taught it "
              f"({int(learned.get('spam', 0))} spam, {int(learned.get('ham', 0))} ham learned), "
              f"{wide.docs} messages counted, 2^{wide.bits} slots")
    st = model.adaptive
    if st is not None:
        recent = st.log[-10:]
        print(f"Adaptive inputs: policy {st.settings['policy']}, "
              f"{'enabled' if st.settings['enabled'] else 'disabled'}, "
              f"{st.step} messages seen, {st.replacements} replacements, "
              f"{len(st.candidates)} candidates; latest {len(recent)}:")
        for r in reversed(recent):
            print(f"  {r.get('time', '?')}  input {r.get('index')}: {r.get('old')} -> "
                  f"{r.get('new')} (activity {r.get('old_activity')}, "
                  f"score {r.get('new_score')})")
    return 0


def _rule(cfg: dict[str, Any], untrained: bool = False):
    """The correction rule of the config's ``learn:`` section (a bad value: UsageError)."""
    from nnspam.model.correct import CorrectionError, rule_from_config

    try:
        return rule_from_config(cfg, untrained=untrained)
    except CorrectionError as exc:
        raise UsageError(str(exc)) from None


def _cannot_save(path: Any, exc: OSError) -> int:
    """``nnspam learn``'s one line when the model could not be written (a full disk, no
    write permission, its lock file not creatable): exit 74 (EX_IOERR, as the server's
    TELL answers then). The model on disk is the one before (the save is atomic, and a
    failed save removes its temporary directory)."""
    import os

    return die(f"cannot save the model {path}: {exc.strerror or exc}", os.EX_IOERR)


def cmd_learn(args: argparse.Namespace) -> int:
    """Learn messages of one class into a model directory, through the one model
    writer (:mod:`nnspam.model.writer`): under the directory's lock, on top of its
    latest save, so a daemon or server learning into the same model at the same
    time keeps its corrections and ours."""
    from nnspam.mail.corpus import iter_messages
    from nnspam.model.adaptive import configure
    from nnspam.model.core import is_shipped
    from nnspam.model.writer import ModelWriter

    cfg = _config(args)
    rule = _rule(cfg)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        rule = rule.with_(passes=args.epochs, max_passes=max(args.epochs, rule.max_passes))
    if cfg.get("store"):  # a fleet's models (config store:): through its stream, one learner
        from nnspam.services.models.fleet_admin import learn_command

        samples = list(iter_messages(args.paths))
        if not samples:
            return die("no messages found", 1)
        return learn_command(cfg, [x.name for x in samples], [x.payload for x in samples],
                             "forget" if args.forget else "spam" if args.spam else "ham",
                             rule, args.user)
    if args.user:
        raise UsageError("--user needs a model store (config store:)")
    target = args.model or cfg["model"]
    if is_shipped(target):
        raise UsageError("the shipped default model is read-only: train your own with "
                         "'nnspam train ... -m DIR' or give -m DIR")
    samples = list(iter_messages(args.paths))
    if not samples:
        return die("no messages found", 1)
    payloads = [x.payload for x in samples]
    # the config's adaptive settings, as the daemon uses, also on a model re-read from disk
    writer = ModelWriter.open(target, prepare=lambda m: configure(m, cfg["adaptive"]))
    if args.forget:
        # one forget for the batch: the later lessons are learned again once, not per message
        try:
            found = writer.forget([writer.model.tokens(p) for p in payloads], rule)
        except OSError as exc:
            return _cannot_save(writer.path, exc)
        missing = [x.name for x, e in zip(samples, found, strict=True) if e is None]
        done = len(found) - len(missing)
        for name in missing:
            print(f"nnspam: {name}: not in the correction journal (never learned, or "
                  f"before the last {writer.model.journal.limit} corrections)", file=sys.stderr)
        print(f"nnspam: forgot {done} of {len(found)} message(s) in {target}", file=sys.stderr)
        return 0 if not missing else 1
    label = "spam" if args.spam else "ham"
    try:
        statuses: list[str] = []
        with writer.locked():  # one lock for the batch: re-read if another writer saved
            for p in payloads:  # one correction each, as the daemon learns one move at a time
                writer.learn_payloads([p], label, rule, save=False, source="learn")
                statuses += writer.statuses
            if writer.pending:
                writer.save()
    except OSError as exc:
        return _cannot_save(writer.path, exc)
    new = statuses.count("learned") + statuses.count("replaced")
    notes = [f"{statuses.count('replaced')} of them learned before as the other class "
             "(that lesson replaced)"] if "replaced" in statuses else []
    notes += [f"{statuses.count('already')} already learned as {label} (left as they were)"
              ] if "already" in statuses else []
    print(f"nnspam: learned {new} {label} message(s) into {target}"
          + (f"; {'; '.join(notes)}" if notes else ""), file=sys.stderr)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    """``nnspam store list|push|pull`` (:mod:`nnspam.services.models.fleet_admin`)."""
    from nnspam.services.models import fleet_admin

    cfg = _config(args)
    if not cfg.get("store"):
        raise UsageError("nnspam store needs a model store: set store: redis://HOST:PORT/DB "
                         "in the config")
    if args.store_cmd == "list":
        return fleet_admin.list_models(cfg, sys.stdout)
    if args.store_cmd == "pull":
        return fleet_admin.pull(cfg, args.user, args.dir)
    if args.user:
        return fleet_admin.push_user(cfg, args.user, args.dir)
    if not args.dir:
        raise UsageError("nnspam store push needs a model directory (or --user NAME)")
    return fleet_admin.push_site(cfg, args.dir, args.wait)


def cmd_stream(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from nnspam.services.runs.evaluate import HAM_LOSS_POINTS
    from nnspam.services.runs.stream import (
        StreamError,
        ham_loss_key,
        load_messages,
        read_index,
        replay,
        start_model,
        summarize,
    )

    cfg = _config(args)
    # an untrained network learns by the online learner's steps (correct.rule_from_config)
    rule = _rule(cfg, untrained=args.untrained)
    if args.untrained and args.model:
        raise UsageError("give -m MODEL or --untrained, not both")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    try:
        items = read_index(args.index)
        if args.limit:
            items = items[: args.limit]
        corpus = args.corpus or str(Path(args.index).resolve().parent)
        read = load_messages([p for _, p in items], corpus)
    except StreamError as exc:
        return die(str(exc))
    model = start_model(None if args.untrained else (args.model or cfg["model"]), cfg,
                        args.kind)
    out = open(args.out, "w", encoding="utf-8") if args.out and args.out != "-" else sys.stdout
    steps = []
    show = sys.stderr.isatty() if args.progress is None else args.progress
    t0 = time.perf_counter()
    try:
        tokenizers = args.tokenizers
        if tokenizers is None:
            tokenizers = 1 if (os.cpu_count() or 1) > 1 and len(items) > 512 else 0
        if tokenizers < 0:
            raise UsageError("--tokenizers must be 0 or more")
        if tokenizers:
            # one message at a time, like the daemon and the server: a second BLAS thread
            # only fought the tokenizing process for the cores (TREC 20,000 full feedback:
            # 392 msg/s with OpenBLAS's default threads, 502 with one)
            from nnspam.services.blas import one_blas_thread

            one_blas_thread()
        for i, st in enumerate(replay(model, items, read, args.feedback, rule,
                                      tokenizers=tokenizers), 1):
            steps.append(st)
            # SCORE, the logit, in full (repr): no two different scores print alike, so
            # the lines rank as the replay did (SPAMICITY ties at 0.000000 and 1.000000)
            out.write(f"{st.path}\t{st.judge}\t{st.spamicity:.6f}\t{st.verdict}\t"
                      f"{st.score!r}\n")
            if show and i % 500 == 0:
                r = summarize(steps)
                roca = r.get("one_minus_roca_percent")
                print(f"nnspam stream: {i}/{len(items)}  "
                      f"{i / max(time.perf_counter() - t0, 1e-9):.0f} msg/s  "
                      f"ham lost {r['ham_lost']}  spam missed {r['spam_missed']}  "
                      + (f"1-ROCA {roca:.4f}%  " if roca is not None else "")
                      + f"learned {r['learned']}", file=sys.stderr)
    except StreamError as exc:
        return die(str(exc))
    finally:
        if out is not sys.stdout:
            out.close()
    secs = time.perf_counter() - t0
    r = summarize(steps)
    print(f"# {r['messages']} messages ({r['ham']} ham, {r['spam']} spam), feedback "
          f"{args.feedback}: ham lost {r['ham_lost']} ({r['ham_lost_percent']:.2f}%), spam "
          f"missed {r['spam_missed']} ({r['spam_missed_percent']:.2f}%), 1-ROCA "
          f"{r['one_minus_roca_percent']:.4f}%, learned {r['learned']}, "
          f"{len(steps) / max(secs, 1e-9):.0f} msg/s", file=sys.stderr)
    print("# spam missed at the threshold that loses at most "
          + ", ".join(f"{100 * f:g}% of ham: {r[ham_loss_key(f)]:.2f}%"
                      for f in HAM_LOSS_POINTS), file=sys.stderr)
    if args.save:
        if os.path.abspath(args.save) == os.path.abspath(str(args.model or "")):
            raise UsageError("--save must name a new directory, not the start model")
        from nnspam.model.writer import replace_model

        replace_model(model, args.save)  # under the model writers' lock (nnspam.model.writer)
        print(f"nnspam: saved the learned model to {args.save}", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """``nnspam init MAILDIR -m DIR``: the first day (nnspam/services/runs/first_day.py)."""
    import os
    from pathlib import Path

    from nnspam.model.writer import replace_model
    from nnspam.services.runs.first_day import FirstDayError, learn_mailbox, mailbox_items

    cfg = _config(args)
    dest = Path(args.model).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: exists; give a new model directory")
    try:
        items, counts = mailbox_items(args.maildir, args.junk or cfg["daemon"]["junk"],
                                      args.skip)
    except FirstDayError as exc:
        return die(str(exc), 1 if "to learn from" in str(exc) else 2)
    spam = sum(label == "spam" for label, _ in items)
    print(f"nnspam: learning {len(items)} messages ({len(items) - spam} ham, {spam} spam) "
          f"from {', '.join(f'{k} {v}' for k, v in counts.items())}", file=sys.stderr)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    tokenizers = args.tokenizers
    if tokenizers is None:
        tokenizers = 1 if (os.cpu_count() or 1) > 1 and len(items) > 512 else 0

    def progress(done: int, total: int, rate: float) -> None:
        if show:
            print(f"nnspam init: {done}/{total}  {rate:.0f} msg/s", file=sys.stderr)

    model = learn_mailbox(items, cfg, tokenizers=tokenizers, progress=progress)
    replace_model(model, dest)
    print(f"nnspam: wrote {dest}. Next: nnspam daemon -m {dest} (or model: {dest} in the "
          "config), with the unsure band on for the first weeks: filter.unsure [0.5, 0.99] "
          "and daemon.unsure_folder .Unsure", file=sys.stderr)
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """``nnspam model copy SRC DEST``: a model of one's own, from the shipped one or another."""
    from pathlib import Path

    from nnspam.model.core import Model, resolve_model_path

    dest = Path(args.dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: exists; give a new directory")
    model = Model.load(args.src)  # a ModelError names what is wrong with SRC
    model.journal  # noqa: B018 - read now: the copy keeps the lessons it can forget
    model._journal_file = None
    model.save(dest)
    print(f"nnspam: copied {args.src} ({resolve_model_path(args.src)}) to {dest}; learn into "
          f"it with -m {dest} (or model: {dest} in the config)", file=sys.stderr)
    return 0


def cmd_build_wordlist(args: argparse.Namespace) -> int:
    from nnspam.config import load_config
    from nnspam.learning.wordlist import build, write_wordlist
    from nnspam.mail.corpus import iter_messages
    from nnspam.services.runs.training import tokenize_samples

    cfg = load_config(args.config)
    method = args.method or ("freq" if not args.ham else cfg["wordlist"]["method"])
    if method != "freq" and not args.ham:
        raise UsageError(f"method {method!r} needs --ham PATH...")
    n = args.size or cfg["wordlist"]["size"]
    mpb = int(cfg["max_part_bytes"])
    spam = tokenize_samples([x.payload for x in iter_messages(args.spam_paths)], "email", mpb)
    ham = (tokenize_samples([x.payload for x in iter_messages(args.ham)], "email", mpb)
           if args.ham else None)
    if not spam:
        return die("no spam messages found", 1)
    entries = build(spam, ham, n, method, int(cfg["wordlist"]["min_df"]))
    comment = (f"nnspam word list: method={method} n={len(entries)} from {len(spam)} spam"
               + (f" and {len(ham)} ham" if ham else "") + " messages\ncount<TAB>word")
    write_wordlist(args.output, entries, comment)
    if args.output != "-":
        print(f"nnspam: wrote {len(entries)} words to {args.output}", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from nnspam.mail.corpus import convert_mbox

    n = convert_mbox(args.mbox, args.maildir)
    print(f"nnspam: wrote {n} messages to {args.maildir}", file=sys.stderr)
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    """Normally reached through the fast path in :func:`main`."""
    from nnspam.services.delivery.spamc import run

    return run(args)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the maildir daemon until SIGTERM (see nnspam/services/delivery/daemon.py)."""
    from nnspam.services import metrics
    from nnspam.services.delivery.daemon import (
        Daemon,
        DaemonError,
        settings_from_config,
        setup_logging,
    )

    setup_logging()
    cfg = _config(args)
    try:
        metrics_at = metrics.address(cfg, args.metrics)  # checked before anything starts
        settings = settings_from_config(cfg, args.maildir, args.model)
        return Daemon(settings, args.config, args.maildir, args.model, metrics_at).run()
    except (DaemonError, metrics.MetricsError) as exc:
        return die(str(exc))


def cmd_imap(args: argparse.Namespace) -> int:
    """Run nnspam imap until SIGTERM (see nnspam/services/delivery/imap.py)."""
    import signal
    import threading

    from nnspam.model.core import ModelError
    from nnspam.services.delivery.daemon import setup_logging
    from nnspam.services.delivery.imap import ImapError, run
    from nnspam.services.systemd import sd_notify

    setup_logging()
    cfg = _config(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = run(cfg, args.model, only=args.account or (), once=args.once, stop=stop,
                   ready=lambda: sd_notify("READY=1"))
    except (ImapError, ModelError) as exc:
        return die(str(exc))
    sd_notify("STOPPING=1")
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the SPAMC/SPAMD scoring server until SIGTERM (see nnspam/services/spamd/server.py)."""
    import logging

    from nnspam.services import metrics
    from nnspam.services.errors import ServerError
    from nnspam.services.models.serve_settings import serve_settings
    from nnspam.services.spamd.server import run_server
    from nnspam.services.systemd import log_format

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,  # pid: which worker
                        format=log_format("nnspam-serve[%(process)d]"))
    cfg = _config(args)
    try:
        metrics_at = metrics.address(cfg, args.metrics)  # checked before anything starts
        st = serve_settings(cfg, args.model, args.socket, args.listen, args.allow, args.workers,
                            args.allow_tell)
        return run_server(st, metrics_at)
    except (ServerError, metrics.MetricsError) as exc:
        return die(str(exc))


def _sms_logging() -> None:
    import logging

    from nnspam.services.systemd import log_format

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=log_format("nnspam-sms"))


def cmd_sms_serve(args: argparse.Namespace) -> int:
    """Serve the Twilio webhook (POST /sms) and the dashboard (nnspam.front.sms.webhook.serve:
    settings and address checked before anything is created)."""
    try:
        from nnspam.front.sms.webhook import StartupError, serve
    except ImportError as exc:
        return die(f"the sms extra is not installed ({exc.name}): pip install 'nnspam[sms]'")
    _sms_logging()
    cfg = _config(args)
    try:
        return serve(cfg, args.host, args.port, threads=args.threads, model=args.model)
    except StartupError as exc:
        return die(str(exc))


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard alone, without the Twilio webhook (nnspam.front.sms.webhook.serve
    with sms=False: password, address and email model checked before anything starts)."""
    import logging

    from nnspam.front.sms.webhook import StartupError, serve
    from nnspam.services.systemd import log_format

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=log_format("nnspam-dashboard"))
    cfg = _config(args)
    try:
        return serve(cfg, args.host, args.port, threads=args.threads, sms=False,
                     email_model=args.model)
    except StartupError as exc:
        return die(str(exc))


def cmd_sms_hash_password(args: argparse.Namespace) -> int:
    """Print a salted hash of a dashboard password for dashboard.password_hash
    (``nnspam hash-password``; ``nnspam sms hash-password`` is the same)."""
    try:
        from werkzeug.security import generate_password_hash
    except ImportError as exc:
        return die(f"the sms extra is not installed ({exc.name}): pip install 'nnspam[sms]'")
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass("Dashboard password: ")
        if getpass.getpass("Again: ") != password:
            return die("the passwords differ")
    if len(password) < 8:
        return die("the password is too short (8 characters at least)")
    print(generate_password_hash(password, method="scrypt"))
    return 0


def _sms_store(args: argparse.Namespace, cfg: dict[str, Any]):
    from nnspam.front.sms.store import open_store

    return open_store(cfg, model=args.model)


def cmd_sms_poll(args: argparse.Namespace) -> int:
    """Poll Twilio for inbound SMS (until SIGTERM, or --once)."""
    try:
        from nnspam.front.sms.env import twilio_secret
        from nnspam.front.sms.poller import Poller, make_client, parse_since
    except ImportError as exc:
        return die(f"the sms extra is not installed ({exc.name}): pip install 'nnspam[sms]'")
    import signal

    _sms_logging()
    cfg = _config(args)
    s = cfg["sms"]
    to = args.to or s["to"]
    if not to:
        raise UsageError("no Twilio number to poll: give --to +NUMBER or set sms.to")
    sid = twilio_secret("TWILIO_ACCOUNT_SID", s["env_file"])
    token = twilio_secret("TWILIO_AUTH_TOKEN", s["env_file"])
    if not (sid and token):
        return die("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set in the environment "
                    f"or in {s['env_file']}")
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    store = _sms_store(args, cfg)
    poller = Poller(store, make_client(sid, token), to, s["cursor"], since=since,
                    interval=float(s["poll_interval"]))
    signal.signal(signal.SIGTERM, lambda *_: poller.stop())
    try:
        return poller.run(once=args.once)
    finally:
        store.close()
