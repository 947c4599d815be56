"""Length buckets (`ptm.tasks.batching.length_buckets`, ``runtime.padding``): the few fixed
widths a GPU pads fine-tuning and evaluation batches to, so compiled and CUDA graphs are reused —
and the proof that the extra padding changes nothing a run computes: the logits of every real
position and the losses of a batch padded to its longest and to a bucket agree to 1e-6 in fp32,
for a [CLS] head, a mean-pooling head and a token head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptm.errors import InputError
from ptm.models.heads import HeadConfig, TaskModel, build_head, load_encoder
from ptm.tasks.batching import collate, length_buckets, padded_width
from ptm.tasks.inference import logits_batches
from ptm.tasks.kinds import Classification, Tokens
from ptm.tasks.splits import IGNORE, Split
from ptm.training.runtime import pads_to_buckets
from tests.finetune_helpers import tiny_model_dir

PAD = 0


def test_buckets_are_powers_of_two_up_to_the_longest_allowed() -> None:
    assert length_buckets(256) == (32, 64, 128, 256)
    assert length_buckets(200) == (32, 64, 128, 200)  # never past the model's positions
    assert length_buckets(32) == (32,)
    assert length_buckets(20) == (20,)
    assert length_buckets(64, smallest=16) == (16, 32, 64)
    with pytest.raises(ValueError, match="max_len=0"):
        length_buckets(0)


def test_a_batch_takes_the_smallest_bucket_that_holds_its_longest_example() -> None:
    buckets = length_buckets(128)
    assert [padded_width(n, 8, buckets) for n in (1, 32, 33, 64, 65, 128)] == [
        32, 32, 64, 64, 128, 128,
    ]  # fmt: skip
    assert padded_width(130, 8, buckets) == 136  # longer than every bucket: as without them
    assert [padded_width(n, 8) for n in (1, 9, 33)] == [8, 16, 40]  # no buckets: as before
    assert padded_width(33) == 33


def test_the_default_pads_to_buckets_on_gpus_only_and_a_misspelt_setting_is_one_line() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [pads_to_buckets("auto", d) for d in (cpu, cuda)] == [False, True]
    assert [pads_to_buckets("buckets", d) for d in (cpu, cuda)] == [True, True]
    assert [pads_to_buckets("longest", d) for d in (cpu, cuda)] == [False, False]
    with pytest.raises(InputError, match=r"runtime.padding='bucket' is unknown.*buckets"):
        pads_to_buckets("bucket", cpu)


def split_of(lengths: list[int], seed: int = 0) -> Split:
    """Examples of the given lengths framed by [CLS] (2) ... [SEP] (3), with a class label and
    a tag per position (IGNORE on the frame), the second text starting halfway."""
    rng = np.random.default_rng(seed)
    ids = [np.array([2, *rng.integers(5, 60, n - 2), 3], np.int32) for n in lengths]
    tags = [np.array([IGNORE, *rng.integers(0, 3, n - 2), IGNORE], np.int64) for n in lengths]
    n = len(lengths)
    rows = np.arange(n)
    return Split(
        "train", Path("train.csv"), ids, np.array(lengths) // 2, rows, rows + 2,
        labels=rng.integers(0, 2, n), tags=tags,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TaskModel:
    folder = tiny_model_dir(tmp_path_factory.mktemp("model"), max_positions=128)
    torch.manual_seed(0)
    encoder = load_encoder(folder, pretrained=True, with_pooler=False)
    heads = {
        "cls": build_head("sequence", encoder.config, 2, HeadConfig(pooling="cls", dropout=0.0)),
        "mean": build_head("sequence", encoder.config, 2, HeadConfig(pooling="mean", dropout=0.0)),
        "tags": build_head("token", encoder.config, 3, HeadConfig(pooling="cls", dropout=0.0)),
    }
    return TaskModel(encoder, heads).eval()


@pytest.mark.parametrize("head", ["cls", "mean", "tags"])
def test_padding_to_a_bucket_changes_no_logit_and_no_loss(model: TaskModel, head: str) -> None:
    split = split_of([7, 19, 30, 12])
    idx = np.arange(len(split))
    longest = collate(split, idx, PAD)
    bucketed = collate(split, idx, PAD, buckets=length_buckets(128))
    assert longest["input_ids"].shape == (4, 30) and bucketed["input_ids"].shape == (4, 32)
    kind = Tokens() if head == "tags" else Classification()
    if head != "tags":
        for batch in (longest, bucketed):
            batch["labels"] = torch.from_numpy(split.labels.astype(np.int64))
    with torch.no_grad():
        results = []
        for batch in (longest, bucketed):
            batch = dict(batch)
            labels = batch.pop("labels")
            logits = model(head, **batch)
            results.append((logits, kind.loss_sum(logits, labels)))
    (a, loss_a), (b, loss_b) = results
    if head == "tags":  # every real position's tag logits; the padding's are never read
        b = b[:, : a.shape[1]]
        real = longest["attention_mask"].bool()
        a, b = a[real], b[real]
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)


def test_bucketed_evaluation_gives_the_logits_of_evaluation_padded_to_the_longest(
    model: TaskModel,
) -> None:
    split = split_of([5, 40, 9, 70, 33, 12, 64, 21], seed=1)
    cpu = torch.device("cpu")

    def run(padding: str) -> tuple[dict[int, torch.Tensor], list[int]]:
        out, widths = {}, []
        for idx, logits, _, mask in logits_batches(
            model, "cls", split, cpu, "fp32", 3, PAD, padding=padding
        ):
            widths.append(mask.shape[1])
            out.update({int(i): row for i, row in zip(idx, logits, strict=True)})
        return out, widths

    (longest, long_widths), (bucketed, bucket_widths) = run("auto"), run("buckets")
    assert long_widths == [70, 33, 9]  # auto on a CPU: each batch's longest, as before
    assert bucket_widths == [70, 64, 32]  # buckets of the split's longest (70): 32, 64, 70
    for i in range(len(split)):
        torch.testing.assert_close(bucketed[i], longest[i], rtol=1e-6, atol=1e-6)
    assert model.training is False  # restored as it was
