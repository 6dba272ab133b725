"""course_lib.claims: a lesson's sentence about its measurement is printed only when it holds."""

import pytest

from course_lib.claims import ClaimFailed, claim


def test_a_claim_that_holds_is_printed_with_a_check_mark(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_STRICT_CLAIMS", "1")
    assert bool(claim(3 < 4, "3 is less than 4")) is True
    assert capsys.readouterr().out == "✔ 3 is less than 4\n"


def test_a_failed_claim_warns_a_learner_and_does_not_raise(capsys, monkeypatch):
    monkeypatch.delenv("COURSE_STRICT_CLAIMS", raising=False)
    assert bool(claim(False, "paged is faster", "paged took 1.3x")) is False
    out = capsys.readouterr().out
    assert "does not hold" in out and "paged took 1.3x" in out and "✔" not in out


def test_a_failed_claim_fails_the_cell_under_the_test_suite(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_STRICT_CLAIMS", "1")
    with pytest.raises(ClaimFailed, match="paged took 1.3x"):
        claim(False, "paged is faster", "paged took 1.3x")


def test_a_claim_needs_a_sentence():
    with pytest.raises(TypeError, match="said"):
        claim(True, "")


def test_a_claim_ending_a_notebook_cell_adds_no_output():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell("from course_lib.claims import claim\nclaim(True, 'shown once')", store_history=False)
    assert result.success and bool(result.result)
    formatted, _ = shell.display_formatter.format(result.result)
    assert formatted == {}, "the Verdict must display as nothing (no extra 'True' under the sentence)"
