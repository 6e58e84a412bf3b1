"""Inference backends over a loaded bundle: torch (eager or compiled, CPU or CUDA) and
onnxruntime (CPU, or its CUDA provider when the installed build has one).

Every backend maps a batch of model input [N, *input_shape] (float32, or int64 token ids for
a model of tokens) to the task's exported outputs as float32 [N, *output shape] (logits for
classification, values in the targets' units for regression, next-token logits [N, T, V]
for a causal LM), so the batch predictor and the server do not care which one runs.
Backends agree within `BACKEND_TOLERANCE` (absolute, on outputs; tested).
"""

from __future__ import annotations

import os
from typing import Literal, Protocol

import numpy as np
import torch

from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy._onnx import INPUT_NAME, OUTPUT_NAME
from deepfleet.devices import choose_device
from deepfleet.errors import UserError

BackendName = Literal["auto", "torch", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")
# fp32 on CPU: runtimes differ by summation order only (~1e-6); CUDA kernels (TF32 off) are
# within the same bound for the zoo's models.
BACKEND_TOLERANCE = 1e-4


class Backend(Protocol):
    """Outputs for a batch: model input [N, *input_shape] -> float32 [N, *output shape]."""

    name: str
    device: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def resolve_device(spec: str) -> torch.device:
    """cpu, cuda, cuda:N, xpu, mps or auto as a torch device, checked against what is
    visible."""
    if spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device {spec}: no CUDA device is visible")
        index = int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise UserError(f"device {spec}: only {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    if spec not in ("auto", "cpu", "cuda", "xpu", "mps"):
        raise UserError(f"device {spec!r}: expected auto, cpu, cuda, cuda:N, xpu or mps")
    return choose_device(spec)


class TorchBackend:
    """The bundle's PyTorch model, eager or through torch.compile (dynamic batch)."""

    def __init__(self, bundle: LoadedBundle, device: torch.device, compiled: bool = False):
        self.device = str(device)
        self.name = "torch-compiled" if compiled else "torch"
        self._device = device
        self._dtype = np.dtype(bundle.input_dtype)
        model = bundle.model.to(device).eval()
        # dynamic=True: one graph for every batch size, instead of a recompile per size.
        self._model = torch.compile(model, dynamic=True) if compiled else model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self._dtype)
        with torch.inference_mode():
            logits = self._model(torch.from_numpy(x).to(self._device, non_blocking=True))
            return logits.float().cpu().numpy()


class OnnxBackend:
    """The bundle's model.onnx in an onnxruntime session."""

    def __init__(
        self,
        bundle: LoadedBundle,
        device: torch.device,
        threads: int | None = None,
        spin: bool = False,
    ):
        import onnxruntime as ort

        if bundle.onnx_path is None:
            raise UserError(
                f"{bundle.root}: bundle has no model.onnx (exported without ONNX); "
                "use the torch backend"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime picks (all cores)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spin-waiting between calls only for a process that has its cores to itself: a
        # server shares them with the event loop that parses requests, and several predict
        # workers with each other; spinning threads would take the cores from them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError(
                    "onnxruntime backend on CUDA needs the onnxruntime-gpu build "
                    "(CUDAExecutionProvider is not available)"
                )
            providers = [
                ("CUDAExecutionProvider", {"device_id": device.index or 0}),
                "CPUExecutionProvider",
            ]
        self._session = ort.InferenceSession(str(bundle.onnx_path), options, providers=providers)
        self._dtype = np.dtype(bundle.input_dtype)
        self.name = "onnxruntime"
        self.device = str(device)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self._dtype)
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def choose_backend(
    bundle: LoadedBundle, backend: str, device: torch.device, compiled: bool = False
) -> str:
    """The backend `auto` means, for predict and serve alike: onnxruntime when the bundle has
    an ONNX graph and onnxruntime can run it on `device` (its CUDA provider on a GPU), else
    torch; torch too when compilation is asked for."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if compiled or bundle.onnx_path is None:
        return "torch"
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "torch"
    return "onnxruntime" if device.type in ("cpu", "cuda") else "torch"


def make_backend(
    bundle: LoadedBundle,
    backend: str = "torch",
    device: str = "cpu",
    compiled: bool = False,
    threads: int | None = None,
    spin: bool = False,
) -> Backend:
    """Build a backend by name (`auto`: see choose_backend); `threads` caps intra-op threads
    (None: the runtime's default); `spin` lets onnxruntime's threads spin between calls."""
    dev = resolve_device(device)
    backend = choose_backend(bundle, backend, dev, compiled)
    if backend == "onnxruntime":
        if compiled:
            raise UserError("--compile applies to the torch backend only")
        return OnnxBackend(bundle, dev, threads, spin)
    if threads:
        torch.set_num_threads(threads)
    return TorchBackend(bundle, dev, compiled)


def cpu_threads_per_process(nproc: int) -> int:
    """Split the machine's cores evenly so N processes do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, nproc))
