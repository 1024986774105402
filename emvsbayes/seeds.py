"""One seed scheme for runs and studies: a master seed spawned (``numpy.random.SeedSequence``) into one
independent child per stage, so adding a stage at the end, or drawing more in one stage, leaves every
other stage's stream as it was."""

from __future__ import annotations

import numpy as np

#: stages of a run that get their own child seed, in spawn order (a new stage goes at the end)
SEED_STAGES = ("em", "sampler", "bootstrap", "data", "ladder", "lrt", "sparse")


def int_seed(seq: np.random.SeedSequence) -> int:
    """A 32-bit integer seed from a seed sequence (for samplers that take an integer)."""
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def stage_seeds(root: np.random.SeedSequence, stages: tuple[str, ...] = SEED_STAGES) -> dict[str, np.random.SeedSequence]:
    """One child seed sequence of ``root`` per stage, in the order of ``stages``."""
    return dict(zip(stages, root.spawn(len(stages))))


def child_seeds(seed: int) -> dict[str, int]:
    """One independent integer seed per stage of a run, derived from the master seed."""
    return {stage: int_seed(child) for stage, child in stage_seeds(np.random.SeedSequence(seed)).items()}
