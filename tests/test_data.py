"""Readers: every file of the GLUE layout in ../shared, users' CSV/TSV/JSONL, and bad input."""
import gzip
import json
import re

import pytest

from textdistill import TextDistillError
from textdistill.data.readers import load_examples, resolve_file
from textdistill.data.tasks import get_task, task_from_dict

from conftest import ROOT, shared_glue

# (task, split, rows, labelled): every file in ../shared/data/glue (see its README)
GLUE_FILES = [
    ("cola", "train", 8551, True), ("cola", "dev", 1043, True), ("cola", "test", 1063, False),
    ("sst2", "train", 67349, True), ("sst2", "dev", 872, True), ("sst2", "test", 1821, False),
    ("mrpc", "train", 3668, True), ("mrpc", "dev", 408, True), ("mrpc", "test", 1725, False),
    ("stsb", "train", 5749, True), ("stsb", "dev", 1500, True), ("stsb", "test", 1379, False),
    ("rte", "train", 2490, True), ("rte", "dev", 277, True), ("rte", "test", 3000, False),
    ("wnli", "train", 635, True), ("wnli", "dev", 71, True), ("wnli", "test", 146, False),
    ("qnli", "train", 9999, True), ("qnli", "dev", 5463, True), ("qnli", "test", 5463, False),
    ("mnli", "train", 9999, True), ("qqp", "train", 23496, True),
    ("paws", "dev", 8000, True), ("paws", "test", 8000, True),
    ("imdb", "test", 25000, True), ("imdb", "test2k", 2000, True),
]


@pytest.mark.parametrize("name,split,rows,labelled", GLUE_FILES)
def test_every_glue_file_loads(name, split, rows, labelled):
    glue = shared_glue()
    task = get_task(name)
    ex = load_examples(task, resolve_file(task, split, glue), require_labels=labelled)
    assert len(ex) == rows
    assert all(ex.text_a) and (ex.text_b is None) == (len(task.text_columns) == 1)
    if labelled:
        assert len(ex.labels) == rows
        if task.is_regression:
            assert 0.0 <= min(ex.labels) and max(ex.labels) <= 5.0
        else:
            assert set(ex.labels) == set(range(task.num_labels))
    else:
        assert ex.labels is None


def test_glue_quirks_in_small_files(tmp_path):
    """GLUE's file quirks on files written here (the real files, when present beside the repo: below): MRPC's
    header starts with a UTF-8 BOM, PAWS has CRLF line endings, CoLA's files have no header."""
    (tmp_path / "mrpc.tsv").write_bytes("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                        "1\t1\t2\tHe said so .\tHe said it .\n0\t3\t4\tA cat .\tA dog .\n"
                                        .encode("utf-8"))
    mrpc = load_examples(get_task("mrpc"), tmp_path / "mrpc.tsv")
    assert mrpc.labels == [1, 0] and mrpc.text_a[0] == "He said so ." and mrpc.lines == [2, 3]
    (tmp_path / "paws.tsv").write_bytes(b"id\tsentence1\tsentence2\tlabel\r\n1\tA b .\tB a .\t0\r\n"
                                        b"2\tC d .\tC d !\t1\r\n")
    paws = load_examples(get_task("paws"), tmp_path / "paws.tsv")
    assert paws.text_b == ["B a .", "C d !"] and paws.labels == [0, 1]
    (tmp_path / "cola.tsv").write_text("gj04\t1\t\tOur friends won't buy this .\ngj04\t0\t*\tThey drank the pub .\n")
    cola = load_examples(get_task("cola"), tmp_path / "cola.tsv")
    assert cola.text_a == ["Our friends won't buy this .", "They drank the pub ."] and cola.labels == [1, 0]
    assert cola.lines == [1, 2]  # (no header line)


