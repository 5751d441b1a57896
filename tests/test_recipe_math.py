"""What UNDIAL, IdkDPO and KIF compute, checked by hand on the tiny model: UNDIAL's teacher lowers exactly the
forget token's logit and its loss is the KL to that teacher; IdkDPO's loss is DPO's on (refusal, answer) and
training makes the refusal the likelier answer; KIF's signature is the forget activations' top singular subspace
around the retain mean, and training erases most of its energy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import N_RETAIN, read_jsonl

import unlearn
from unlearn import UnlearnError
from unlearn.data import load_records, pad_rows, tokenize
from unlearn.logprobs import sequence_logps
from unlearn.recipes import recipe_config
from unlearn.recipes.undial import lower_target


def make(recipe, model, tok, rows, tmp_path, **settings):
    args = recipe_config(
        {
            "recipe": recipe,
            "output_dir": str(tmp_path),
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "disable_tqdm": True,
            "seed": 0,
            **settings,
        }
    )
    return unlearn.get_recipe(recipe)(
        model=model, args=args, forget=rows["forget"], retain=rows["retain"], processing_class=tok
    )


def test_undial_teacher_lowers_only_the_target_logit():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 11), torch.tensor([0, 3, 3, 10, 7])
    teacher = lower_target(10.0, logits, targets)
    rows = torch.arange(5)
    torch.testing.assert_close(teacher[rows, targets], logits[rows, targets] - 10.0)
    others = torch.ones_like(logits, dtype=torch.bool)
    others[rows, targets] = False
    torch.testing.assert_close(teacher[others], logits[others])
    # The mass taken from the target goes to the other tokens in proportion to what the model gave them.
    p, q = F.softmax(logits, -1), F.softmax(teacher, -1)
    assert (q[rows, targets] < p[rows, targets] * 1e-3).all()
    ratio = (q[others] / p[others]).view(5, 10)
    torch.testing.assert_close(ratio, ratio[:, :1].expand(5, 10))


def test_undial_loss_is_the_kl_to_the_adjusted_teacher(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    trainer = make(
        "undial",
        copy.deepcopy(model),
        tok,
        {"forget": tofu_rows["forget"][:4], "retain": None},
        tmp_path,
        retain_weight=0.0,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        terms, _ = trainer.loss_terms(trainer.model, batch)
        # By hand, with full logits: at the start the student is the teacher's own model (LoRA's B is zero).
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["loss_labels"][:, 1:]
        mask = targets != -100
        student = F.log_softmax(logits[:, :-1][mask].float(), -1)
        teacher = F.log_softmax(lower_target(10.0, logits[:, :-1][mask], targets[mask]), -1)
        kl = (teacher.exp() * (teacher - student)).sum(-1)
        per_row = torch.zeros(len(targets)).index_add(0, mask.nonzero()[:, 0], kl) / mask.sum(-1)
    torch.testing.assert_close(terms["forget_loss"].value, per_row.mean(), rtol=1e-4, atol=1e-5)
    assert terms["forget_loss"].value > 0


def answer_logps(model, tok, rows):
    return logps_of(model, tok, tokenize(load_records(rows), tok, "qa", 256, "question", "answer", "text"))


def logps_of(model, tok, examples):
    batch = pad_rows(examples, tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["labels"])


def test_idkdpo_starts_at_dpo_loss_and_prefers_the_refusal_after_training(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    trainer = make("idkdpo", copy.deepcopy(model), tok, tofu_rows, tmp_path, learning_rate=1e-2, num_train_epochs=10)
    batch = next(iter(trainer.get_train_dataloader()))
    forget_pass = trainer.split_passes(batch)[0]
    with torch.no_grad():
        terms, _ = trainer.loss_terms(trainer.model, forget_pass)
    # At the start the model is the reference: every log-ratio is 0 and DPO's loss is -(2 / beta) log sigmoid(0).
    torch.testing.assert_close(
        terms["forget_loss"].value, torch.tensor(2.0 / 0.1 * torch.log(torch.tensor(2.0)).item())
    )
    answer_before, _ = answer_logps(model, tok, tofu_rows["forget"])
    refusal_before, _ = logps_of(model, tok, trainer.refusal_examples)
    trainer.train()
    answer_after, _ = answer_logps(trainer.model, tok, tofu_rows["forget"])
    refusal_after, _ = logps_of(trainer.model, tok, trainer.refusal_examples)
    gain = (refusal_after - answer_after) - (refusal_before - answer_before)
    assert (gain > 0).all() and gain.mean() > 20.0, gain  # nats: the refusal gains on the answer, every row


def retain_logps(trainer, tok, refusals):
    """Per retain row: (log p(true answer), log p(its refusal)) under the trainer's model now."""
    answer, _ = answer_logps(trainer.model, tok, [dict(r) for r in trainer.retain_records])
    refusal, _ = logps_of(trainer.model, tok, refusals)
    return answer, refusal


def unseen_retain_pass(model, tok, tofu_rows, out, settings):
    """An IdkDPO trainer whose retain questions the tiny target never learned (their refusal as likely as their
    answer: AP not yet saturated, as for the weakly known neighbor facts on which IdkDPO over-refuses on SmolLM2),
    and the retain pass of its first batch."""
    rows = {"forget": tofu_rows["forget"], "retain": read_jsonl("retain99", 2 * N_RETAIN)[N_RETAIN:]}
    trainer = make("idkdpo", copy.deepcopy(model), tok, rows, out, **settings)
    return rows, trainer, trainer.split_passes(next(iter(trainer.get_train_dataloader())))[1]


