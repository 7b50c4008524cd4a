"""Interoperation with other recommendation libraries (an optional extra).

TorchRec (``pip install hotpipe[torchrec]`` plus ``torchrec`` itself with
``--no-deps``, see README): ``KeyedJaggedTensor`` input to the embedding
lookup (``kjt.py``), ``EmbeddingBagCollection`` state dicts out of and into
feeds and run checkpoints (``ebc_state.py``, ``runs.py``). Nothing here
imports TorchRec: the inputs are read through their public interface and the
state dicts are plain tensors, so hotpipe works with or without it.
"""
