"""FLuID: federated learning where stragglers train a sub-model of invariant neurons.

The core (groups, invariance, dropout, sub-model extraction, masked
aggregation, profiling, the simulator) needs only torch; the Flower
integration lives in :mod:`hotpipe.fl.flower` and needs the ``fl`` extra.
Nothing here imports the rest of hotpipe except :mod:`hotpipe.errors`.
"""

from hotpipe.fl.aggregate import fedavg, masked_average
from hotpipe.fl.dropout import METHODS, plan_submodel
from hotpipe.fl.errors import ClientFailedError, FLError, SubModelShapeError
from hotpipe.fl.groups import NeuronGroup, Tie
from hotpipe.fl.invariance import ThresholdConfig, invariant_neurons
from hotpipe.fl.models import CNNSpec, LSTMSpec, MLPSpec
from hotpipe.fl.profiling import StragglerProfiler, r_for_ratio
from hotpipe.fl.server import ClientUpdate, FluidConfig, FluidServer
from hotpipe.fl.simulator import SimConfig, simulate
from hotpipe.fl.submodel import expand, extract
from hotpipe.fl.tasks import load_task

__all__ = [
    "METHODS", "CNNSpec", "ClientFailedError", "ClientUpdate", "FLError", "FluidConfig",
    "FluidServer", "LSTMSpec", "MLPSpec", "NeuronGroup", "SimConfig", "StragglerProfiler",
    "SubModelShapeError", "ThresholdConfig", "Tie", "expand", "extract", "fedavg",
    "invariant_neurons", "load_task", "masked_average", "plan_submodel", "r_for_ratio",
    "simulate",
]
