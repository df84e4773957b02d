"""The pipe filter: header insertion into raw bytes, never losing mail, exit
codes, the size cap, start-up imports; a property test over arbitrary bytes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnspam import __version__
from nnspam.mail.headers import find_header_section, set_header_fields, strip_header_fields
from nnspam.services.delivery.pipefilter import EX_TEMPFAIL, filter_stream
from nnspam.services.scoring import FLAG, STATUS, FilterSettings, classify, mark, status_fields

from conftest import ROOT
from helpers import NNSPAM

OURS = (STATUS, FLAG)

SPAM_FIELDS = status_fields(0.973, 0.5)
HAM_FIELDS = status_fields(0.01, 0.5)


def block(fields, eol=b"\n") -> bytes:
    return b"".join(f"{k}: {v}".encode() + eol for k, v in fields)


def remove_once(out: bytes, ins: bytes, original: bytes) -> bool:
    """True if deleting one occurrence of ``ins`` from ``out`` gives ``original``."""
    i = out.find(ins)
    while i >= 0:
        if out[:i] + out[i + len(ins):] == original:
            return True
        i = out.find(ins, i + 1)
    return False


# -- headers.py ----------------------------------------------------------------

def test_status_format():
    v = __version__
    assert SPAM_FIELDS == [(STATUS, f"Yes, spamicity=0.973, threshold=0.500, version={v}"),
                           (FLAG, "YES")]
    assert HAM_FIELDS == [(STATUS, f"No, spamicity=0.010, threshold=0.500, version={__version__}")]
    assert status_fields(0.5, 0.5)[0][1].startswith("Yes,")  # at the threshold is spam


def test_inserted_before_the_blank_line_lf():
    raw = b"From: a@b\nSubject: hi\n\nbody\n"
    assert mark(raw, SPAM_FIELDS) == (b"From: a@b\nSubject: hi\n" + block(SPAM_FIELDS)
                                      + b"\nbody\n")


def test_crlf_message_gets_crlf_lines_and_8bit_bytes_survive():
    raw = b"Subject: \xe9t\xe9\r\nTo: x\r\n\r\n\xff\xfe body\r\nno final newline"
    out = mark(raw, HAM_FIELDS)
    assert out == (b"Subject: \xe9t\xe9\r\nTo: x\r\n" + block(HAM_FIELDS, b"\r\n")
                   + b"\r\n\xff\xfe body\r\nno final newline")


def test_mbox_from_line_stays_first():
    raw = b"From alice@example.org Mon Jan  1 00:00:00 2024\nSubject: x\n\nb"
    out = mark(raw, HAM_FIELDS)
    assert out.startswith(b"From alice@example.org Mon Jan  1 00:00:00 2024\nSubject: x\n"
                          + block(HAM_FIELDS) + b"\n")


def test_forged_headers_removed_any_case_with_folding():
    raw = (b"x-nnspam-flag: YES\nSubject: s\nX-NNSPAM-STATUS : No, spamicity=0.000,\n"
           b"\tthreshold=0.500\n  version=forged\nTo: t\n\nX-NNSpam-Flag: YES in the body\n")
    out = mark(raw, HAM_FIELDS)
    assert out == (b"Subject: s\nTo: t\n" + block(HAM_FIELDS)
                   + b"\nX-NNSpam-Flag: YES in the body\n")
    # Marking twice replaces, never duplicates.
    assert mark(out, SPAM_FIELDS) == b"Subject: s\nTo: t\n" + block(SPAM_FIELDS) + \
        b"\nX-NNSpam-Flag: YES in the body\n"


def test_header_only_message_with_and_without_final_newline():
    assert mark(b"Subject: x\n", HAM_FIELDS) == b"Subject: x\n" + block(HAM_FIELDS)
    # No line end after the last header: insert at the top, add no bytes elsewhere.
    assert mark(b"Subject: x", HAM_FIELDS) == block(HAM_FIELDS) + b"Subject: x"
    assert mark(b"Subject: x\nX-NNSpam-Flag: YES", HAM_FIELDS) == \
        block(HAM_FIELDS) + b"Subject: x\n"


def test_not_mail_at_all():
    assert mark(b"", HAM_FIELDS) == block(HAM_FIELDS)
    assert mark(b"\x00\x01binary\n\n", HAM_FIELDS) == block(HAM_FIELDS) + b"\x00\x01binary\n\n"
    assert mark(b"hello world\nsecond line\n", HAM_FIELDS) == \
        block(HAM_FIELDS) + b"hello world\nsecond line\n"
    # A header section that turns into text: insert where parsers see the body start.
    assert mark(b"Subject: a\nnot a header\n", HAM_FIELDS) == \
        b"Subject: a\n" + block(HAM_FIELDS) + b"not a header\n"


def test_from_line_only():
    assert mark(b"From x", HAM_FIELDS) == block(HAM_FIELDS) + b"From x"
    assert mark(b"From x\n", HAM_FIELDS) == b"From x\n" + block(HAM_FIELDS)


def test_partial_read_never_splits_a_field():
    # The first bytes of a big message end inside the header: insert at the top
    # and do not remove a forged field that may continue beyond the read.
    head = b"Subject: a\nX-NNSpam-Flag: YES\n"
    assert set_header_fields(head, HAM_FIELDS, OURS, at_eof=False) == block(HAM_FIELDS) + head
    full = b"Subject: a\nX-NNSpam-Flag: YES\n\nbody"
    assert set_header_fields(full, HAM_FIELDS, OURS, at_eof=False) == \
        b"Subject: a\n" + block(HAM_FIELDS) + b"\nbody"


def test_header_section_offsets():
    sec = find_header_section(b"From x\nA: 1\n b\nC: 2\n\nbody")
    assert (sec.start, sec.end, sec.complete) == (7, 20, True)
    assert [f[0] for f in sec.fields] == [b"a", b"c"]
    assert strip_header_fields(b"A: 1\n b\nC: 2\n\nA: body", ["a"]) == b"C: 2\n\nA: body"


# -- classify / filter_stream with stand-in scorers ------------------------------

def _settings(max_size=512 * 1024, unsure=None) -> FilterSettings:
    return FilterSettings("default", 0.5, 0.9, 0.1, max_size, unsure)


def run_stream(raw: bytes, score=lambda raw: 0.9, **kw):
    out = io.BytesIO()
    logs = []
    verdict, sp = filter_stream(io.BytesIO(raw), out, lambda: _settings(**kw),
                                scorer_of=lambda s: score, log=logs.append)
    return out.getvalue(), verdict, sp, logs


def test_verdicts_and_unsure_band():
    raw = b"Subject: x\n\nbody\n"
    assert classify(raw, lambda r: 0.9, 0.5).verdict == "spam"
    assert classify(raw, lambda r: 0.1, 0.5).verdict == "ham"
    res = classify(raw, lambda r: 0.55, 0.5, (0.3, 0.7))
    assert res.verdict == "unsure" and b"X-NNSpam-Status: Unsure, spamicity=0.550" in res.output
    assert b"X-NNSpam-Flag" not in res.output  # a recipe that files on the flag keeps it
    assert classify(raw, lambda r: 0.3, 0.5, (0.3, 0.7)).verdict == "unsure"
    res = classify(raw, lambda r: 0.7, 0.5, (0.3, 0.7))
    assert res.verdict == "spam" and b"X-NNSpam-Status: Yes" in res.output


@pytest.mark.parametrize("exc", [MemoryError(), ValueError("x"), RecursionError(),
                                 UnicodeDecodeError("utf-8", b"", 0, 1, "bad")])
def test_scorer_failure_passes_input_unchanged(exc):
    def boom(raw):
        raise exc
    raw = b"X-NNSpam-Flag: YES\nSubject: x\n\nbody"
    out, verdict, sp, logs = run_stream(raw, boom)
    assert (out, verdict, sp) == (raw, "error", None)
    assert logs and "passed through unchanged" in logs[0]


def test_nan_score_is_an_error():
    raw = b"Subject: x\n\nbody"
    assert classify(raw, lambda r: float("nan"), 0.5).output == raw


def test_bad_settings_pass_input_unchanged():
    raw = b"Subject: x\n\nbody"
    out = io.BytesIO()

    def bad():
        raise ValueError("filter.unsure must be null or a list [low, high]")
    verdict, _ = filter_stream(io.BytesIO(raw), out, bad, log=lambda m: None)
    assert (out.getvalue(), verdict) == (raw, "error")


def test_size_cap_skips_and_streams_the_rest_byte_for_byte():
    called = []
    raw = b"Subject: big\r\nX-NNSpam-Status: Yes\r\n\r\n" + bytes(range(256)) * 5000
    out, verdict, sp, _ = run_stream(raw, lambda r: called.append(1) or 0.9, max_size=1000)
    assert not called and verdict == "skipped" and sp is None
    assert out == (b"Subject: big\r\nX-NNSpam-Status: Skipped, reason=size\r\n\r\n"
                   + bytes(range(256)) * 5000)
    # Exactly at the cap: still classified.
    small = b"Subject: s\n\n" + b"x" * 988
    assert len(small) == 1000
    assert run_stream(small, max_size=1000)[1] == "spam"


# -- the property test: arbitrary bytes through the real model --------------------

@pytest.fixture(scope="module")
def scorer():
    from nnspam.services.delivery.pipefilter import _scorer

    return _scorer(_settings())


lines = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"Subject: hi", b"From: a@b.example", b"From x@y Mon Jan 1", b" folded",
                     b"\tfolded", b"", b"X-NNSpam-Flag: YES", b"x-nnspam-status: No",
                     b"Content-Type: text/html", b"<b>free money</b>", b"\xe9\xff\x00"]),
)
messages = st.one_of(
    st.binary(max_size=400),
    st.tuples(st.lists(lines, max_size=12), st.sampled_from([b"\n", b"\r\n", b"\r"]),
              st.booleans()).map(lambda t: t[1].join(t[0]) + (t[1] if t[2] else b"")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=messages)
def test_property_output_is_input_plus_our_headers(raw, scorer):
    res = classify(raw, scorer, 0.5)
    assert res.verdict in ("spam", "ham")
    ins = block(status_fields(res.spamicity, 0.5), find_header_section(raw).eol)
    if b"x-nnspam-" not in raw.lower():
        assert remove_once(res.output, ins, raw)
    else:
        assert remove_once(res.output, ins, strip_header_fields(raw, OURS))
    # Exactly one status header in the header section of the output.
    sec = find_header_section(res.output)
    assert [f[0] for f in sec.fields].count(b"x-nnspam-status") == 1


@settings(max_examples=200, deadline=None)
@given(raw=messages, cap=st.integers(min_value=0, max_value=64))
def test_property_size_cap_output(raw, cap):
    out, verdict, _, _ = run_stream(raw, lambda r: 0.1, max_size=cap)
    if len(raw) <= cap:
        # a blank input is no message: passed through as it was, verdict error (issue 25)
        assert verdict == ("ham" if raw.strip() else "error")
        if not raw.strip():
            assert out == raw
        return
    assert verdict == "skipped"
    head = raw[:cap + 1]  # what the filter holds when it decides
    ins = block([(STATUS, "Skipped, reason=size")], find_header_section(head, False).eol)
    # Only the first bytes are known when deciding; forged fields wholly inside
    # them are removed, nothing else changes.
    assert out.endswith(raw[cap + 1:])
    marked_head = out[:len(out) - len(raw) + cap + 1]
    assert remove_once(marked_head, ins, head) or \
        remove_once(marked_head, ins, strip_header_fields(head, OURS, at_eof=False))


# -- real processes ------------------------------------------------------------------

def nnspam_filter(args, data: bytes, env=None, cwd=None):
    e = dict(os.environ)
    e.pop("NNSPAM_CONFIG", None)
    e["HOME"] = str(cwd or ROOT)  # no ~/.config/nnspam/config.yaml
    e.update(env or {})
    return subprocess.run([str(NNSPAM), "filter", *args], input=data, capture_output=True,
                          env=e, cwd=cwd, timeout=120)


def test_subprocess_spam_and_ham(spam_ham, tmp_path):
    spam, ham = spam_ham
    r = nnspam_filter([], spam, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"\nX-NNSpam-Status: Yes, spamicity=" in r.stdout
    assert b"\nX-NNSpam-Flag: YES\n" in r.stdout
    i = r.stdout.index(b"X-NNSpam-Status: ")
    j = r.stdout.index(b"X-NNSpam-Flag: YES\n") + len(b"X-NNSpam-Flag: YES\n")
    assert r.stdout[:i] + r.stdout[j:] == spam
    r = nnspam_filter(["--verdict-exit"], ham, cwd=tmp_path)
    assert r.returncode == 1 and b"X-NNSpam-Status: No, " in r.stdout
    assert b"X-NNSpam-Flag" not in r.stdout
    assert nnspam_filter(["--verdict-exit"], spam, cwd=tmp_path).returncode == 0


def test_subprocess_missing_model_passes_through(spam_ham, tmp_path):
    spam, _ = spam_ham
    for args, code in (([], 0), (["--tempfail"], EX_TEMPFAIL), (["--verdict-exit"], 3),
                       (["--verdict-exit", "--tempfail"], EX_TEMPFAIL)):
        r = nnspam_filter(["-m", str(tmp_path / "no-model"), *args], spam, cwd=tmp_path)
        assert (r.returncode, r.stdout) == (code, spam), r.stderr
        assert b"passed through unchanged" in r.stderr


def test_subprocess_corrupt_model_passes_through(spam_ham, tmp_path):
    import shutil

    from nnspam.model.core import resolve_model_path

    spam, _ = spam_ham
    bad = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), bad)
    (bad / "weights.npz").write_bytes(b"PK\x03\x04 truncated")
    r = nnspam_filter(["-m", str(bad)], spam, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, spam)


def test_subprocess_config_size_cap_and_unsure(spam_ham, tmp_path):
    spam, ham = spam_ham
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filter:\n  max_size: 100\n")
    r = nnspam_filter(["-c", str(cfg), "--verdict-exit"], spam, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout.count(b"X-NNSpam-Status: Skipped, reason=size\n") == 1
    assert b"X-NNSpam-Flag" not in r.stdout
    cfg.write_text("filter:\n  unsure: [0.0, 1.0]\n")
    assert nnspam_filter(["-c", str(cfg), "--verdict-exit"], ham, cwd=tmp_path).returncode == 2
    cfg.write_text("filter:\n  unsure: [0.9, 0.95]\n")  # threshold outside: a config error
    r = nnspam_filter(["-c", str(cfg), "--verdict-exit"], ham, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (3, ham)


def test_subprocess_no_input_and_binary(tmp_path):
    r = nnspam_filter([], b"", cwd=tmp_path)  # no message: nothing to mark (issue 25)
    assert r.returncode == 0 and r.stdout == b"" and b"empty input" in r.stderr
    data = bytes(range(256)) * 10
    r = nnspam_filter([], data, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.endswith(data)


def test_subprocess_epipe_is_tempfail(tmp_path):
    # The reader goes away before the output is written: not a success.
    data = b"Subject: x\n\n" + b"y" * (4 << 20)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filter:\n  max_size: 1000\n")  # streamed path: fast
    p = subprocess.Popen([str(NNSPAM), "filter", "-c", str(cfg)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    try:
        p.stdin.write(data)
        p.stdin.close()
    except BrokenPipeError:
        pass
    p.wait(60)
    err = p.stderr.read()
    assert p.returncode == EX_TEMPFAIL, err
    assert b"cannot write the output" in err and b"Traceback" not in err


def test_filter_path_imports_only_numpy_and_the_standard_library(spam_ham, tmp_path):
    spam, _ = spam_ham
    code = (
        "import sys\n"
        "startup = {k.split('.')[0] for k in sys.modules}  # site, .pth hooks\n"
        "from nnspam.front.cli import main\n"
        "rc = main(['filter'])\n"
        "mods = {k.split('.')[0] for k in sys.modules} - startup\n"
        "allowed = set(sys.stdlib_module_names) | {'nnspam', 'numpy', 'cython_runtime'}\n"
        "third = sorted(m for m in mods - allowed if not m.startswith('_cython_'))\n"
        "print(rc, third, file=sys.stderr)\n"
    )
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("NNSPAM_CONFIG", None)
    r = subprocess.run([sys.executable, "-c", code], input=spam, capture_output=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0
    assert b"X-NNSpam-Flag: YES" in r.stdout
    assert r.stderr.decode().strip().splitlines()[-1] == "0 []"


def test_help_lists_filter():
    r = subprocess.run([str(NNSPAM), "--help"], capture_output=True, text=True)
    assert "filter" in r.stdout
    r = subprocess.run([str(NNSPAM), "filter", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--verdict-exit" in r.stdout and "--tempfail" in r.stdout
