"""Layer maps: PKD against the indices of Sun et al. (2019), TinyBERT's g(m), CKD/ALP's convention, RAIL's draws, and
the CLI's layer-map command."""
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


@pytest.mark.parametrize("n_teacher,n_student,want", [
    (12, 4, [3, 6, 9, 12]),            # TinyBERT's 4-layer student: g(m) = 3m
    (12, 6, [2, 4, 6, 8, 10, 12]),     # TinyBERT6: g(m) = 2m
    (6, 3, [2, 4, 6]),
    (24, 6, [4, 8, 12, 16, 20, 24]),
])
def test_uniform_is_tinybert_g(n_teacher, n_student, want):
    assert layer_map("uniform", n_teacher, n_student) == want


# CKD and ALP: the toolkit's convention (maps.py's docstring, the recipes' headers): PKD's split of the teacher into
# intermediate layers 1..N-1 (taught through hidden states) and the last one (taught through the logits), the
# groups contiguous, larger ones first. CKD's paper (Wu et al., EMNLP 2020) combined layers of 12-layer NMT
# encoders (Pt->En, Tr->En, En->De, per its abstract), so it has no BERT/GLUE index table to pin; ALP-KD's
# (Passban et al., AAAI 2021: BERT-12 into 6, 4 and 2 layers) could not be read on this machine.
@pytest.mark.parametrize("n_teacher,n_student,want", [
    (12, 6, [[1, 2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]),
    (12, 3, [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11]]),
    (6, 3, [[1, 2, 3], [4, 5]]),
    (12, 4, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]),
])
def test_ckd_groups(n_teacher, n_student, want):
    assert layer_map("ckd", n_teacher, n_student) == want


def test_ckd_groups_partition_the_teacher_layers():
    for n in range(2, 25):
        for m in range(2, n + 1):
            groups = layer_map("ckd", n, m)
            assert len(groups) == m - 1
            assert [t for g in groups for t in g] == list(range(1, n))  # each layer once, in order
            sizes = [len(g) for g in groups]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_alp_attends_over_all_intermediate_teacher_layers():
    assert layer_map("alp", 12, 3) == [list(range(1, 12))] * 2
    assert layer_map("alp", 6, 4) == [[1, 2, 3, 4, 5]] * 3


def test_rail_draws():
    for n, m in ((12, 6), (12, 3), (6, 3), (24, 6)):
        draws = [layer_map("rail", n, m, epoch=e, seed=7) for e in range(20)]
        for d in draws:
            assert d == sorted(set(d)) and len(d) == m - 1 and all(1 <= t <= n - 1 for t in d)
        assert len({tuple(d) for d in draws}) > 1  # re-drawn between epochs
        assert draws == [layer_map("rail", n, m, epoch=e, seed=7) for e in range(20)]  # same seed, same draws
        assert draws != [layer_map("rail", n, m, epoch=e, seed=8) for e in range(20)]
    assert layer_map("rail", 12, 12, epoch=3) == list(range(1, 12))  # nothing left to draw
    # over many epochs every intermediate teacher layer gets its turn
    seen = {t for e in range(50) for t in layer_map("rail", 12, 3, epoch=e, seed=0)}
    assert seen == set(range(1, 12))


def test_rail_draws_pinned():
    """The draws themselves, literally: a change of the seeding (numpy's default_rng([seed, epoch]) stream) would
    change every RAIL run and what a resumed run draws for its remaining epochs, so it must show up here."""
    assert [layer_map("rail", 12, 6, epoch=e, seed=42) for e in range(3)] == [[1, 5, 6, 7, 11], [3, 5, 7, 9, 11],
                                                                               [2, 3, 4, 8, 10]]
    assert [layer_map("rail", 6, 3, epoch=e, seed=42) for e in range(3)] == [[1, 4], [3, 4], [1, 2]]


def test_layer_map_cli_all_and_rail_draws(capsys):
    assert main(["layer-map", "--strategy", "all", "--teacher-layers", "12", "--student-layers", "4", "--json"]) == 0
    got = {r["strategy"]: r["mapping"] for r in json.loads(capsys.readouterr().out)}
    assert set(got) == {"pkd-skip", "pkd-last", "uniform", "ckd", "alp", "rail"}
    assert got["uniform"] == [3, 6, 9, 12] and got["ckd"] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]
    assert main(["layer-map", "--strategy", "rail", "--teacher-layers", "12", "--student-layers", "6", "--seed", "3",
                 "--epochs", "4", "--json"]) == 0
    draws = json.loads(capsys.readouterr().out)["draws"]
    assert list(draws) == ["1", "2", "3", "4"]
    assert [draws[str(e + 1)] for e in range(4)] == [layer_map("rail", 12, 6, epoch=e, seed=3) for e in range(4)]
    assert main(["layer-map", "--strategy", "rail", "--teacher-layers", "12", "--student-layers", "3"]) == 0
    assert "epoch 1: S1<-T" in capsys.readouterr().out
