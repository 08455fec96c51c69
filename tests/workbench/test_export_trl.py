"""The exported data sets read as TRL 1.x expects them, checked with TRL's own data utilities (slow: importing TRL
pulls in torch and transformers)."""

from __future__ import annotations

import datasets
import pytest

from workbench.exporters import export

pytestmark = pytest.mark.slow


@pytest.fixture
def judged(project):
    pid = project.add_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])[0]
    a, b, c = (project.add_response(pid, t)[0] for t in ("4", "5", "22"))
    project.add_comparison(pid, a, b, verdict="a", strength="strong")
    project.add_comparison(pid, c, b, verdict="b", strength="slight")
    project.add_ranking(pid, {a: 1, c: 2, b: 3})
    project.add_demonstration(pid, "Four.")
    return project


def test_trl_reads_our_columns(judged, tmp_path):
    from trl.data_utils import is_conversational, maybe_extract_prompt, unpair_preference_dataset

    pref = datasets.load_from_disk(export(judged, tmp_path / "pref", "trl-preference").out)
    assert pref.num_rows == 5
    for row in pref:
        assert is_conversational(row)
        # an explicit conversational prompt is kept as is: TRL does not try to re-extract it from chosen/rejected
        assert maybe_extract_prompt(row) == row
    unpaired = unpair_preference_dataset(pref)
    assert {"prompt", "completion", "label"} <= set(unpaired.column_names) and unpaired.num_rows == 10

    kto = datasets.load_from_disk(export(judged, tmp_path / "kto", "trl-kto").out)
    assert set(kto.column_names) == {"prompt", "completion", "label"} and all(is_conversational(r) for r in kto)
    assert kto.features["label"] == unpaired.features["label"]

    sft = datasets.load_from_disk(export(judged, tmp_path / "sft", "trl-sft").out)
    assert sft.column_names == ["prompt", "completion"] and all(is_conversational(r) for r in sft)
