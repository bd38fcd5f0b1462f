"""simulations.runner.SeededStream: a peer's random stream kept as seed + words drawn
gives exactly what one ``random.Random`` of that seed would."""

import random

import pytest

from simulations.runner import SeededStream


def test_draws_match_one_random_of_the_same_seed() -> None:
    for seed in (0, 1, 2**64 - 1, 123456789):
        stream, reference = SeededStream(seed), random.Random(seed)
        for kind, size in [("bits", 64), ("bytes", 16), ("bits", 32), ("bits", 64),
                           ("bytes", 4), ("bits", 256)]:
            if kind == "bits":
                assert stream.getrandbits(size) == reference.getrandbits(size)
            else:
                assert stream.randbytes(size) == reference.randbytes(size)


def test_partial_words_are_refused() -> None:
    with pytest.raises(ValueError):
        SeededStream(1).getrandbits(40)
    with pytest.raises(ValueError):
        SeededStream(1).randbytes(3)