def test_glue_quirks():
    glue = shared_glue()
    mrpc = load_examples(get_task("mrpc"), glue / "MRPC" / "dev.tsv")  # header starts with a BOM
    assert mrpc.labels[:2] == [1, 0] and mrpc.text_a[0].startswith("He said the foodservice")
    paws = load_examples(get_task("paws"), glue / "PAWS" / "dev.tsv")  # CRLF line endings
    assert not any(t.endswith("\r") for t in paws.text_b) and paws.labels[:2] == [0, 1]
    cola = load_examples(get_task("cola"), glue / "CoLA" / "train.tsv")  # no header
    assert cola.text_a[0] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert cola.lines[0] == 1
    mnli = load_examples(get_task("mnli"), glue / "MNLI" / "subset" / "train_subset_ppft.tsv")
    assert mnli.labels[:2] == [1, 1]  # 'entailment' is class 1 in GLUE's order (contradiction, entailment, neutral)
    # the other QQP subset has its own columns and also loads
    qqp = load_examples(get_task("qqp"), glue / "QQP" / "subset" / "train_subset_ppft.tsv")
    assert len(qqp) == 9999


def test_user_csv_tsv_jsonl(tmp_path):
    task = task_from_dict({"name": "tickets", "text_columns": ["title", "body"], "label_column": "team",
                           "labels": ["billing", "tech"]})
    (tmp_path / "a.csv").write_text('title,body,team\n"Refund, please","I was charged twice",billing\nCrash,"It ""hangs""",tech\n')
    ex = load_examples(task, tmp_path / "a.csv")
    assert ex.text_a == ["Refund, please", "Crash"] and ex.text_b[1] == 'It "hangs"' and ex.labels == [0, 1]
    (tmp_path / "a.tsv").write_text('title\tbody\tteam\r\nx "y\tz\ttech\r\n')
    assert load_examples(task, tmp_path / "a.tsv").text_a == ['x "y']
    rows = [{"title": "a", "body": "b", "team": "tech"}, {"title": "c", "body": "d", "team": "billing"}]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_examples(task, tmp_path / "a.jsonl.gz").labels == [1, 0]
    reg = task_from_dict({"text_columns": "t", "regression": True, "label_column": "y"})
    (tmp_path / "r.jsonl").write_text('{"t": "x", "y": 0.5}\n{"t": "z", "y": 2}\n')
    assert load_examples(reg, tmp_path / "r.jsonl").labels == [0.5, 2.0]


@pytest.mark.parametrize("extra,needle", [
    ({"labels": ["a", "b", "c"], "metrics": ["f1"]}, "'f1' is the positive-class F1 of a 2-label task; this task has 3"),
    ({"regression": True, "metrics": ["accuracy"]}, "'accuracy' is a metric of a classification task"),
    ({"regression": True, "metrics": ["pearson", "mcc"]}, "'mcc' is a metric of a classification task"),
    ({"labels": ["a", "b"], "metrics": ["spearman"]}, "'spearman' is a metric of a regression task"),
    ({"labels": ["a", "b"], "metrics": []}, "task.metrics is empty"),
    ({"labels": ["only"]}, "a classifier needs at least 2 labels, got ['only']"),
])
def test_user_task_metrics_that_do_not_fit(extra, needle):
    """A metric the task's labels cannot feed is refused when the recipe is read, not after an epoch of training
    (sklearn's own error would be a traceback at the first evaluation)."""
    with pytest.raises(TextDistillError, match=re.escape(needle)) as e:
        task_from_dict({"text_columns": ["t"], **extra}, where="my.yaml")
    assert str(e.value).startswith("my.yaml: task")
    # the fitting ones are accepted
    assert task_from_dict({"text_columns": ["t"], "labels": ["a", "b", "c"], "metrics": ["macro_f1", "mcc"]}).metrics == (
        "macro_f1", "mcc")
    assert task_from_dict({"text_columns": ["t"], "labels": ["a", "b"], "metrics": "mcc"}).metrics == ("mcc",)  # one name


