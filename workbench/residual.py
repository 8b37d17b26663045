"""The residual stream's layout in a block's output, read from the model itself.

Most models pass [B, T, D] between blocks. Some carry several streams: DeepSeek-V4's and HY-V4's
hyper-connections give [B, T, n, D], Gemma 3n's AltUp [n, B, T, D], XLNet puts tokens first [T, B, D].
Recording, directions and steering work on the whole residual (all streams, flattened to one vector per token),
so they need to know which axes are batch and tokens; a short probe forward finds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.errors import WorkbenchError

PROBE_TOKENS = 7  # a length no model uses as a stream count or width, so the token axis is unambiguous


class StopForward(Exception):
    """Raised by a forward hook once everything it needs has run: the rest of the forward is skipped."""


@dataclass(frozen=True)
class ResidualLayout:
    """Where a block's output keeps batch and tokens, and the shape of the residual at one token."""

    batch_axis: int
    token_axis: int
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """Entries of the residual at one token: the length of recorded vectors, directions and steering vectors."""
        return math.prod(self.shape)

    def view(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, *shape], a view of the block output: writes into it reach the model."""
        return hidden.movedim((self.batch_axis, self.token_axis), (0, 1))

    def rows(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, width]: one flat vector per token."""
        view = self.view(hidden)
        return view.reshape(*view.shape[:2], self.width)

    def tokens_first(self, value: torch.Tensor) -> torch.Tensor:
        """A sub-module's output with batch and tokens moved first, where the model keeps them where its blocks
        do (XLNet's [T, B, D] attention and MLP outputs); other outputs as they are."""
        if value.dim() == len(self.shape) + 2 and (self.batch_axis, self.token_axis) != (0, 1):
            return value.movedim((self.batch_axis, self.token_axis), (0, 1))
        return value

    def unflatten(self, vector: torch.Tensor) -> torch.Tensor:
        """A flat width-long vector in the residual's own shape, to add to `view(hidden)`."""
        return vector.reshape(self.shape)

    @classmethod
    def from_shape(cls, shape: tuple[int, ...], batch: int, tokens: int) -> ResidualLayout:
        """The layout of a block output of `shape` for inputs of [batch, tokens]: the token axis is the one axis
        of that length, the batch axis the nearest axis of the batch's length."""
        token_axes = [axis for axis, size in enumerate(shape) if size == tokens]
        batch_axes = [axis for axis in (t + step for t in token_axes for step in (-1, 1))
                      if 0 <= axis < len(shape) and shape[axis] == batch]
        if len(token_axes) != 1 or not batch_axes:
            raise WorkbenchError(f"a block's output has shape {tuple(shape)} for inputs of {(batch, tokens)}: no "
                                 "single batch and token axis, so its residual stream cannot be read per token")
        token_axis, batch_axis = token_axes[0], batch_axes[0]
        return cls(batch_axis, token_axis, tuple(s for axis, s in enumerate(shape)
                                                 if axis not in (batch_axis, token_axis)))


def hidden_of(output):
    """A block's hidden states from its output: the tensor itself, or the first item where the block returns a
    tuple or list (BLOOM and Falcon return the attention weights beside it, OpenAI GPT a list)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def probe_layout(hf: torch.nn.Module, block: torch.nn.Module, device: torch.device, token_id: int
                 ) -> ResidualLayout:
    """The residual layout of `block`'s output on a [1, PROBE_TOKENS] input, the forward stopped right after it."""
    shapes = []

    def hook(module, args, output):
        shapes.append(tuple(hidden_of(output).shape))
        raise StopForward

    ids = torch.full((1, PROBE_TOKENS), token_id, dtype=torch.long, device=device)
    handle = block.register_forward_hook(hook)
    try:
        with torch.no_grad():
            hf(input_ids=ids, attention_mask=torch.ones_like(ids))
    except StopForward:
        pass
    finally:
        handle.remove()
    if not shapes:
        raise WorkbenchError(f"{type(block).__name__}, the first block, never ran on a text input, so the "
                             "residual stream's layout cannot be read")
    return ResidualLayout.from_shape(shapes[0], 1, PROBE_TOKENS)
