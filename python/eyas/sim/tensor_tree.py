"""Dataclasses of batched tensors (leading batch dimension) that can be indexed, stacked and moved as one."""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence, TypeVar

import torch

TreeT = TypeVar("TreeT", bound="TensorTree")


class TensorTree:
    """Mixin for dataclasses whose fields are tensors `(B, ...)`, nested `TensorTree`s or None.

    Floating-point leaves follow `to(dtype=...)`; bool leaves keep their dtype.
    """

    def map(self: TreeT, fn: Callable[[torch.Tensor], torch.Tensor]) -> TreeT:
        """A copy with `fn` applied to every tensor leaf."""
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                values[f.name] = None
            else:
                values[f.name] = value.map(fn) if isinstance(value, TensorTree) else fn(value)
        return type(self)(**values)

    def leaves(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out.extend(value.leaves() if isinstance(value, TensorTree) else [value])
        return out

    def _first_leaf(self) -> torch.Tensor:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                return value._first_leaf() if isinstance(value, TensorTree) else value
        raise ValueError(f"{type(self).__name__} has no tensors")

    @property
    def batch_size(self) -> int:
        return int(self._first_leaf().shape[0])

    @property
    def device(self) -> torch.device:
        return self._first_leaf().device

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the floating-point leaves (the first leaf is floating point in all eyas trees)."""
        first = self._first_leaf()
        return first.dtype if first.is_floating_point() else next(t.dtype for t in self.leaves() if t.is_floating_point())

    def to(self: TreeT, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TreeT:
        """Move to `device` and cast floating-point leaves to `dtype`."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        return self.map(move)

    def clone(self: TreeT) -> TreeT:
        return self.map(torch.clone)

    def __getitem__(self: TreeT, index) -> TreeT:
        """Index the batch dimension; an integer index keeps a batch dimension of 1."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self.map(lambda t: t[index])

    def expand(self: TreeT, batch_size: int) -> TreeT:
        """Repeat a batch of one to `batch_size` (a copy, safe to modify per row)."""
        if self.batch_size == batch_size:
            return self.clone()
        if self.batch_size != 1:
            raise ValueError(f"cannot expand a batch of {self.batch_size} to {batch_size}; expected a batch of 1")
        return self.map(lambda t: t.expand(batch_size, *t.shape[1:]).clone())

    def assign_(self, index: torch.Tensor, other: "TensorTree") -> None:
        """In place: rows `index` (long indices or bool mask) take the values of `other` (batch = number of rows)."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is None:
                continue
            if isinstance(mine, TensorTree):
                mine.assign_(index, theirs)
            else:
                mine[index] = theirs.to(device=mine.device, dtype=mine.dtype)

    @classmethod
    def cat(cls: type[TreeT], trees: Sequence[TreeT]) -> TreeT:
        """Concatenate along the batch dimension."""
        if not trees:
            raise ValueError("cannot concatenate an empty list")
        first = trees[0]
        values = {}
        for f in dataclasses.fields(first):
            parts = [getattr(t, f.name) for t in trees]
            if any(p is None for p in parts):
                values[f.name] = None
            elif isinstance(parts[0], TensorTree):
                values[f.name] = type(parts[0]).cat(parts)
            else:
                values[f.name] = torch.cat([p.to(device=parts[0].device, dtype=parts[0].dtype) for p in parts])
        return type(first)(**values)
