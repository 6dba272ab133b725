"""benchmarks/sharing.py: the Figure 15 counts come from the engine's own block tables."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import sharing  # noqa: E402


def test_quick_sharing_benchmark_counts_blocks_for_both_kinds_at_every_width():
    res = sharing.run(quick=True)
    engine = res.data["engine"]
    for w in sharing.WIDTHS:
        par, beam = engine["parallel sampling"][w], engine["beam search"][w]
        for row in (par, beam):
            assert 0 < row["held"] < row["named"] and row["saved"] == 1 - row["held"] / row["named"]
        assert beam["saved"] > par["saved"], "beams share their history, samples only the prompt"
    assert [engine["beam search"][w]["saved"] for w in sharing.WIDTHS] == sorted(
        engine["beam search"][w]["saved"] for w in sharing.WIDTHS)
    assert len(res.tables[0].rows) == 3 and {t.claim.split(":")[0] for t in res.targets}
    assert all(0 < v < 1 for k, v in res.ratios.items() if k.startswith("saved share"))
