"""Named access to a checkpoint's tensors with the errors a user can act on."""

from __future__ import annotations

import torch
from torch import Tensor

from corral.errors import InvalidInputError


class WeightSource:
    """Tensors by name, moved to the target device and dtype; prefixes such as `model.` are ignored."""

    def __init__(
        self,
        weights: dict[str, Tensor],
        device: torch.device,
        dtype: torch.dtype,
        strip: tuple[str, ...] = (),
    ) -> None:
        self.device, self.dtype = device, dtype
        self.tensors: dict[str, Tensor] = {}
        for name, tensor in weights.items():
            for prefix in strip:
                name = name.removeprefix(prefix)
            self.tensors[name] = tensor

    def optional(self, name: str, transpose: bool = False) -> Tensor | None:
        tensor = self.tensors.get(name)
        if tensor is None:
            return None
        if transpose:
            tensor = tensor.t()
        return tensor.to(device=self.device, dtype=self.dtype).contiguous()

    def get(self, name: str, transpose: bool = False) -> Tensor:
        tensor = self.optional(name, transpose)
        if tensor is None:
            raise InvalidInputError(
                f"the checkpoint has no tensor '{name}'", hint="is config.json for these weights?"
            )
        return tensor

    def cat(self, names: list[str]) -> Tensor:
        return torch.cat([self.get(n) for n in names], dim=0)

    def cat_optional(self, names: list[str]) -> Tensor | None:
        present = [n for n in names if n in self.tensors]
        if not present:
            return None
        return self.cat(names)
