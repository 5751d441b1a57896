"""Data: every source form, TOFU, shapes and formatting, truncation, and forget/retain pairing."""

from __future__ import annotations

import json
import logging

import datasets
import pytest
from conftest import TOFU_DIR, read_jsonl

from unlearn import UnlearnError, load_tofu
from unlearn.data import ForgetRetainCollator, ForgetRetainDataset, detect_shape, fingerprint, load_records, tokenize

ROWS = [{"question": f"q{i}?", "answer": f"a{i}."} for i in range(5)]


@pytest.mark.parametrize("kind", ["list", "dataset", "jsonl", "json", "csv", "parquet", "directory", "mapping"])
def test_every_source_form_loads_the_same_rows(kind, tmp_path):
    ds = datasets.Dataset.from_list(ROWS)
    source = {
        "list": ROWS,
        "dataset": ds,
        "jsonl": tmp_path / "d.jsonl",
        "json": tmp_path / "d.json",
        "csv": tmp_path / "d.csv",
        "parquet": tmp_path / "d.parquet",
        "directory": tmp_path / "dir",
        "mapping": {"path": str(tmp_path / "d.jsonl")},
    }[kind]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    ds.to_csv(tmp_path / "d.csv", index=False)
    ds.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    (tmp_path / "dir" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[2:]))
    loaded = load_records(source)
    assert [dict(r) for r in loaded] == ROWS


def test_hub_ids_go_to_the_hub_and_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UnlearnError, match="Could not load Hub dataset `someone/some-data`.*split 'forget'"):
        load_records({"path": "someone/some-data", "name": "cfg", "split": "forget"})


def test_mixed_or_unknown_formats_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UnlearnError, match="holds no"):
        load_records(tmp_path)
    with pytest.raises(UnlearnError, match="A data mapping needs `path`"):
        load_records({"file": "x"})


@pytest.mark.parametrize(
    ("split", "rows"),
    [
        ("forget01", 40),
        ("forget10", 400),
        ("retain99", 3960),
        ("forget01_perturbed", 40),
        ("real_authors_perturbed", 100),
        ("world_facts_perturbed", 117),
    ],
)
def test_tofu_splits_from_a_local_copy(split, rows):
    ds = load_tofu(split, TOFU_DIR)
    assert len(ds) == rows and {"question", "answer"} <= set(ds.column_names)


def test_tofu_via_env_and_prefix(monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))
    assert len(load_records("tofu:forget05")) == 200
    assert "perturbed_answer" in load_tofu("forget05_perturbed").column_names
    with pytest.raises(UnlearnError, match="Unknown TOFU split 'forget11'. Did you mean"):
        load_tofu("forget11")


def test_tofu_forget_sets_are_nested_and_disjoint_from_their_retain_sets():
    f01, f10 = load_tofu("forget01", TOFU_DIR), load_tofu("forget10", TOFU_DIR)
    assert set(f01["question"]) <= set(f10["question"])
    assert not set(f10["question"]) & set(load_tofu("retain90", TOFU_DIR)["question"])


def test_shapes():
    assert detect_shape(load_records(ROWS), "question", "answer", "text", "forget") == "qa"
    assert detect_shape(load_records([{"text": "x"}]), "question", "answer", "text", "forget") == "text"


def test_plain_format_loss_on_answer_tokens_only(tiny):
    _, tok = tiny
    ex = tokenize(
        load_records([{"question": "Who?", "answer": "Jane Doe"}]), tok, "qa", 512, "question", "answer", "text"
    )[0]
    assert tok.decode([t for t in ex["labels"] if t != -100]) == " Jane Doe</s>"
    assert (
        tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab == -100])
        == "Question: Who?\nAnswer:"
    )


def test_text_shape_loss_on_every_token(tiny):
    _, tok = tiny
    ex = tokenize(load_records([{"text": "A plain sentence."}]), tok, "text", 512, "question", "answer", "text")[0]
    assert ex["labels"] == ex["input_ids"]


def test_truncation_warns_once_with_the_count(tiny, caplog):
    _, tok = tiny
    rows = load_records(read_jsonl("forget01", 6))
    limit = min(len(e["input_ids"]) for e in tokenize(rows, tok, "qa", 512, "question", "answer", "text")) - 1
    with caplog.at_level(logging.WARNING, logger="unlearn.data"):
        examples = tokenize(rows, tok, "qa", limit, "question", "answer", "text")
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "6 of 6 examples" in warnings[0].getMessage()
    assert all(len(e["input_ids"]) == limit for e in examples)


