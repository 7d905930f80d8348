"""Turning rows into training examples: the loss sees only what the model should produce."""

from __future__ import annotations

import pytest

from corral.train.examples import IGNORE, collate, encode, micro_batch_indices
from corral.train.loop import lr_at
from corral.train.spec import TrainSpec


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def targets(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE])


def test_chat_rows_train_only_on_assistant_turns_in_the_models_own_template(tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "hi there"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "see you"},
        ]
    }
    example = encode(row, "chat", tokenizer, 512)
    assert targets(tokenizer, example) == "hello<|im_end|>\nsee you<|im_end|>\n"
    full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert tokenizer.decode(example.input_ids) == full


def test_prompt_completion_rows_mask_the_prompt_and_end_with_eos(tokenizer):
    example = encode({"prompt": "2+2=", "completion": "4"}, "prompt_completion", tokenizer, 512)
    assert targets(tokenizer, example) == "4" + tokenizer.eos_token


def test_classification_rows_train_the_label_as_the_chat_answer_to_the_text(tokenizer):
    example = encode(
        {"text": "my card was charged twice", "label": "billing"}, "classification", tokenizer, 512
    )
    assert targets(tokenizer, example) == "billing<|im_end|>\n"
    messages = [
        {"role": "user", "content": "my card was charged twice"},
        {"role": "assistant", "content": "billing"},
    ]
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)


def test_rows_whose_targets_fall_past_max_len_are_skipped(tokenizer):
    row = {"prompt": "a long prompt " * 20, "completion": "x"}
    assert encode(row, "prompt_completion", tokenizer, 8) is None


def test_padding_is_masked_out_of_attention_and_loss(tokenizer):
    a = encode({"prompt": "a", "completion": "b"}, "prompt_completion", tokenizer, 64)
    b = encode({"prompt": "a longer prompt", "completion": "b"}, "prompt_completion", tokenizer, 64)
    batch = collate([a, b], pad_id=0)
    assert batch["attention_mask"][0].sum() == len(a.input_ids)
    assert (batch["labels"][0, len(a.input_ids) :] == IGNORE).all()


def test_ranks_split_the_same_global_batch_and_epochs_cover_every_example():
    single = micro_batch_indices(3, 50, 8, 1, 0, seed=1)
    ranks = micro_batch_indices(3, 50, 4, 2, 0, seed=1) + micro_batch_indices(3, 50, 4, 2, 1, seed=1)
    assert ranks == single
    epoch = [i for c in range(50 // 5) for i in micro_batch_indices(c, 50, 5, 1, 0, seed=1)]
    assert sorted(epoch) == list(range(50))
    assert micro_batch_indices(3, 50, 8, 1, 0, seed=1) == single


def test_schedule_warms_up_then_decays_to_the_floor():
    spec = TrainSpec(output="o", base="b@1", dataset="d@1", lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(s, spec, 20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("lora", [False, True])
def test_loss_scores_only_target_positions_and_matches_scoring_every_position(tmp_path, arch, lora):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from corral.testing.tiny_models import make_tiny_model
    from corral.train.loop import token_loss_sum
    from corral.train.model import add_lora
    from corral.train.spec import LoraSpec

    path = make_tiny_model(tmp_path / arch, arch)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    if lora:
        names = ["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"]
        model = add_lora(model, LoraSpec(target_modules=names))
    rows = [{"prompt": "a", "completion": "b c"}, {"prompt": "a much longer prompt", "completion": "d"}]
    batch = collate([encode(r, "prompt_completion", tok, 64) for r in rows], int(tok.pad_token_id or 0))

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        return out

    ours = token_loss_sum(model, batch)
    ours.backward()
    ours_grads = grads()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    full = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="sum")
    full.backward()
    assert ours.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(ours_grads, grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert not model.get_output_embeddings()._forward_pre_hooks  # the hook never outlives the call
