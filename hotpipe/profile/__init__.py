"""profile/: what the dataset's embedding accesses look like, before training.

:func:`profile_dataset` measures skew, the hot set per memory budget, FAE's
hot samples, reuse distances and drift, with bounded-memory sketches
(:mod:`.sketch`) for big tables; :func:`write_profile_report` renders JSON,
Markdown and plots. How fast a configuration will train is the placement
stage's question (``hotpipe/placement/``).

Layout: sketch/counters/reuse/hotset -> profiler -> report.
"""

from hotpipe.profile.profiler import ProfileSettings, profile_dataset
from hotpipe.profile.report import write_profile_report
from hotpipe.profile.sketch import CountMinSketch, MisraGries

__all__ = ["CountMinSketch", "MisraGries", "ProfileSettings", "profile_dataset",
           "write_profile_report"]
