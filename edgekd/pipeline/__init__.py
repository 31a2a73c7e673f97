"""``compress``: plan → distill → quantize → export → validate, each stage resumable on its own.

- :mod:`~edgekd.pipeline.context`: what a run loads once (config, folder, data, teachers).
- :mod:`~edgekd.pipeline.planning`: ``plan``, every input checked before anything is written.
- :mod:`~edgekd.pipeline.training`, :mod:`~edgekd.pipeline.exporting`,
  :mod:`~edgekd.pipeline.validating`: the stages.
- :mod:`~edgekd.pipeline.stages`: the stage table: each stage's files, whether it is done.
- :mod:`~edgekd.pipeline.running`: ``compress``, one stage on a run folder.
"""

from edgekd.pipeline.context import Context, count_macs, count_params
from edgekd.pipeline.exporting import PARITY_SAMPLES, export
from edgekd.pipeline.planning import input_fingerprints, plan
from edgekd.pipeline.running import compress, open_run, run_in, run_stage
from edgekd.pipeline.stages import (
    FIRST_STAGE,
    PLANNED,
    STAGES,
    TRAINING,
    Stage,
    stage_done,
    stage_started,
)
from edgekd.pipeline.training import distill, quantize
from edgekd.pipeline.validating import validate

__all__ = [
    "FIRST_STAGE",
    "PARITY_SAMPLES",
    "PLANNED",
    "STAGES",
    "TRAINING",
    "Context",
    "Stage",
    "compress",
    "count_macs",
    "count_params",
    "distill",
    "export",
    "input_fingerprints",
    "open_run",
    "plan",
    "quantize",
    "run_in",
    "run_stage",
    "stage_done",
    "stage_started",
    "validate",
]
