"""What every recommendation model in hotpipe is, to the code that trains it.

A model is a ``torch.nn.Module`` whose ``forward(dense (B, F), emb (B, T, D))``
returns logits ``(B,)``. The embedding lookups stay outside the model (the
tiers sit under them), so the loop, evaluation, tiering, checkpoints and the
distributed runtime need nothing else of it: DLRM, DCN-v2 and Ad-Rec are
interchangeable there.
"""

from __future__ import annotations

from torch import nn

#: Any module with the forward above (``model.arch=dlrm|dcn|adrec``).
RecModel = nn.Module
