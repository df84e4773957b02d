"""Explaining a verdict (nnspam/model/explain.py): each word's contribution is what the
message scores without it, on small models of every kind and on real mail with the
shipped model; ``nnspam explain``; the X-NNSpam-Words field of the filter; the
server's SYMBOLS and REPORT through the real ``spamc``."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnspam.config import ConfigError, load_config
from nnspam.front.cli import main as cli_main
from nnspam.learning.arch import MLP
from nnspam.learning.features import NGRAM_JOIN
from nnspam.learning.network import Network
from nnspam.model import adaptive
from nnspam.model.core import Model
from nnspam.model.explain import _wide_without, explain
from nnspam.services import explanation
from nnspam.services.delivery import pipefilter

from conftest import SA_SPLIT, Server, make_message, need, needs_corpora

WORDS = [f"w{i}" for i in range(16)]
# a message: repeated input words, words without an input, a sender (wide identity part)
TOKENS = ["w0", "w1", "w1", "w2", "w3", "w3", "w3", "w5", "w8", "w13", "other", "more",
          "from:addr:alice@example.org", "w8", "zzz"]


def _net(n: int, seed: int = 3) -> Network:
    """An untrained network with weights big enough that every word matters."""
    net = Network(n_inputs=n, n_hidden=12, seed=seed).initialize()
    p = net.get_weights()
    rng = np.random.default_rng(seed)
    p["W1"] = rng.normal(0, 1.5, p["W1"].shape).astype(np.float32)
    p["W2"] = rng.normal(0, 1.5, p["W2"].shape).astype(np.float32)
    net.set_weights(p)
    return net


def _model(scaling: str = "binary", **kw) -> Model:
    idf = (np.linspace(1, 3, len(WORDS)).astype(np.float32) if scaling == "tfidf" else None)
    return Model(words=list(WORDS), network=_net(len(WORDS)), scaling=scaling, idf=idf,
                 summary={"messages": {"spam": 500, "ham": 500}}, **kw)


def _without(toks: list[str], word: str) -> list[str]:
    return [t for t in toks if t != word]


def _assert_occlusion_is_removal(model: Model, toks: list[str], h=None, s=None,
                                 words: int | None = None) -> None:
    """Each word's contribution is the spamicity (and log-odds) of the message minus
    that of the message with every occurrence of the word removed."""
    e = explain(model, toks, h, s)
    sp, z = model.judge_tokens([toks], h, s)
    assert e.spamicity == sp[0] and e.logit == z[0]  # the verdict's own number
    assert e.words, "the message has input words"
    for w in e.words[:words]:
        sp2, z2 = model.judge_tokens([_without(toks, w.word)], h, s)
        assert w.delta == pytest.approx(sp[0] - sp2[0], abs=2e-6), w
        assert w.logit == pytest.approx(z[0] - z2[0], abs=1e-4, rel=1e-4), w
        assert w.count == toks.count(w.word)


# -- the contribution: occlusion --------------------------------------------------------

@pytest.mark.parametrize("scaling", ["binary", "count", "log", "lognorm", "tfidf"])
def test_contribution_is_the_message_without_the_word_for_every_scaling(scaling):
    model = _model(scaling)
    _assert_occlusion_is_removal(model, TOKENS)
    _assert_occlusion_is_removal(model, TOKENS, 0.5, 0.5)  # another ham bias
    e = explain(model, TOKENS)
    assert {w.word for w in e.words} == {t for t in TOKENS if t in WORDS}
    assert e.no_input == ("other", "more", "from:addr:alice@example.org", "zzz")


def test_words_are_sorted_by_absolute_contribution_then_log_odds():
    e = explain(_model("lognorm"), TOKENS)
    keys = [(abs(w.delta), abs(w.logit)) for w in e.words]
    assert keys == sorted(keys, reverse=True)
    assert e.top(3) == e.words[:3] and e.top(0) == ()
    assert any(w.delta > 0 for w in e.words) and any(w.delta < 0 for w in e.words)


def test_the_occlusion_product_shortcut_and_its_fallback():
    """Row i+1 = c_i * (row 0 without column i): the O(k * hidden) shortcut; any other
    matrix gets the plain product."""
    from nnspam.model.explain import _hidden

    rng = np.random.default_rng(0)
    s0 = rng.uniform(0.1, 1, 7).astype(np.float32)
    W = rng.normal(size=(7, 5)).astype(np.float32)
    S = np.vstack([s0] + [np.where(np.arange(7) == i, 0, s0) * (1 + i / 10)
                          for i in range(7)]).astype(np.float32)
    assert _hidden(S, W) == pytest.approx(S.astype(np.float64) @ W, rel=1e-5, abs=1e-6)
    S[3, 5] += 0.5  # breaks the rule: the plain product
    assert _hidden(S, W) == pytest.approx(S.astype(np.float64) @ W, rel=1e-5, abs=1e-6)
    one = np.array([[0.5], [0.0]], dtype=np.float32)
    assert _hidden(one, W[:1]) == pytest.approx(one @ W[:1])
    assert _hidden(np.zeros((1, 0), np.float32), W[:0]).shape == (1, 5)


def test_a_message_without_input_words_has_no_contributions():
    model = _model()
    e = explain(model, ["nothing", "here"])
    assert e.words == () and e.no_input == ("nothing", "here")
    assert e.spamicity == model.spamicity_of_tokens([["nothing", "here"]])[0]
    assert explain(model, []).words == ()


@pytest.mark.parametrize("arch", ["deep", "nnspam"])
def test_models_with_word_pairs(arch):
    """ngram 2: a word goes with the pairs it is in; a pair input goes alone."""
    words = WORDS[:10] + [f"w1{NGRAM_JOIN}w2", f"w3{NGRAM_JOIN}w3", f"w8{NGRAM_JOIN}w13"]
    if arch == "deep":
        net = MLP(n_inputs=len(words), layers=(8, 4), seed=2)
        net.set_weights({k: v * 3 for k, v in net.initial_weights().items()})
    else:
        net = _net(len(words))
    idf = np.linspace(1, 2, len(words)).astype(np.float32)
    model = Model(words=words, network=net, arch=arch, scaling="tfidf", ngram=2, idf=idf)
    toks = ["w1", "w2", "w3", "w3", "w8", "w13", "w0", "x"]
    e = explain(model, toks)
    sp = model.spamicity_of_tokens([toks])[0]
    for w in e.words:
        if NGRAM_JOIN in w.word:  # the pair's feature alone
            X = model.vectorizer.counts([toks])
            X[0, model.vectorizer.index[w.word]] = 0
            out = net.predict_proba(model.vectorizer.scale(X))
            want = model.judge_outputs(out, None, model.ham_factor, model.spam_factor)[0][0]
        else:
            want = model.spamicity_of_tokens([_without(toks, w.word)])[0]
        assert w.delta == pytest.approx(sp - want, abs=2e-6), w
    assert f"w3{NGRAM_JOIN}w3" in {w.word for w in e.words}


def test_sms_embedding_model_drops_the_word_from_the_sequence():
    net = MLP(n_inputs=len(WORDS), layers=(6,), embedding=3, length=5, output="sigmoid",
              seed=4)
    net.set_weights({k: v * 3 for k, v in net.initial_weights().items()})
    model = Model(words=list(WORDS), network=net, kind="sms", arch="sms-embedding",
                  scaling="index")
    _assert_occlusion_is_removal(model, ["w1", "w2", "w1", "x", "w7", "w9", "w4", "w5"])


def test_the_wide_path_is_scored_without_the_word_too():
    model = _model("binary")
    wide = model.ensure_wide()
    others = [["w1", "other", "from:addr:bob@example.net", f"t{i}"] for i in range(20)]
    wide.observe(others + [TOKENS])
    wide.step(TOKENS, 3.0)
    wide.step(others[0], -2.0)
    wide.step(["zzz", "w3", "from:addr:alice@example.org"], 1.5)
    # the fast sums equal Wide.logit of the shortened messages, with the digest part (the
    # slot of the message's set of tokens, which a correction of TOKENS taught) held at
    # the message's
    removed = sorted(set(TOKENS)) + ["absent"]
    got, digest = _wide_without(wide, TOKENS, removed)
    assert digest == pytest.approx(_digest_term(wide, TOKENS)) and abs(digest) > 1
    want = [wide.logit([TOKENS])[0]] + [wide.logit([_without(TOKENS, r)])[0]
                                        - _digest_term(wide, _without(TOKENS, r)) + digest
                                        for r in removed]
    assert got == pytest.approx(want, abs=1e-9)
    e = explain(model, TOKENS)
    assert e.wide_active and e.digest == digest
    sp, z = model.judge_tokens([TOKENS])
    assert (e.spamicity, e.logit) == (sp[0], z[0])
    for w in e.words:  # the shortened message's own digest swapped for the message's
        short = _without(TOKENS, w.word)
        out = model.outputs([short])
        wl = wide.logit([short]) - _digest_term(wide, short) + digest
        sp2, z2 = model.judge_outputs(out, wl, model.ham_factor, model.spam_factor)
        assert w.delta == pytest.approx(sp[0] - sp2[0], abs=2e-6)
        assert w.logit == pytest.approx(z[0] - z2[0], abs=1e-4)
    # without a correction of the message itself the digest is 0: plain removal
    other = ["w2", "w3", "w8", "other", "zzz", "w3"]
    assert explain(model, other).digest == 0.0
    _assert_occlusion_is_removal(model, other)
    weighed = {w.token: w for w in e.wide}
    assert {"zzz", "from:addr:alice@example.org"} <= set(weighed) <= set(e.no_input)
    import zlib

    slot = zlib.crc32(b"zzz") & wide.mask
    assert weighed["zzz"].weight == pytest.approx(float(wide.w[slot]))
    assert [abs(w.logit) for w in e.wide] == sorted((abs(w.logit) for w in e.wide),
                                                    reverse=True)


def _digest_term(wide, toks: list[str]) -> float:
    """The digest part of ``wide.logit([toks])``: one slot, its value the sign of its idf."""
    slot = int(wide._slots(toks)[2][0])
    u = np.log((wide.docs + 2.0) / (wide.df[slot] + 1.0))
    return float(wide.w[slot]) * float(np.sign(u))


def test_adaptive_replacements_of_the_message_words_are_reported():
    model = _model()
    st = adaptive.ensure_state(model)
    st.log = [{"index": 3, "old": "gone", "new": "w3", "time": "2024-01-01T00:00:00Z"},
              {"index": 4, "old": "other", "new": "w4"},
              {"index": 5, "old": "nope", "new": "w4"}]
    e = explain(model, TOKENS)
    assert [(r.index, r.old, r.new) for r in e.replacements] == [(3, "gone", "w3"),
                                                                  (4, "other", "w4")]
    assert e.replacements[0].time == "2024-01-01T00:00:00Z"
    assert explain(_model(), TOKENS).replacements == ()


# -- real mail, the shipped model -------------------------------------------------------

def _test_part(sa_corpus: Path, label: str, n: int) -> list[bytes]:
    rows = [r.split("\t") for r in SA_SPLIT.read_text().splitlines()[1:]]
    return [(sa_corpus / p).read_bytes() for p, lab, part in rows
            if part == "test" and lab == label][:n]


@needs_corpora
def test_contributions_on_real_mail_are_what_removing_the_word_does(shipped, sa_corpus):
    for raw in _test_part(sa_corpus, "spam", 12) + _test_part(sa_corpus, "ham", 12):
        _assert_occlusion_is_removal(shipped, shipped.tokens(raw), 0.9, 0.1, words=5)


@needs_corpora
def test_removing_the_top_spam_words_lowers_the_spamicity_by_about_their_claim(
        shipped, sa_corpus):
    """Taken out together, the three words that pushed a spam hardest lower its log-odds
    by the sum of their contributions to within 15% (the network is close to additive
    in log-odds over a few words), and its spamicity by at least the largest single
    claim (the sigmoid makes the joint drop bigger than the sum near 1)."""
    checked = 0
    for raw in _test_part(sa_corpus, "spam", 200):
        toks = shipped.tokens(raw)
        e = explain(shipped, toks)
        if not 0.05 < e.spamicity < 0.999:
            continue  # saturated: no word moves the spamicity itself
        top = [w for w in e.words if w.delta > 0][:3]
        gone = {w.word for w in top}
        sp2, z2 = shipped.judge_tokens([[t for t in toks if t not in gone]])
        claim = sum(w.logit for w in top)
        assert e.logit - z2[0] == pytest.approx(claim, rel=0.15)
        assert e.spamicity - sp2[0] >= top[0].delta > 0
        checked += 1
        if checked == 10:
            break
    assert checked == 10


@needs_corpora
def test_explain_is_fast_enough_for_the_filter(shipped, sa_corpus):
    import time

    msgs = [shipped.tokens(r) for r in _test_part(sa_corpus, "spam", 20)]
    t0 = time.perf_counter()
    for toks in msgs:
        explain(shipped, toks)
    assert (time.perf_counter() - t0) / len(msgs) < 0.25  # measured ~3 ms (bench/explain.py)


# -- nnspam explain -------------------------------------------------------------------

@pytest.fixture
def messages(tmp_path) -> tuple[Path, Path]:
    spam = tmp_path / "spam.eml"
    spam.write_bytes(make_message("FREE money!!! click here", "Click here to remove. Buy "
                                  "cheap viagra now, free offer, order today " * 3,
                                  "deals@cheap-offers.biz"))
    ham = tmp_path / "ham.eml"
    ham.write_bytes(make_message("Re: patch review", "Thanks, I wrote a fix for the build "
                                 "and ran the tests; see the list archive.\n> quoted text"))
    return spam, ham


def test_explain_command_text(messages, capsys):
    spam, ham = messages
    assert cli_main(["explain", "--words", "4", str(spam), str(ham)]) == 0
    out = capsys.readouterr().out
    blocks = out.split(str(ham))
    assert out.startswith(str(spam)) and len(blocks) == 2
    for block in blocks:
        assert re.search(r"  (spam|ham): spamicity [01]\.\d{6} \(log-odds [+-]\d+\.\d{2}\), "
                         r"threshold 0\.500", block)
        rows = re.findall(r"^ +([+-]\d\.\d{4}) +([+-]\d+\.\d{2}) +(\d+)  (\S+)$", block, re.M)
        assert len(rows) == 4
        assert "tokens without an input word:" in block
        assert "wide path: not taught by any correction yet" in block
        assert "adaptive replacements: none" in block
    model = Model.load("default")
    e = explain(model, model.tokens(spam.read_bytes()))
    first = re.findall(r"^ +([+-]\d\.\d{4}) +([+-]\d+\.\d{2}) +(\d+)  (\S+)$", blocks[0],
                       re.M)
    assert [r[3] for r in first] == [w.word for w in e.top(4)]
    assert [float(r[1]) for r in first] == [round(w.logit, 2) for w in e.top(4)]


def test_explain_command_json(messages, capsys):
    spam, ham = messages
    assert cli_main(["explain", "--json", "--words", "3", str(spam), str(ham)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    got = [json.loads(x) for x in lines]
    model = Model.load("default")
    for obj, path in zip(got, (spam, ham), strict=True):
        e = explain(model, model.tokens(path.read_bytes()))
        assert obj["message"] == str(path)
        assert obj["spamicity"] == e.spamicity and obj["verdict"] in ("spam", "ham")
        assert [w["word"] for w in obj["words"]] == [w.word for w in e.top(3)]
        assert obj["input_words"] == len(e.words)
        assert obj["no_input"] == list(e.no_input) and obj["replacements"] == []
        assert set(obj["words"][0]) == {"word", "count", "delta", "logit"}


def test_explain_command_reads_stdin_and_uses_the_config(messages, tmp_path):
    spam, _ = messages
    cfg = tmp_path / "c.yaml"
    cfg.write_text("threshold: 0.9\nham_factor: 0.5\nspam_factor: 0.5\n")
    r = subprocess.run([sys.executable, "-m", "nnspam", "explain", "-c", str(cfg), "--json",
                        "-"], input=spam.read_bytes(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    model = Model.load("default")
    assert obj["message"] == "-" and obj["threshold"] == 0.9
    assert obj["spamicity"] == explain(model, model.tokens(spam.read_bytes()), 0.5,
                                       0.5).spamicity


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["explain", "/no/such/message"], 2, "/no/such/message: no such file or directory"),
    (["explain", "--words", "0", "{spam}"], 2, "--words must be at least 1"),
    (["explain", "-m", "/no/such/model", "{spam}"], 2, "no such model directory"),
    (["explain", "{empty}"], 1, "no messages found"),
    (["explain", "-c", "{badcfg}", "{spam}"], 2, "filter.words must be an integer in [0, 50]"),
])
def test_explain_command_errors_are_one_line(messages, tmp_path, capsys, argv, code, message):
    spam, _ = messages
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("filter:\n  words: -1\n")
    paths = {"spam": spam, "empty": tmp_path / "empty", "badcfg": tmp_path / "bad.yaml"}
    assert cli_main([a.format(**paths) for a in argv]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_explain_command_usage_error_exits_2():
    r = subprocess.run([sys.executable, "-m", "nnspam", "explain"], capture_output=True,
                       timeout=60)
    assert r.returncode == 2 and b"MESSAGE" in r.stderr


# -- the filter's X-NNSpam-Words field ---------------------------------------------------

def _filter(raw: bytes, cfg: Path) -> bytes:
    out = io.BytesIO()
    args = pipefilter.build_parser().parse_args(["-c", str(cfg)])
    assert pipefilter.run(args, io.BytesIO(raw), out) == 0
    return out.getvalue()


_FIELD = re.compile(rb"^X-NNSpam-Words: (.*?)\r?$", re.M)
_ITEM = re.compile(r"^[!-~]+=[+-]\d\.\d{3} \([+-]\d+\.\d{2}\)$")


def _without_our_fields(raw: bytes) -> bytes:
    return re.sub(rb"(?m)^X-NNSpam-(Status|Flag|Words): .*\r?\n", b"", raw)


def test_filter_adds_the_words_field_only_when_configured(messages, tmp_path):
    spam, ham = messages
    on, off = tmp_path / "on.yaml", tmp_path / "off.yaml"
    on.write_text("filter:\n  words: 3\n")
    off.write_text("filter:\n  unsure: null\n")
    model = Model.load("default")
    for path in (spam, ham):
        raw = path.read_bytes()
        got = _filter(raw, on)
        assert b"X-NNSpam-Words" not in _filter(raw, off)
        value = _FIELD.findall(got)
        assert len(value) == 1
        items = value[0].decode("ascii").split(", ")
        assert len(items) == 3 and all(_ITEM.match(x) for x in items), items
        e = explain(model, model.tokens(raw))
        assert [x.split("=")[0] for x in items] == [w.word for w in e.top(3)]
        assert value[0].decode() == explanation.header_value(
            [(w.word, w.delta, w.logit) for w in e.top(3)])
        assert _without_our_fields(got) == raw  # every other byte as it came
        assert got.count(b"X-NNSpam-Status: ") == 1


def test_the_words_field_keeps_the_message_byte_for_byte(tmp_path):
    cfg = tmp_path / "on.yaml"
    cfg.write_text("filter:\n  words: 5\n")
    body = (b"Caf\xe9 \xff\xfe binary bytes\r\nFREE offer click here\r\n\r\n"
            b"trailing blank lines\r\n\r\n")
    raw = (b"From: x@y.example\r\nSubject: win FREE money\r\n"
           b"X-NNSpam-Words: forged=+1.000 (+9.99)\r\nX-NNSpam-Status: Yes, forged\r\n"
           b"\r\n" + body)
    got = _filter(raw, cfg)
    head, _, rest = got.partition(b"\r\n\r\n")
    assert rest == body
    assert b"forged" not in got and head.count(b"X-NNSpam-Words: ") == 1
    assert b"\n" not in head.replace(b"\r\n", b"")  # the message's CRLF line ends
    # off: a forged field is removed too, and none is added
    cfg.write_text("filter:\n  words: 0\n")
    got = _filter(raw, cfg)
    assert b"X-NNSpam-Words" not in got and got.endswith(b"\r\n\r\n" + body)


def test_an_explain_failure_costs_only_the_words_field(messages, tmp_path, monkeypatch,
                                                       caplog):
    spam, _ = messages
    cfg = tmp_path / "on.yaml"
    cfg.write_text("filter:\n  words: 3\n")

    def broken(*a, **k):
        raise MemoryError("no memory for an explanation")

    monkeypatch.setattr(explanation, "top_words", broken)
    raw = spam.read_bytes()
    got = _filter(raw, cfg)
    assert b"X-NNSpam-Status: " in got and b"X-NNSpam-Words" not in got
    assert _without_our_fields(got) == raw
    assert "cannot explain the verdict (MemoryError" in caplog.text  # stderr in a filter


def test_header_value_is_one_ascii_line_with_escaped_words():
    value = explanation.header_value([("für x,=()", 0.31, 2.4), ("wrote", -0.0001, -0.64),
                                      ("a\r\nInjected: yes", 0.0, 0.1)])
    assert value == ("f%C3%BCr%20x%2C%3D%28%29=+0.310 (+2.40), wrote=-0.000 (-0.64), "
                     "a%0D%0AInjected:%20yes=+0.000 (+0.10)")
    assert explanation.header_value([]) == "none"
    long = explanation.header_value([(f"word{i}" * 5, 0.1, 1.0) for i in range(50)])
    assert len(long) <= explanation.HEADER_MAX and long.isascii()


def test_symbols_name_the_direction_of_each_word():
    assert explanation.symbols([("ctop:text/html", 0.0, 0.7), ("wrote", -0.1, -0.6),
                                ("für", 0.2, 1.0), ("日本", 0.1, 0.5), ("Wrote", -0.1, -0.2),
                                ("zero", 0.0, 0.0)]) == [
        "NNSPAM_SPAMMY_CTOP_TEXT_HTML", "NNSPAM_HAMMY_WROTE", "NNSPAM_SPAMMY_F_R",
        "NNSPAM_SPAMMY_U65E5_672C"]


@pytest.mark.parametrize("value", [-1, 51, True, 2.5, "3"])
def test_filter_words_setting_is_checked(tmp_path, value):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"filter:\n  words: {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match="filter.words must be an integer in"):
        load_config(str(cfg))


# -- the server: PROCESS, SYMBOLS, REPORT through spamc ------------------------------------

@pytest.fixture(scope="module")
def words_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve-words"), extra_cfg="filter:\n  words: 3\n")
    yield srv
    assert srv.stop() == 0


@needs_corpora
def test_spamc_report_lists_the_words_in_spamassassin_layout(words_server, sa_corpus):
    need("spamc")
    model = Model.load("default")
    for raw in _test_part(sa_corpus, "spam", 2) + _test_part(sa_corpus, "ham", 2):
        e = explain(model, model.tokens(raw))
        rep = words_server.spamc(["-R"], raw)
        assert rep.returncode in (0, 1), rep.stderr
        text = rep.stdout.decode("ascii")
        assert re.match(r"\d+\.\d/5\.0\n", text)
        assert "Content analysis details:   (" in text
        assert " pts rule name              description\r\n" in text
        assert "---- ---------------------- " + "-" * 50 + "\r\n" in text
        verdict = "NNSPAM_SPAM" if e.spamicity >= 0.5 else "NNSPAM_HAM"
        assert re.search(rf"^[ \d.-]{{4}} {verdict} +nnspam neural network: spamicity "
                         rf"{e.spamicity:.3f}\r$", text, re.M)
        for w in e.top(3):
            name = explanation.symbols([(w.word, w.delta, w.logit)])[0]
            pts = f"{round(10 * w.delta, 1) + 0.0:4.1f}"
            desc = f'"{w.word}": spamicity {w.delta:+.3f}, log-odds {w.logit:+.2f}'
            flat = text.replace("\r\n" + " " * 28, " ")  # descriptions wrap at 50 columns
            assert re.search(rf"^{re.escape(pts)} {name} +{re.escape(desc)}\r$", flat,
                             re.M), text
        sym = words_server.spamc(["-y"], raw).stdout.strip().decode().split(",")
        assert sym[0] == verdict and len(sym) == 4
        assert sym[1:] == explanation.symbols([(w.word, w.delta, w.logit) for w in e.top(3)])


@needs_corpora
def test_spamc_process_has_the_filter_words_field(words_server, sa_corpus):
    for raw in _test_part(sa_corpus, "spam", 2) + _test_part(sa_corpus, "ham", 2):
        want = _filter(raw, words_server.cfg)
        assert b"X-NNSpam-Words: " in want
        assert words_server.spamc([], raw).stdout == want
        assert words_server.spamc(["--headers"], raw).stdout == want
        # nnspam filter --server uses the server's answer (no fallback is logged)
        r = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c",
                            str(words_server.cfg), "--server",
                            f"{words_server.host}:{words_server.port}"],
                           input=raw, capture_output=True, timeout=120)
        assert r.returncode == 0 and r.stdout == want and r.stderr == b"", r.stderr
