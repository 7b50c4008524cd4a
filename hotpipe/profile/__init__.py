"""profile/: know before you train (issue #4).

Two questions answered without training:

- *What do the accesses look like?* :func:`profile_dataset` measures skew,
  the hot set per memory budget, FAE's hot samples, reuse distances and
  drift, with bounded-memory sketches (:mod:`.sketch`) for big tables;
  :func:`write_profile_report` renders JSON, Markdown and plots.
- *How fast will a configuration train?* :func:`predict` prices the rows the
  real planner moves (:func:`trace_movement`) with this machine's measured
  rates (:func:`calibrate`, :class:`Hardware`) through a replay of the tiered
  pipeline; :func:`search` ranks the configurations that fit a memory budget.

Layout: sketch/counters/reuse/hotset -> profiler -> report (the profile);
hardware/fit/calibrate, movement, pipeline -> costmodel -> ranks, search (the plan).
"""

from hotpipe.profile.calibrate import CalibrationSpec, calibrate
from hotpipe.profile.costmodel import Candidate, Prediction, Workload, predict, workload_from_config
from hotpipe.profile.hardware import Hardware
from hotpipe.profile.movement import StepTrace, TrainTrace, trace_movement
from hotpipe.profile.profiler import ProfileSettings, profile_dataset
from hotpipe.profile.report import write_profile_report
from hotpipe.profile.search import SearchSpace, search
from hotpipe.profile.sketch import CountMinSketch, MisraGries

__all__ = [
    "CalibrationSpec",
    "Candidate",
    "CountMinSketch",
    "Hardware",
    "MisraGries",
    "Prediction",
    "ProfileSettings",
    "SearchSpace",
    "StepTrace",
    "TrainTrace",
    "Workload",
    "calibrate",
    "predict",
    "profile_dataset",
    "search",
    "trace_movement",
    "workload_from_config",
    "write_profile_report",
]