def test_pairing_depends_only_on_seed_epoch_and_index():
    forget = [{"input_ids": [1, 2], "labels": [1, 2], "index": i} for i in range(6)]
    retain = [{"input_ids": [3], "labels": [3], "index": j} for j in range(10)]
    a = ForgetRetainDataset(forget, retain, ratio=2, sampling="cycle", seed=7)
    b = ForgetRetainDataset(forget, retain, ratio=2, sampling="cycle", seed=7)
    assert [a.retain_indices(i) for i in range(6)] == [b.retain_indices(i) for i in reversed(range(6))][::-1]
    # cycle: the first 10 draws (5 forget examples x 2) cover the retain set exactly once
    assert sorted(j for i in range(5) for j in a.retain_indices(i)) == list(range(10))
    first = [a.retain_indices(i) for i in range(6)]
    a.set_epoch(1)
    assert [a.retain_indices(i) for i in range(6)] != first
    r = ForgetRetainDataset(forget, retain, ratio=3, sampling="random", seed=7)
    assert all(len(r.retain_indices(i)) == 3 for i in range(6))


def test_entity_sampling_groups_batches_by_entity_and_pairs_each_with_its_neighbors():
    """MELU: consecutive forget rows belong to one entity; each row's retain rows alternate between its entity's
    neighbors and the general rows; the epoch's order and draws depend only on (seed, epoch, index)."""
    entities = ["ann", "bob", "ann", "cid", "bob", "ann", "cid", "bob"]
    forget = [{"input_ids": [1], "labels": [1], "index": i} for i in range(8)]
    retain_entities = ["ann", "ann", "bob", "cid", None, None, None, "bob"]
    retain = [{"input_ids": [3], "labels": [3], "index": j} for j in range(8)]
    ds = ForgetRetainDataset(forget, retain, 2, "entity", 7, entities, retain_entities)
    order = [ds[i]["forget"]["index"] for i in range(8)]
    assert sorted(order) == list(range(8))
    runs = [entities[i] for i in order]
    assert len([e for k, e in enumerate(runs) if k == 0 or e != runs[k - 1]]) == 3  # three contiguous groups
    for i in range(8):
        own, general = ds.retain_indices(i)
        assert retain_entities[own] == entities[i] and retain_entities[general] is None
    again = ForgetRetainDataset(forget, retain, 2, "entity", 7, entities, retain_entities)
    assert [again[i]["forget"]["index"] for i in range(8)] == order
    draws = [ds.retain_indices(i) for i in range(8)]
    assert [again.retain_indices(i) for i in range(8)] == draws
    ds.set_epoch(1)
    assert ([ds[i]["forget"]["index"] for i in range(8)], [ds.retain_indices(i) for i in range(8)]) != (order, draws)
    with pytest.raises(UnlearnError, match="an entity for every forget row"):
        ForgetRetainDataset(forget, retain, 2, "entity", 7, None, None)


def test_entity_sampling_needs_the_column_and_reads_the_epoch_in_order(tiny, tofu_rows, tmp_path):
    import unlearn
    from unlearn.recipes import recipe_config

    model, tok = tiny
    args = recipe_config({"recipe": "graddiff", "retain_sampling": "entity", "output_dir": str(tmp_path)})
    assert args.train_sampling_strategy == "sequential"
    with pytest.raises(UnlearnError, match="lacks"):
        unlearn.get_recipe("graddiff")(
            model=model, args=args, forget=tofu_rows["forget"], retain=tofu_rows["retain"], processing_class=tok
        )
    forget = [{**r, "entity": "A" if i < 4 else "B"} for i, r in enumerate(tofu_rows["forget"])]
    trainer = unlearn.get_recipe("graddiff")(
        model=model, args=args, forget=forget, retain=tofu_rows["retain"], processing_class=tok
    )
    batches = list(trainer.get_train_dataloader())
    for batch in batches:  # 8 rows, batch 4: each batch is one entity's 4 rows
        rows = batch["index"][batch["is_forget"]].tolist()
        assert len({forget[i]["entity"] for i in rows}) == 1


def test_collator_puts_forget_rows_first():
    forget = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "index": i} for i in range(2)]
    retain = [{"input_ids": [8], "labels": [8], "index": j} for j in range(4)]
    ds = ForgetRetainDataset(forget, retain, ratio=2, sampling="cycle", seed=0)
    batch = ForgetRetainCollator(pad_token_id=0)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (6, 3)
    assert batch["is_forget"].tolist() == [True, True, False, False, False, False]
    assert batch["attention_mask"][2].tolist() == [1, 0, 0] and batch["loss_labels"][2].tolist() == [8, -100, -100]


def test_fingerprint_is_a_content_hash():
    assert fingerprint(load_records(ROWS)) == fingerprint(load_records([dict(r) for r in ROWS]))
    assert fingerprint(load_records(ROWS)) != fingerprint(load_records(ROWS[:-1]))
