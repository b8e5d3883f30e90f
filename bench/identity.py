"""A target's identity in model-cache keys, derived from its public state.

A trained model is only valid for the distribution it was trained on, so the
cache key contains the target's :meth:`~bench.contracts.Target.fingerprint`.
By default that is the target's name, dimension and a SHA-256 digest of its
*public state*: every instance attribute and every public data attribute of
its class (and of its base classes below :class:`~bench.contracts.Target`)
whose name does not start with ``_``, except ``description``,
``metric_specs`` and ``in_default_run``, which do not change the distribution.  Change a mean, a
weight or a grid size and every model trained on the target gets a new id.

What can be hashed (recursively): ``None``, bools, ints, floats, complex
numbers, strings, bytes, numpy scalars, tensors (dtype, shape and bytes),
numpy arrays, lists, tuples, dicts, sets, dataclass instances, enums, paths,
compiled regexes, ``torch.dtype``/``torch.device`` and ``nn.Module`` instances (their
``state_dict`` and the public attributes of every submodule).  Anything else
(a function, a generator, an open file, an arbitrary object) cannot be hashed
into an identity: make the attribute private (prefix ``_``) if it does not
change the distribution, or override ``fingerprint()``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import numbers
import re
import types
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch

from bench.errors import PluginError

if TYPE_CHECKING:
    from bench.contracts import Target

#: Public attributes that describe a target without changing its distribution.
EXCLUDED_ATTRIBUTES = frozenset({"description", "metric_specs", "in_default_run"})


class UnhashableStateError(PluginError):
    """A target's public attribute cannot be hashed into its cache identity.

    Attributes:
        target: The target's name.
        attribute: Where the value sits, e.g. ``"params['mean']"``.
    """

    def __init__(self, target: str, attribute: str, reason: str) -> None:
        super().__init__(
            f"target {target!r}: attribute {attribute!r} cannot be hashed into the model-cache identity "
            f"({reason}); make it a tensor, array, number, string or container of those, prefix it with '_' "
            f"if it does not change the distribution, or override Target.fingerprint()"
        )
        self.target, self.attribute = target, attribute


class _Unhashable(Exception):
    """Internal: carries the path of the value that could not be hashed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


def _is_data(value: object) -> bool:
    """Whether a class attribute is data (not a method, property, nested class, module or built-in function)."""
    return not (
        isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType, np.ufunc))  # e.g. torch.tanh, np.sin
        or hasattr(type(value), "__get__")  # functions, descriptors
    )


def public_state(target: "Target") -> dict[str, Any]:
    """The attributes that define ``target``'s distribution, by name.

    Public data attributes of the target's classes (from :class:`Target`'s
    subclasses, base first), then its instance attributes, which win; names
    starting with ``_`` and :data:`EXCLUDED_ATTRIBUTES` are left out.
    """
    from bench.contracts import Target

    state: dict[str, Any] = {}
    for cls in reversed(type(target).__mro__):
        if not issubclass(cls, Target) or cls is Target:
            continue
        state.update({k: v for k, v in vars(cls).items() if not k.startswith("_") and _is_data(v)})
    state.update(vars(target))
    return {k: v for k, v in state.items() if not k.startswith("_") and k not in EXCLUDED_ATTRIBUTES}


