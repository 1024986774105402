"""One replicate of a study, whatever its kind: what a Dask worker runs (:func:`run_task`)."""

from __future__ import annotations

from emvsbayes.errors import LikelihoodDecreasedError


#: study kind -> (module, function) computing one replicate's record.
RUNNERS = {"coverage": ("emvsbayes.study.replicate", "run_coverage_replicate"),
           "sbc": ("emvsbayes.study.sbc", "run_sbc_replicate")}


def runner(kind: str):
    """The function computing one replicate of a ``kind`` study. Imported when a worker first runs a task,
    not when the client refers to :func:`run_task` to submit it (the client needs none of it), and only
    the kind's own module (SBC's brings SciPy's stats, which a coverage replicate does not need)."""
    import importlib

    module, name = RUNNERS[kind]
    return getattr(importlib.import_module(module), name)


def run_task(spec: dict, cell_index: int, replicate: int, cell: dict) -> dict:
    """One replicate as a record; a replicate that raises becomes a record of its error.

    ``LikelihoodDecreasedError`` is a bug in an EM step, so it is recorded too (and shows in the report)
    rather than stopping the other replicates.
    """
    from emvsbayes.study.replicate import record

    try:
        return runner(spec["kind"])(spec, cell_index, replicate, cell)
    except (Exception, LikelihoodDecreasedError) as error:  # noqa: BLE001 - recorded, the study goes on
        message = f"{type(error).__name__}: {error}".replace("\n", " ")[:500]
        return record(cell_index, replicate, error=message)
