"""Parity rules: top-1 agreement per position of sequence logits, and the KL rule for unlabelled int8."""

from __future__ import annotations

import numpy as np

from edgekit.verify import ReferenceData, compare, tolerance_for


def _reference(logits: np.ndarray, labels=None) -> ReferenceData:
    return ReferenceData([(np.zeros(1, np.float32),) for _ in logits], [[x] for x in logits], labels, "test")


def test_top1_agreement_counts_every_position_of_sequence_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 1, 4, 8)).astype(np.float32) * 3  # 2 samples × 4 positions × 8 classes
    flipped = logits.copy()
    flipped[0, 0, 1] = -flipped[0, 0, 1]  # one position's distribution mirrored: its arg-max moves
    outputs = iter(flipped)
    result = compare(lambda _: [next(outputs)], _reference(logits), tolerance_for("int8"), "test")
    assert result["top1_agreement"] == 7 / 8  # not 1/2 (one arg-max over the whole (L × classes) array)


def test_unlabelled_int8_passes_on_small_kl_and_fails_on_large():
    rng = np.random.default_rng(1)
    logits = np.zeros((50, 1, 256), np.float32)
    logits[:, 0, :2] = 5.0, 5.0001  # two near-tied favourites: the artifact's arg-max is a coin toss
    nudged = logits + rng.normal(0, 1e-3, logits.shape).astype(np.float32)
    outputs = iter(nudged)
    result = compare(lambda _: [next(outputs)], _reference(logits), tolerance_for("int8"), "test")
    assert result["top1_agreement"] < 0.98 and result["mean_kl_bits"] < 1e-4 and result["status"] == "passed"
    wrong = rng.normal(0, 3, logits.shape).astype(np.float32)
    outputs = iter(wrong)
    result = compare(lambda _: [next(outputs)], _reference(logits), tolerance_for("int8"), "test")
    assert result["mean_kl_bits"] > 0.05 and result["status"] == "failed"
    labelled = compare(lambda _: [next(iter(nudged))], _reference(logits, np.zeros(50, int)), tolerance_for("int8"), "t")
    assert "mean_kl_bits" in labelled  # reported, but a classifier is judged by top-1 and accuracy
