"""CPU kernels (``cpu_kernels.c``), built on first use: the multi-step LIF neuron and 2x2
max-pooling.

Why hand-written: a LIF layer does a few flops per byte, so its cost is memory traffic. Eager
PyTorch needs several passes per time step over tensors larger than the cache; the C loops run
each neuron's time loop in L1 and touch every tensor once per pass. PyTorch's CPU max-pooling
with indices is the largest forward op of a training step and keeps an int64 index per
output; the kernel keeps one byte per output, is several times faster, and follows its tie and
NaN rules, so values and gradients are identical (the speed benchmark and docs/results.md give
the measured figures). No extension machinery is needed: the
file is compiled with the system C compiler (about a second, cached per source, compiler and
type) and called through ``ctypes``. It is parallelised with OpenMP on PyTorch's own libgomp
threads (``torch.get_num_threads()``), so it does not fight PyTorch's workers for the cores.

When no compiler is found, or the tensor is not a float32/float64 CPU tensor (CUDA, bf16), the
callers use PyTorch; both paths are checked against PyTorch/autograd in the tests. Set
``DIRECT2EVENT_CPU_KERNELS=0`` to force PyTorch everywhere.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ("-std=c99", "-O3", "-fno-trapping-math", "-shared", "-fPIC")
OPENMP = "-fopenmp"  # dropped (one thread) where the compiler lacks it
TYPES = {torch.float32: "float", torch.float64: "double"}
_CHUNK = 1 << 15  # neurons per thread at least: below that, waking threads costs more

_lock = threading.Lock()
_libs: dict[torch.dtype, ctypes.CDLL] = {}
_failed: list[str] = []


def enabled() -> bool:
    """Whether the kernels may be used (``DIRECT2EVENT_CPU_KERNELS=0`` turns them off)."""
    return os.environ.get("DIRECT2EVENT_CPU_KERNELS", "1") not in ("0", "false", "no")


def cache_dir() -> Path:
    """Where built kernels live: ``$DIRECT2EVENT_CACHE`` or ``~/.cache/direct2event``."""
    root = os.environ.get("DIRECT2EVENT_CACHE") or Path.home() / ".cache" / "direct2event"
    return Path(root)


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(real: str) -> Path:
    """Compile the kernel for one floating type, once per source, compiler and type."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc on PATH, or $CC)")
    # S603: runs the user's own compiler ($CC or cc on PATH) on this package's source
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    key = hashlib.sha256(
        SOURCE.read_bytes()
        + " ".join((cc, version.stdout, platform.machine(), real, *FLAGS, OPENMP)).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"cpu-kernels-{real}-{key}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(target.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:  # a read-only home: build into the temporary folder instead
        target = Path(tempfile.gettempdir()) / f"direct2event-{os.getuid()}" / target.name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
    # several processes may build at once: each writes its own file and renames it into place
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        errors = []
        for extra in ((OPENMP,), ()):
            cmd = [cc, *FLAGS, *extra, f"-DREAL={real}", "-o", str(built), str(SOURCE)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
            if result.returncode == 0:
                built.replace(target)
                return target
            errors.append(f"{' '.join(cmd)}: {result.stderr.strip()[-400:]}")
        raise RuntimeError("; ".join(errors))


def _load(dtype: torch.dtype) -> ctypes.CDLL | None:
    if dtype in _libs:
        return _libs[dtype]
    with _lock:
        if dtype in _libs or _failed:
            return _libs.get(dtype)
        try:
            lib = ctypes.CDLL(str(_build(TYPES[dtype])))
        except (OSError, RuntimeError) as err:
            _failed.append(str(err))
            logger.warning("CPU kernels unavailable (%s); using the PyTorch versions", err)
            return None
        p, n, d, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_double, ctypes.c_int
        for fn in (lib.lif_forward, lib.lif_backward):
            fn.argtypes = [p, p, p, p, p, n, n, n, n, d, d, i, i]
            fn.restype = None
        for fn in (lib.maxpool2_forward, lib.maxpool2_backward):
            fn.argtypes = [p, p, p, n, n, n, i]
            fn.restype = None
        _libs[dtype] = lib
        return lib


def usable(x: Tensor) -> bool:
    """True when ``x`` can go through the kernel (CPU, float32/float64, kernel built)."""
    return x.device.type == "cpu" and x.dtype in TYPES and enabled() and _load(x.dtype) is not None


def _threads(n: int) -> int:
    return max(1, min(torch.get_num_threads(), n // _CHUNK))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def channel_layout(x: Tensor, threshold: Tensor) -> tuple[int, int] | None:
    """``(channels, inner)`` such that neuron ``i`` of one step has threshold
    ``threshold[(i // inner) % channels]``; None when ``threshold`` is not a scalar or one
    value per channel of a dimension of ``x[t]`` (then the eager version broadcasts it)."""
    step = x.shape[1:]
    if threshold.numel() == 1:
        return 1, max(1, step.numel())
    k = threshold.dim()
    if k > len(step) or any(s != 1 for s in threshold.shape[1:]):
        return None
    channel_dim = len(step) - k
    if threshold.shape[0] != step[channel_dim]:
        return None
    return threshold.shape[0], step[channel_dim + 1 :].numel()


def lif_forward(
    x: Tensor,
    threshold: Tensor,
    layout: tuple[int, int],
    beta: float,
    width: float,
    graded: bool,
    keep: str | None,
) -> tuple[Tensor, Tensor | None]:
    """Outputs for ``x[T, ...]`` and what the backward needs: ``keep`` = ``"z"`` (float, for
    atan), ``"box"`` (uint8, for pwl and the graded activation) or None (inference)."""
    x = x.contiguous()
    thr = threshold.reshape(-1).to(x.dtype).contiguous()
    out = torch.empty_like(x)
    z = torch.empty_like(x) if keep == "z" else None
    box = torch.empty(x.shape, dtype=torch.uint8) if keep == "box" else None
    n = x[0].numel()
    lib = _libs[x.dtype]  # callers check usable(x), which loads it
    lib.lif_forward(
        _ptr(x),
        _ptr(out),
        _ptr(z),
        _ptr(box),
        _ptr(thr),
        x.shape[0],
        n,
        *layout,
        beta,
        width,
        int(graded),
        _threads(n),
    )
    return out, (z if keep == "z" else box)


def lif_backward(
    grad_out: Tensor,
    kept: Tensor,
    threshold: Tensor,
    layout: tuple[int, int],
    beta: float,
    width: float,
    detach_reset: bool,
) -> Tensor:
    """``dL/dx`` from ``dL/dout``; a kept ``z`` buffer is overwritten with the result."""
    grad_out = grad_out.contiguous()
    thr = threshold.reshape(-1).to(grad_out.dtype).contiguous()
    is_z = kept.dtype != torch.uint8
    grad_x = kept if is_z else torch.empty_like(grad_out)
    n = grad_out[0].numel()
    lib = _libs[grad_out.dtype]
    lib.lif_backward(
        _ptr(grad_out),
        _ptr(grad_x),
        _ptr(kept) if is_z else None,
        None if is_z else _ptr(kept),
        _ptr(thr),
        grad_out.shape[0],
        n,
        *layout,
        beta,
        width,
        int(detach_reset),
        _threads(n),
    )
    if is_z:  # written behind autograd's back: a second backward must see the change
        torch.autograd.graph.increment_version(kept)
    return grad_x


def maxpool2_forward(x: Tensor, keep: bool) -> tuple[Tensor, Tensor | None]:
    """2x2 max-pooling (stride 2, floor mode) of ``x[N, C, H, W]``; the winner of each window
    as one byte when ``keep`` (for the backward pass)."""
    x = x.contiguous()
    n, c, h, w = x.shape
    out = x.new_empty((n, c, h // 2, w // 2))
    idx = torch.empty(out.shape, dtype=torch.uint8) if keep else None
    lib = _libs[x.dtype]  # callers check usable(x), which loads it
    lib.maxpool2_forward(_ptr(x), _ptr(out), _ptr(idx), n * c, h, w, _threads(x.numel()))
    return out, idx


def maxpool2_backward(grad_out: Tensor, idx: Tensor, shape: torch.Size) -> Tensor:
    """Gradient of :func:`maxpool2_forward` for an input of ``shape``."""
    grad_out = grad_out.contiguous()
    grad_x = grad_out.new_empty(shape)
    n, c, h, w = shape
    lib = _libs[grad_out.dtype]
    lib.maxpool2_backward(
        _ptr(grad_out), _ptr(idx), _ptr(grad_x), n * c, h, w, _threads(grad_x.numel())
    )
    return grad_x
