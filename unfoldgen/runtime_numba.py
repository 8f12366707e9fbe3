"""Plain Python helpers that generated ``kernels.py`` files carry with them (copied verbatim).

They read a trained module's parameters and check every array and count against the others
before a kernel sees them: numba does not check bounds, so a ``layers`` larger than the stored
per-layer arrays, or an input of the wrong size, would read stray memory. The generated file
must not import unfoldgen; it passes its own tables (``PARAMETERS``, ``INPUTS``, ``NETS``).

Axes are dims (strings) or fixed sizes (ints); ``"layers"`` is the per-layer axis (no dim can
take that name: it is a keyword of the spec language).

Complex entries (the names in the file's ``COMPLEX``) hold the complex counterpart of the
kernels' real dtype: complex64 with float32, complex128 with float64. A real array given for one
is converted (real values are complex ones with no imaginary part, as the torch module takes
them); a complex array for a real entry is refused.
"""

import numpy as np

LAYER_AXIS = "layers"


def shape_text(axes: tuple, batch: bool = False) -> str:
    """``(B, m, n)``: how an expected shape is written in error messages."""
    parts = (["B"] if batch else []) + [str(axis) for axis in axes]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def checked_array(
    what: str, value: object, axes: tuple, sizes: dict, dtype, batch: bool = False, complex_values: bool = False
) -> np.ndarray:
    """``value`` as a contiguous array of ``axes`` (after a leading batch axis when ``batch``),
    its dims bound in ``sizes``, of the real ``dtype`` of the arrays checked before it (float32 or
    float64), or (``complex_values``) that dtype's complex counterpart.
    The per-layer axis is not bound: each per-layer array holds at least ``layers`` entries."""
    array = np.asarray(value)
    expected = shape_text(axes, batch)
    if np.iscomplexobj(array) and not complex_values:
        raise ValueError(f"{what}: expected real values, got {array.dtype} (declare it complex in the spec)")
    real = array.real.dtype
    if real not in (np.float32, np.float64):
        kinds = "complex64 or complex128 (or float32, float64)" if complex_values else "float32 or float64"
        raise ValueError(f"{what}: dtype {array.dtype}, expected {kinds}")
    if dtype is not None and real != dtype:
        wanted = complex_dtype(dtype) if complex_values else dtype
        raise ValueError(f"{what}: dtype {array.dtype}, expected {wanted} like the other arrays")
    if array.ndim != len(axes) + batch:
        raise ValueError(f"{what}: expected shape {expected}, got {array.shape}")
    for axis, size in zip(axes, array.shape[batch:], strict=True):
        if axis == LAYER_AXIS:
            continue
        bound = sizes.setdefault(axis, size) if isinstance(axis, str) else axis
        if size != bound:
            raise ValueError(f"{what}: expected shape {expected} with {axis} = {bound}, got {array.shape}")
    if complex_values:  # real values are complex ones with no imaginary part
        return np.asarray(array, complex_dtype(real), order="C")
    return np.asarray(array, order="C")  # a copy only if it is not contiguous (0-d stays 0-d)


def complex_dtype(real) -> np.dtype:
    """The complex dtype of a real one's precision: float32 → complex64, float64 → complex128."""
    return np.result_type(real, np.complex64)


def checked_layers(value: object, stored: int | None) -> int:
    """The number of layers to run: a positive integer. Layers past the ``stored`` per-layer
    entries reuse the last stored layer's values (the kernels clamp the layer index)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"layers must be a positive integer, got {value}")
    if value < 1:
        raise ValueError(f"layers must be a positive integer, got {value}")
    if stored is not None and stored < 1:
        raise ValueError("the per-layer parameters hold 0 layers; expected at least 1")
    return int(value)


def stacked_entries(state_dict: dict, prefix: str, suffix: str = "") -> list:
    """The entries ``PREFIX{k}SUFFIX`` for k = 0, 1, … (a torch state dict keeps per-layer
    tensors one per layer); refuses a gap in k."""
    found = {}
    for key in state_dict:
        index = key[len(prefix) : len(key) - len(suffix)]
        if key.startswith(prefix) and key.endswith(suffix) and index.isdigit():
            found[int(index)] = state_dict[key]
    missing = sorted(set(range(max(found, default=-1) + 1)) - set(found))
    if missing:
        total = len(found) + len(missing)
        raise ValueError(f"entry {prefix}{missing[0]}{suffix} is missing (layers {missing} of {total})")
    return [np.asarray(found[k]) for k in range(len(found))]


def collect_params(state_dict: dict, parameters: dict, nets: dict, complex_names: frozenset = frozenset()) -> dict:
    """The kernels' parameters from a state dict of numpy arrays: per-layer entries ``NAME.k``
    stacked as ``(layers, ...)``, each net's dense layers stacked, the layer count kept;
    ``complex_names``: the complex parameters."""
    params = {}
    for name, axes in parameters.items():
        if name in state_dict:
            params[name] = np.asarray(state_dict[name], order="C")
            continue
        entries = stacked_entries(state_dict, f"{name}.")
        if not entries:
            raise ValueError(f"parameter {name!r} is missing (expected shape {shape_text(axes)})")
        params[name] = np.asarray(np.stack(entries), order="C")  # a stack of transposes keeps their strides
    if "layers" in state_dict:
        params["layers"] = state_dict["layers"]
    for net, (per_layer, dense_layers, _, _) in nets.items():
        for part, plural in (("weight", "weights"), ("bias", "biases")):
            stacked = []
            for dense in dense_layers:
                key = f".{dense}.{part}"
                if per_layer:
                    values = stacked_entries(state_dict, f"{net}.", key)
                elif f"{net}{key}" in state_dict:
                    values = [np.asarray(state_dict[f"{net}{key}"])]
                else:
                    values = []
                if not values:
                    raise ValueError(f"net parameter {net}{'.0' if per_layer else ''}{key!r} is missing")
                stacked.append(np.asarray(np.stack([value.reshape(value.shape[0], -1) for value in values]), order="C"))
            params[f"{net}.{plural}"] = tuple(stacked)  # "." keeps them apart from spec names
    checked_params(params, parameters, nets, {}, complex_names)
    return params


def features(shapes: tuple, sizes: dict) -> int | None:
    """Σ over a net's arguments of their number of entries; None while a dim is unknown."""
    total = 0
    for shape in shapes:
        count = 1
        for axis in shape:
            if isinstance(axis, str) and axis not in sizes:
                return None
            count *= sizes[axis] if isinstance(axis, str) else axis
        total += count
    return total