def _sha(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.digest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    # Raw bytes through a uint8 view: works for every strided dtype, bfloat16 included.
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _digest(value: Any, path: str, active: set[int]) -> bytes:
    """SHA-256 of a canonical encoding of ``value``; lists and tuples hash alike, as in JSON.

    Raises:
        _Unhashable: ``value`` or something inside it cannot be hashed (with its path).
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        return _sha(b"const", repr(None if value is None else bool(value)).encode())
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        item = value.item()  # a numpy number hashes as the Python number it equals
        return _digest(np.asarray(value) if isinstance(item, np.generic) else item, path, active)
    if isinstance(value, numbers.Integral):
        return _sha(b"int", str(int(value)).encode())
    if isinstance(value, float):
        return _sha(b"float", value.hex().encode())
    if isinstance(value, complex):
        return _sha(b"complex", value.real.hex().encode(), value.imag.hex().encode())
    if isinstance(value, str):
        return _sha(b"str", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray)):
        return _sha(b"bytes", bytes(value))
    if isinstance(value, (torch.dtype, torch.device, PurePath)):
        return _sha(b"text", type(value).__name__.encode(), str(value).encode())
    if isinstance(value, re.Pattern):
        return _sha(b"regex", _digest(value.pattern, path, active), str(value.flags).encode())
    if isinstance(value, enum.Enum):
        return _sha(b"enum", type(value).__qualname__.encode(), _digest(value.value, f"{path}.value", active))
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized or value.device.type == "meta":
            raise _Unhashable(path, f"a {value.layout} {'quantized ' if value.is_quantized else ''}tensor "
                                    f"on {value.device.type}; only dense tensors with data can be hashed")
        return _sha(b"tensor", str(value.dtype).encode(), repr(tuple(value.shape)).encode(), _tensor_bytes(value))
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return _sha(b"objects", repr(value.shape).encode(), _digest(value.tolist(), path, active))
        array = np.ascontiguousarray(value)
        return _sha(b"array", array.dtype.str.encode(), repr(array.shape).encode(), array.tobytes())

    if id(value) in active:
        raise _Unhashable(path, "it refers to itself")
    active.add(id(value))
    try:
        return _container_digest(value, path, active)
    finally:
        active.discard(id(value))


def _container_digest(value: Any, path: str, active: set[int]) -> bytes:
    if isinstance(value, Mapping):
        items = sorted(
            (_digest(k, f"{path} key", active), _digest(v, f"{path}[{k!r}]", active)) for k, v in value.items()
        )
        return _sha(b"mapping", *(part for item in items for part in item))
    if isinstance(value, (list, tuple)):
        return _sha(b"sequence", *(_digest(v, f"{path}[{i}]", active) for i, v in enumerate(value)))
    if isinstance(value, (set, frozenset)):
        return _sha(b"set", *sorted(_digest(v, f"{path} element", active) for v in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _sha(b"dataclass", type(value).__qualname__.encode(), _digest(fields, path, active))
    if isinstance(value, torch.nn.Module):
        return _module_digest(value, path, active)
    raise _Unhashable(path, f"a {type(value).__module__}.{type(value).__qualname__}")


def _module_digest(module: torch.nn.Module, path: str, active: set[int]) -> bytes:
    """Class, ``state_dict`` and the public attributes (hyper-parameters) of every submodule."""
    hyper = {
        name or ".": {k: v for k, v in vars(sub).items() if not k.startswith("_") and k != "training"}
        for name, sub in module.named_modules()
    }
    return _sha(
        b"module",
        type(module).__qualname__.encode(),
        _digest(dict(module.state_dict()), f"{path}.state_dict()", active),
        _digest(hyper, path, active),
    )


def state_digest(target: "Target") -> str:
    """Hex SHA-256 of ``target``'s :func:`public_state`.

    Raises:
        UnhashableStateError: An attribute cannot be hashed (names the target and the attribute).
    """
    state = public_state(target)
    try:
        parts = [(_digest(name, name, set()), _digest(value, name, set())) for name, value in state.items()]
    except _Unhashable as exc:
        raise UnhashableStateError(getattr(target, "name", repr(target)), exc.path, exc.reason) from None
    return _sha(b"state", *(part for item in sorted(parts) for part in item)).hex()


def target_identity(target: "Target", source: str = "", distributions: Iterable[str] = ()) -> dict[str, Any]:
    """``target.fingerprint()`` checked: JSON-able, computable; what cache keys contain.

    The registry calls it when a target registers, so a target whose identity
    cannot be computed stops start-up instead of a run.

    Args:
        target: The target (or a view that delegates ``fingerprint()`` to it).
        source: Who registered it (added to error messages), e.g. ``"mypkg 1.0"``.
        distributions: Distributions to name in the error (default: ``source``).

    Returns:
        The fingerprint as a plain dict.

    Raises:
        PluginError: ``fingerprint()`` raised or returned something that is not a
            JSON-able mapping; the message names the target and the remedy.
    """
    name = getattr(target, "name", repr(target))
    where = f" (registered by {source})" if source else ""
    distributions = tuple(distributions) or ((source,) if source else ())
    try:
        identity = target.fingerprint()
        if not isinstance(identity, Mapping):
            raise TypeError(f"returned a {type(identity).__name__}, not a mapping")
        identity = dict(identity)
        json.dumps(identity, sort_keys=True)
    except UnhashableStateError as exc:
        raise PluginError(f"{exc}{where}", distributions) from None
    except Exception as exc:
        raise PluginError(
            f"target {name!r}{where}: fingerprint() must return a JSON-able mapping of the target's "
            f"parameters ({type(exc).__name__}: {exc})",
            distributions,
        ) from exc
    return identity