def test_bad_data(tmp_path):
    sst2 = get_task("sst2")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(TextDistillError, match="empty.tsv: the file is empty"):
        load_examples(sst2, tmp_path / "empty.tsv")
    (tmp_path / "hdr.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(TextDistillError, match="header but no rows"):
        load_examples(sst2, tmp_path / "hdr.tsv")
    (tmp_path / "lab.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t2\n")
    with pytest.raises(TextDistillError, match=r"lab.tsv:3: unseen label '2' in column 'label'"):
        load_examples(sst2, tmp_path / "lab.tsv")
    (tmp_path / "col.tsv").write_text("text\tlabel\ngood\t1\n")
    with pytest.raises(TextDistillError, match="col.tsv: no column 'sentence'"):
        load_examples(sst2, tmp_path / "col.tsv")
    (tmp_path / "fields.tsv").write_text("sentence\tlabel\ngood\t1\nbad\n")
    with pytest.raises(TextDistillError, match=r"fields.tsv:3: expected 2 fields"):
        load_examples(sst2, tmp_path / "fields.tsv")
    (tmp_path / "bad.jsonl").write_text('{"sentence": "a", "label": 1}\n{oops\n')
    with pytest.raises(TextDistillError, match=r"bad.jsonl:2: invalid JSON"):
        load_examples(sst2, tmp_path / "bad.jsonl")
    (tmp_path / "s.tsv").write_text("sentence1\tsentence2\tscore\na\tb\thigh\n")
    with pytest.raises(TextDistillError, match=r"s.tsv:2: label 'high' .* not a number"):
        load_examples(get_task("stsb"), tmp_path / "s.tsv")
    with pytest.raises(TextDistillError, match="unknown task 'sst3'"):
        get_task("sst3")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(TextDistillError, match="x.parquet: unknown file type"):
        load_examples(sst2, tmp_path / "x.parquet")
    with pytest.raises(TextDistillError, match="nope.tsv: no such file"):
        load_examples(sst2, tmp_path / "nope.tsv")


_ROW = b'{"sentence": "good", "label": 1}\n'


@pytest.mark.parametrize("name, content, needle", [
    ("rows.jsonl", _ROW + b'{"label": 0}\n', "rows.jsonl:2: no 'sentence' in this row"),
    ("nolabel.jsonl", _ROW + b'{"sentence": "bad"}\n', "nolabel.jsonl:2: no 'label' in this row"),
    ("plain.jsonl.gz", _ROW, "plain.jsonl.gz: cannot read the file (Not a gzipped file"),
    ("cut.jsonl.gz", gzip.compress(_ROW * 50)[:60], "cut.jsonl.gz: cannot read the file (Compressed file ended"),
    ("bent.jsonl.gz", (lambda z: z[:15] + bytes(b ^ 0x5A for b in z[15:30]) + z[30:])(gzip.compress(_ROW * 50)),
     "bent.jsonl.gz: cannot read the file ("),  # damaged deflate data: zlib.error or a CRC error, one line either way
])
def test_rows_without_a_column_and_unreadable_files(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(TextDistillError) as err:
        load_examples(get_task("sst2"), tmp_path / name)
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1


def test_batches_dynamic_length_grouped_or_fixed(minilm_tokenizer):
    from textdistill.data.batching import encode, train_loader
    from textdistill.data.readers import load_examples
    from textdistill.data.tasks import get_task

    ex = load_examples(get_task("sst2"), ROOT / "data" / "sst2" / "dev.tsv")
    data = encode(minilm_tokenizer, ex, 128, False)
    lengths = data.lengths
    seen = []
    for batch in train_loader(data, minilm_tokenizer, 32, seed=0):
        own = [lengths[i] for i in batch["idx"].tolist()]
        assert batch["input_ids"].shape[1] == max(own)  # padded to its own longest example only
        assert batch["attention_mask"].sum(1).tolist() == own
        seen += batch["idx"].tolist()
    assert sorted(seen) == list(range(len(ex)))  # every example once per epoch
    fixed = next(iter(train_loader(data, minilm_tokenizer, 32, seed=0, length_grouped=False, pad_to=128)))
    assert fixed["input_ids"].shape == (32, 128)


@pytest.mark.parametrize("pair,labels", [(False, [1, 0, None, 1, 0]), (True, [0.5, 4.0, 2.5, 1.0, 3.0]),
                                         (False, None)])
def test_stream_loader_tokenizes_like_encode(minilm_tokenizer, pair, labels):
    """textdistill evaluate's batches, tokenized one at a time, hold exactly encode()'s rows (ids, segments, labels)."""
    import torch

    from textdistill.data.batching import IGNORE, encode, stream_loader
    from textdistill.data.readers import Examples

    a = ["a long , long sentence about a film that goes on and on and on", "short", "mid length text here",
         "über café naïve", "x " * 200]
    b = ["second side", "another second side that is longer", "b", "c d e", "y"] if pair else None
    ex = Examples(a, b, labels, "mem", list(range(1, 6)))
    regression = pair
    encoded = encode(minilm_tokenizer, ex, 16, regression)
    seen = set()
    for batch in stream_loader(ex, minilm_tokenizer, 2, 16, regression):
        for row, i in enumerate(batch["idx"].tolist()):
            seen.add(i)
            real = batch["attention_mask"][row].bool()
            f = encoded[i]
            assert batch["input_ids"][row][real].tolist() == f["input_ids"]
            assert batch["token_type_ids"][row][real].tolist() == f["token_type_ids"]
            if labels is None:
                assert "labels" not in batch
            elif regression:
                assert batch["labels"][row].item() == pytest.approx(f["labels"])
            else:
                assert batch["labels"][row].item() == (f["labels"] if f["labels"] is not None else IGNORE)
        assert batch["input_ids"].dtype == torch.long
    assert seen == set(range(5))


@pytest.mark.parametrize("text", ['label,sentence\n1,"first line\nsecond line"\n0,plain\n',
                                  'sentence,label,note\ngood film,1,"note 1\nnote 2"\nbad film,0,x\n'])
def test_multi_line_quoted_fields_are_valid(tmp_path, text):
    """A quoted field over several lines (after the label column, or as the last column) is not a merged row."""
    task = task_from_dict({"name": "t", "text_columns": ["sentence"], "label_column": "label", "labels": ["0", "1"]})
    f = tmp_path / "t.csv"
    f.write_text(text)
    ex = load_examples(task, f)
    assert len(ex) == 2 and ex.labels == [1, 0]
    assert ex.text_a[0] == ("first line\nsecond line" if text.startswith("label") else "good film")


def test_dev_rows_holds_out_a_seeded_dev_set(tmp_path):
    """data.dev_rows: a dev set held out of the train file (QQP here has no dev file): disjoint from the
    train rows, together all of them, the same rows for every recipe of the same sample_seed, and train_rows
    samples only from the rest."""
    from textdistill.data.splits import load_split
    from textdistill.recipe import load_recipe

    rows = [f"sentence number {i} .\t{i % 2}" for i in range(50)]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")

    def split(*sets):
        r = load_recipe("recipes/ft.yaml", [("task", "sst2"), ("data.train", str(tmp_path / "train.tsv")), *sets])
        return load_split(get_task("sst2"), r, "train"), load_split(get_task("sst2"), r, "dev")
    train, dev = split(("data.dev_rows", 10))
    assert len(dev) == 10 and len(train) == 40 and not set(dev.text_a) & set(train.text_a)
    assert sorted(dev.text_a + train.text_a) == sorted(r.split("\t")[0] for r in rows)
    assert dev.labels == [int(t.split()[2]) % 2 for t in dev.text_a]  # labels travel with their rows
    assert "10 held-out rows" in dev.source and "minus 10 held-out" in train.source
    assert split(("data.dev_rows", 10))[1].text_a == dev.text_a
    assert split(("data.dev_rows", 10), ("data.sample_seed", 1))[1].text_a != dev.text_a
    small, dev2 = split(("data.dev_rows", 10), ("data.train_rows", 15))
    assert dev2.text_a == dev.text_a and len(small) == 15 and set(small.text_a) <= set(train.text_a)
    with pytest.raises(TextDistillError, match=r"^data.dev_rows: 50 is not fewer than the 50 rows of"):
        split(("data.dev_rows", 50))
    with pytest.raises(TextDistillError, match=r"^data.dev_rows: holds the dev set out of the train file; drop"):
        split(("data.dev_rows", 10), ("data.dev", str(tmp_path / "train.tsv")))
