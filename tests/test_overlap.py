"""Held-out prompts checked by content: a planted training caption is found word for word and
in other words, and the novel-order subset is what no training caption asks for."""

import numpy as np

from t2a_lib.world import overlap
from t2a_lib.world.captions import parse_caption

TRAIN = ["a dog barks, then a bell rings", "a siren wails before a dog barks", "rain falls"]


def test_a_test_caption_planted_in_training_is_a_text_leak():
    test = ["A dog barks, then a bell rings.", "a bell rings, then a dog barks"]
    assert overlap.text_leaks(test, TRAIN) == ["A dog barks, then a bell rings."]
    assert overlap.text_leaks(test[1:], TRAIN) == []


def test_the_same_order_in_other_words_is_not_novel():
    reworded = "a dog is barking followed by a bell ringing"  # the grammar's other form of TRAIN[0]
    assert parse_caption(reworded).labels == parse_caption(TRAIN[0]).labels
    assert overlap.order_key(reworded) == overlap.order_key(TRAIN[0])
    test = [reworded, "a bell rings, then a dog barks", "a dog barks after a siren wails", "rain falls"]
    # the second asks for an order no training caption has; "after" is the siren first, as TRAIN[1]
    assert overlap.novel_order(test, TRAIN).tolist() == [False, True, False, False]
    assert not overlap.novel_order(test, TRAIN + ["a bell rings, then a dog barks"]).any()


def test_overlap_report_counts_by_hand():
    test = ["a dog is barking followed by a bell ringing", "a bell rings, then a dog barks", "rain falls"]
    report = overlap.overlap_report(test, TRAIN)
    assert report == {"temporal prompts": 2, "novel order": 1,
                      "rest sharing their whole content with a training caption": 1.0}
    assert np.isnan(overlap.overlap_report(["a bell rings, then a dog barks"], TRAIN)[
        "rest sharing their whole content with a training caption"])