def checked_params(
    params: dict, parameters: dict, nets: dict, sizes: dict, complex_names: frozenset = frozenset()
) -> tuple:
    """Check ``params`` (from ``collect_params``, perhaps changed since) against the tables:
    every array's shape and dtype (``complex_names``: the complex ones), the nets' layer chain,
    and ``layers`` against the layers stored. Binds the dims in ``sizes``; returns (layers, the
    real dtype, the kernel's array arguments)."""
    dtype = None
    arrays = []
    stored = []  # the leading length of every per-layer array
    for name, axes in parameters.items():
        if name not in params:
            raise ValueError(f"parameter {name!r} is missing (expected shape {shape_text(axes)})")
        array = checked_array(
            f"parameter {name!r}", params[name], axes, sizes, dtype, complex_values=name in complex_names
        )
        dtype = array.real.dtype
        if axes[:1] == (LAYER_AXIS,):
            stored.append(array.shape[0])
        arrays.append(array.dtype.type(array) if array.ndim == 0 else array)
    for net, (per_layer, dense_layers, in_shapes, out_shapes) in nets.items():
        count = len(dense_layers)
        parts = {}
        for plural in ("weights", "biases"):
            parts[plural] = params.get(f"{net}.{plural}")
            if not isinstance(parts[plural], tuple) or len(parts[plural]) != count:
                raise ValueError(f"net {net}: expected a tuple of {count} stacked {plural}")
        leading = LAYER_AXIS if per_layer else 1
        weights, biases = [], []
        for i in range(count):
            local = {"in": weights[-1].shape[1]} if weights else {}
            what = f"net {net} layer {i}"
            weights.append(checked_array(f"{what} weights", parts["weights"][i], (leading, "out", "in"), local, dtype))
            dtype = weights[-1].dtype
            biases.append(checked_array(f"{what} biases", parts["biases"][i], (leading, "out", 1), local, dtype))
            if biases[-1].shape[0] != weights[-1].shape[0]:
                raise ValueError(f"{what}: {biases[-1].shape[0]} stacked biases for {weights[-1].shape[0]} weights")
            if per_layer:
                stored.append(weights[-1].shape[0])
        ends = (("inputs", in_shapes, weights[0].shape[2]), ("outputs", out_shapes, weights[-1].shape[1]))
        for label, shapes, size in ends:
            expected = features(shapes, sizes)
            if expected is not None and size != expected:
                raise ValueError(f"net {net}: its weights take {size} {label}, expected {expected}")
        arrays += [tuple(weights), tuple(biases)]
    layers = params.get("layers", min(stored, default=None))
    if layers is None:
        raise ValueError("the number of layers is unknown: pass a 'layers' entry")
    return checked_layers(layers, min(stored, default=None)), dtype, arrays


def checked_tolerance(value: object) -> float:
    """A fixed-point network's tolerance: a relative change in [0, 1)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not (number and 0 <= value < 1):
        raise ValueError(f"tolerance must be a relative change in [0, 1), got {value}")
    return float(value)


def checked_inputs(
    values: dict, inputs: dict, sizes: dict, dtype, complex_names: frozenset = frozenset()
) -> tuple[list, int]:
    """The inputs as ``(B, *axes)`` arrays of one batch size and the parameters' dtype (its complex
    counterpart for the ``complex_names``)."""
    checked = []
    batch = None
    for name, value in values.items():
        array = checked_array(f"input {name}", value, inputs[name], sizes, dtype, True, name in complex_names)
        dtype = array.real.dtype
        batch = array.shape[0] if batch is None else batch
        if array.shape[0] != batch:
            raise ValueError(f"input {name}: batch size {array.shape[0]}, expected {batch} like the other inputs")
        checked.append(array)
    return checked, batch
