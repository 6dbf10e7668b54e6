"""PKD layer maps against the indices of Sun et al. (2019), and the CLI's layer-map command."""
import json

import pytest

from textdistill import TextDistillError
from textdistill.cli import main
from textdistill.knowledge.maps import layer_map


@pytest.mark.parametrize("n_teacher,n_student,skip,last", [
    (12, 6, [2, 4, 6, 8, 10], [7, 8, 9, 10, 11]),  # the paper's BERT12 -> BERT6
    (12, 3, [4, 8], [10, 11]),                     # the paper's BERT12 -> BERT3
    (6, 3, [2, 4], [4, 5]),                        # MiniLM-L6 -> 3 layers
    (24, 6, [4, 8, 12, 16, 20], [19, 20, 21, 22, 23]),  # BERT-large -> 6
    (12, 4, [3, 6, 9], [9, 10, 11]),
    (12, 1, [], []),
    (12, 12, list(range(1, 12)), list(range(1, 12))),
])
def test_pkd_indices(n_teacher, n_student, skip, last):
    assert layer_map("pkd-skip", n_teacher, n_student) == skip
    assert layer_map("pkd-last", n_teacher, n_student) == last


def test_pkd_skip_uneven_rule_is_floor_and_increasing():
    assert layer_map("pkd-skip", 12, 5) == [2, 4, 7, 9]  # floor(j * 12 / 5)
    for n in range(1, 25):
        for m in range(1, n + 1):
            got = layer_map("pkd-skip", n, m)
            assert got == sorted(set(got)) and all(1 <= t <= n - 1 for t in got) and len(got) == m - 1


def test_bad_maps():
    with pytest.raises(TextDistillError, match="deeper than the teacher"):
        layer_map("pkd-skip", 6, 8)
    with pytest.raises(TextDistillError, match="unknown layer map 'pkd-middle'"):
        layer_map("pkd-middle", 12, 6)


def test_layer_map_cli_json(capsys):
    assert main(["layer-map", "--strategy", "pkd-skip", "--teacher-layers", "12", "--student-layers", "6",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mapping"] == [2, 4, 6, 8, 10]
    assert main(["layer-map", "--strategy", "pkd-last", "--teacher-layers", "12", "--student-layers", "3"]) == 0
    out = capsys.readouterr().out
    assert "student layer  1 <- teacher layer 10" in out and "student layer  2 <- teacher layer 11" in out
    assert main(["layer-map", "--strategy", "pkd-skip", "--teacher-layers", "3", "--student-layers", "6"]) == 2
    assert "deeper than the teacher" in capsys.readouterr().err
