"""One CUDA-graph capture helper, for :class:`sdesolve.GraphSampler` and the likelihood.

Capturing a function in a CUDA graph follows PyTorch's recipe
(https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs): run it a few times on a side
stream first, so lazy initializations (cuBLAS handles, autotuning, allocator pools) happen outside
the graph, then record one call. The caller then fills the function's static inputs in place and
calls ``graph.replay()``; the output tensor is overwritten by every replay, so copy it out before
another thread or call replays again.

Network evaluations made during warm-up and capture are not evaluations of any solve: the
model's ``nfe`` counter is restored, and the evaluations per call (measured in the warm-up) are
returned, so that a replay can add them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._validate import check_int

__all__ = ["capture_cuda_graph"]


def capture_cuda_graph(
    fn: Callable[[], Any], *, device: torch.device, warmup: int = 2, model: Any = None, generators: Sequence = ()
) -> tuple[torch.cuda.CUDAGraph, Any, int]:
    """Capture ``fn()`` (no arguments: it reads static input tensors) in a CUDA graph.

    Args:
        fn: the function to capture; it must be capturable (no host synchronization, no
            data-dependent Python control flow, same shapes on every call).
        device: the CUDA device it runs on.
        warmup: calls of ``fn`` on a side stream before capture (at least 1).
        model: an object with an ``nfe`` counter (a :class:`~sdesolve.ScoreModel`), restored after
            warm-up and capture; None if there is none.
        generators: CUDA ``torch.Generator``s that ``fn`` draws from, registered with the graph
            (PyTorch's graph-safe RNG: a replay reads the generator's seed and offset at replay time
            and advances the offset by the draws of the whole graph, as eager calls would).

    Returns:
        ``(graph, out, nfe_per_call)``: the graph, the static output of the captured call
        (overwritten by each ``graph.replay()``), and the model evaluations per call of ``fn``.
    """
    warmup = check_int(warmup, "warmup", minimum=1)
    device = torch.device(device)
    nfe0 = getattr(model, "nfe", 0)
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    nfe_per_call = (getattr(model, "nfe", 0) - nfe0) // warmup
    graph = torch.cuda.CUDAGraph()
    for g in generators:
        graph.register_generator_state(g)
    with torch.cuda.graph(graph):
        out = fn()
    if model is not None:
        model.nfe = nfe0  # warm-up and capture are not evaluations of a solve
    return graph, out, nfe_per_call
