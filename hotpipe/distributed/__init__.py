"""Several ranks on torch.distributed: row-wise sharded tables, replicated hot rows,
a data-parallel dense part; the same results as one process.

Modules (import them where used; this package imports nothing heavy):

- ``context``: :class:`DistContext` (rank, world, group, timeout), ``init_from_env``, ``init_tcp``
- ``sharding``: who owns a row (``row % W``), each rank's store
- ``replicas``: hot rows held by every rank
- ``exchange``: rows to requesters, gradients to owners (all-to-all), replica all-reduce
- ``loop``: the distributed training step
- ``run``: ``build_dist_components``, ``train_distributed``
- ``checkpoint``: sharded runs saved and resumed in the single-process format
- ``traffic``: the bytes a trace will move (predicted == measured counters)
- ``launch``: ``train_from_env`` (torchrun)
- ``spawn``: ``run_ranks`` (W local ranks for tests and benchmarks)
"""