def test_answer_preservation_is_its_equation_and_with_the_nll_holds_refusals_back(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    settings = {"learning_rate": 1e-2, "num_train_epochs": 10, "retain_loss": "ap", "split_passes": True}
    rows, trainer, retain_pass = unseen_retain_pass(model, tok, tofu_rows, tmp_path / "ap", settings)
    with torch.no_grad():
        terms, _ = trainer.loss_terms(trainer.model, retain_pass)
    index = retain_pass["index"].tolist()
    answer, _ = answer_logps(model, tok, [dict(trainer.retain_records[i]) for i in index])
    refusal, _ = logps_of(model, tok, [trainer.refusals["retain"][i] for i in index])
    by_hand = -F.logsigmoid(0.1 * (answer - refusal)) / 0.1  # Eq. 8 of arXiv:2410.08109, beta 0.1
    expected = (by_hand * retain_pass["retain_row_weight"]).sum()
    torch.testing.assert_close(terms["retain_loss"].value, expected, rtol=1e-4, atol=1e-5)

    refusals = trainer.refusals["retain"]
    answer_before, refusal_before = retain_logps(trainer, tok, refusals)
    runs = {}
    for kind in ("nll", "nll+ap"):
        other = make("idkdpo", copy.deepcopy(model), tok, rows, tmp_path / kind, **{**settings, "retain_loss": kind})
        other.train()
        runs[kind] = retain_logps(other, tok, refusals)  # the same refusals (same seed and index) in every run
    (answer_nll, refusal_nll), (answer_both, refusal_both) = runs["nll"], runs["nll+ap"]
    # The NLL alone learns the answers while the forget refusal spreads to the retain questions (measured: refusal
    # log-prob -146 -> -104 nats); with AP the answers are learned as well and the refusals pushed back (-> -212).
    assert answer_both.mean() > answer_before.mean() + 5.0
    assert refusal_both.mean() < refusal_nll.mean() - 5.0, (refusal_both.mean(), refusal_nll.mean())
    assert ((answer_both - refusal_both) > (answer_nll - refusal_nll)).float().mean() >= 0.9


def test_kl_plus_ap_is_answer_preservation_plus_the_reference_kl(tiny, tofu_rows, tmp_path):
    """`retain_loss: kl+ap` per retain row: Eq. 8's AP plus KL(reference || model) over the answer tokens, the
    reference being the adapter-disabled model (0 before any step, positive once the adapter moved)."""
    model, tok = tiny
    settings = {"learning_rate": 1e-2, "num_train_epochs": 2, "retain_loss": "kl+ap", "split_passes": True}
    _, trainer, retain_pass = unseen_retain_pass(model, tok, tofu_rows, tmp_path / "klap", settings)

    def terms(kind):
        trainer.args.retain_loss = kind
        with torch.no_grad():
            return trainer.loss_terms(trainer.model, retain_pass)[0]["retain_loss"].value

    torch.testing.assert_close(terms("kl+ap"), terms("ap"), rtol=1e-5, atol=1e-6)  # the model is its reference
    trainer.args.retain_loss = "kl+ap"
    trainer.train()
    ids, mask, labels = (retain_pass[k] for k in ("input_ids", "attention_mask", "loss_labels"))
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        with trainer.model.disable_adapter():
            ref = trainer.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    on = labels[:, 1:] != -100
    kl = (F.softmax(ref, -1) * (F.log_softmax(ref, -1) - F.log_softmax(logits, -1))).sum(-1)
    per_row = (kl * on).sum(1) / on.sum(1)
    expected = (per_row * retain_pass["retain_row_weight"]).sum()
    assert expected > 1e-3
    torch.testing.assert_close(terms("kl+ap") - terms("ap"), expected, rtol=1e-3, atol=1e-5)
    with pytest.raises(UnlearnError, match="needs the reference model"):
        recipe_config({"recipe": "idkdpo", "retain_loss": "kl+ap", "adapter": "none", "output_dir": "x"})
    with pytest.raises(UnlearnError, match="only the refusal recipes"):
        recipe_config({"recipe": "graddiff", "retain_loss": "kl+ap", "output_dir": "x"})


def test_kif_signature_is_the_top_singular_subspace_and_training_erases_it(tiny, tofu_rows, tmp_path):
    model, tok = tiny
    trainer = make(
        "kif",
        copy.deepcopy(model),
        tok,
        tofu_rows,
        tmp_path,
        kif_layer=0,
        kif_rank=4,
        learning_rate=3e-2,
        num_train_epochs=10,
    )
    sig = trainer.signature(trainer.model)
    basis = sig["basis"]
    torch.testing.assert_close(basis.T @ basis, torch.eye(4), atol=1e-4, rtol=0)  # orthonormal
    h_f = trainer._answer_activations(trainer.model, trainer.forget_examples)
    d = h_f - sig["mu_r"]
    captured = ((d @ basis) ** 2).sum()
    # No other 4-dimensional subspace holds more of the forget activations' deviation (here: a random one).
    other, _ = torch.linalg.qr(torch.randn(d.shape[1], 4))
    assert captured > ((d @ other) ** 2).sum()
    trainer.train()
    losses = [r["forget_loss"] for r in trainer.state.log_history if "forget_loss" in r]
    # The fraction of the signature's energy left: about all of it at the start (a batch's share of the forget
    # set's mean), most of it gone at the end.
    assert 0.5 < losses[0] < 1.5 and losses[-1] < 0.3 * losses[0], losses
