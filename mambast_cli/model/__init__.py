"""The Mamba-ST network (pure nn.Modules, no I/O) and its weights format."""
from .mambast import (
    ContentState,
    MambaST,
    MambaSTConfig,
    StyleBlockTensors,
    StyleState,
    block_generator,
    style_token_indices,
    tiny_config,
)

__all__ = [
    "ContentState", "MambaST", "MambaSTConfig", "StyleBlockTensors", "StyleState",
    "block_generator", "style_token_indices", "tiny_config",
]
