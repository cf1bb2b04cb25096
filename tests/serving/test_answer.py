"""The one answer type and the one path check: what the engine makes is what the client reads."""

import pytest
import torch

from marketplace.serving import Answer, RequestError, check_paths


def test_an_answer_is_cut_per_request_and_survives_json():
    logits = torch.randn(5, 3)
    answer = Answer([10, 11, 12, 13, 14], torch.arange(10).reshape(5, 2), 7, logits=logits)
    part = answer[1:3]
    assert part.ids == [11, 12] and torch.equal(part.logits, logits[1:3]) and len(part) == 2
    torch.testing.assert_close(part.probabilities, torch.softmax(logits[1:3], -1))
    read = Answer.from_json(part.to_json())
    assert read.ids == [11, 12] and read.step == 7 and read.logits is None
    assert torch.equal(read.paths, part.paths) and torch.equal(read.classes, part.classes)
    assert torch.equal(read.probabilities, part.probabilities)


def test_an_answer_without_learning_has_no_ids():
    answer = Answer(None, torch.zeros(2, 1, dtype=torch.int64), 0, logits=torch.zeros(2, 4))
    assert answer[0:1].ids is None and [r["id"] for r in answer.to_json()["predictions"]] == [None, None]


def test_paths_are_checked_once_from_lists_or_tensors():
    counts = (2, 3)
    assert torch.equal(check_paths([[1, 2], [0, 0]], counts, 2), torch.tensor([[1, 2], [0, 0]]))
    assert check_paths(torch.tensor([[1, 2]]), counts, 1).dtype == torch.int64
    for paths, n, hint in (([[0, 0], [0]], 2, "record 1: a path needs 2 vendors"),
                           ([[0, 3]], 1, "record 0: path [0, 3] names vendors outside the market [2, 3]"),
                           ([[-1, 0]], 1, "outside the market"), ([[0, 0]], 2, "2 records need 2 paths")):
        with pytest.raises(RequestError, match=hint.replace("[", r"\[").replace("]", r"\]")) as info:
            check_paths(paths, counts, n)
        assert info.value.status == 422
