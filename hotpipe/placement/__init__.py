"""placement/: where rows should live, and how fast a placement will train (SCARS's idea).

:func:`predict` prices the rows the real planner moves (:func:`trace_movement`
over the run's :class:`~hotpipe.data.loader.TrainTrace`) with this machine's
measured rates (:func:`calibrate`, :class:`Hardware`) through a replay of
the tiered pipeline; :func:`search` ranks the configurations that fit a
memory budget (``hotpipe plan``); :mod:`.ranks` models several workers.

Layout: hardware/fit/calibrate, movement, pipeline -> costmodel -> ranks, search.
"""

from hotpipe.placement.calibrate import CalibrationSpec, calibrate
from hotpipe.placement.costmodel import (
           Candidate,
           Prediction,
           Workload,
           predict,
           workload_from_config,
)
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.search import SearchSpace, search
from hotpipe.plan.movement import StepTrace, trace_movement

__all__ = ["CalibrationSpec", "Candidate", "Hardware", "Prediction", "SearchSpace", "StepTrace",
           "Workload", "calibrate", "predict", "search", "trace_movement", "workload_from_config"]
