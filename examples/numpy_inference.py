"""Inference of a small network in NumPy, without PyTorch, with numbanorm's layers.

The network is a conv block (batch norm, group norm) followed by a
transformer block (layer norm, RMS norm).  Its weights come from an ``.npz``
file whose keys are the keys of the same network's PyTorch ``state_dict()``,
so weights trained in PyTorch load unchanged::

    # in PyTorch, once:
    np.savez("tiny_net.npz", **{k: v.cpu().numpy() for k, v in model.state_dict().items()})

    python examples/numpy_inference.py --weights tiny_net.npz

Without ``--weights`` the script writes random weights (seeded) to
``OUT/tiny_net.npz`` first.  When PyTorch is installed it also builds the same
network in PyTorch, loads the same file with ``load_state_dict(strict=True)``
(so the keys must match exactly) and prints the largest difference between
the two outputs; the script fails (exit status 1) if that exceeds
``--tolerance``.

    python examples/numpy_inference.py [--weights FILE.npz] [--out DIR] [--batch 4]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

import numpy as np

import numbanorm as nbn

# The architecture: input (N, 3, 16, 16) images; 8 channels in the conv block,
# 4 groups in its group norm; 16-dimensional tokens, 2 attention heads; 10 classes.
IN_CH, CH, GROUPS, D, HEADS, HIDDEN, CLASSES, SIZE = 3, 8, 4, 16, 2, 32, 10, 16


def state_shapes() -> dict[str, tuple[int, ...]]:
    """Every weight's PyTorch state_dict key and shape (the torch model below has exactly these)."""
    return {
        # conv block: conv -> BatchNorm2d -> ReLU -> conv -> GroupNorm -> ReLU -> 2x2 average pool
        "conv.conv1.weight": (CH, IN_CH, 3, 3),
        "conv.conv1.bias": (CH,),
        "conv.bn1.weight": (CH,),
        "conv.bn1.bias": (CH,),
        "conv.bn1.running_mean": (CH,),
        "conv.bn1.running_var": (CH,),
        "conv.bn1.num_batches_tracked": (),
        "conv.conv2.weight": (CH, CH, 3, 3),
        "conv.conv2.bias": (CH,),
        "conv.gn2.weight": (CH,),
        "conv.gn2.bias": (CH,),
        # pixels become tokens: a linear projection of each pixel's channels
        "proj.weight": (D, CH),
        "proj.bias": (D,),
        # pre-norm transformer block: x + attn(LayerNorm(x)), then x + mlp(RMSNorm(x))
        "block.ln1.weight": (D,),
        "block.ln1.bias": (D,),
        "block.attn.in_proj_weight": (3 * D, D),
        "block.attn.in_proj_bias": (3 * D,),
        "block.attn.out_proj.weight": (D, D),
        "block.attn.out_proj.bias": (D,),
        "block.rms2.weight": (D,),
        "block.fc1.weight": (HIDDEN, D),
        "block.fc1.bias": (HIDDEN,),
        "block.fc2.weight": (D, HIDDEN),
        "block.fc2.bias": (D,),
        # final LayerNorm, mean over tokens, classifier
        "norm.weight": (D,),
        "norm.bias": (D,),
        "head.weight": (CLASSES, D),
        "head.bias": (CLASSES,),
    }


def random_weights(seed: int) -> dict[str, np.ndarray]:
    """Seeded random weights of every key (not trivial, as if trained: running statistics too)."""
    rng = np.random.default_rng(seed)
    w = {}
    for key, shape in state_shapes().items():
        if key.endswith("num_batches_tracked"):
            w[key] = np.array(100, np.int64)
        elif key.endswith("running_var"):
            w[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif key.endswith("running_mean") or key.endswith("bias"):
            w[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif len(shape) == 1:  # the norms' weights
            w[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:  # conv / linear weights, scaled by fan-in
            fan_in = math.prod(shape[1:])
            w[key] = (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)
    return w


def sub(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix`` with the prefix removed (what a submodule's load_state_dict takes)."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- NumPy ops


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 convolution, stride 1, zero padding 1 (torch.nn.Conv2d(padding=1)); x (N, C, H, W)."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # (N, C, H, W, k, k)
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + b[:, None, None]


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x @ w.T + b


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def attention(x: np.ndarray, s: dict[str, np.ndarray], heads: int) -> np.ndarray:
    """Multi-head self-attention with torch.nn.MultiheadAttention's weights; x (N, L, D)."""
    N, L, Dm = x.shape
    q, k, v = np.split(linear(x, s["in_proj_weight"], s["in_proj_bias"]), 3, axis=-1)
    q, k, v = (t.reshape(N, L, heads, Dm // heads).transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(Dm // heads)  # (N, heads, L, L)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(N, L, Dm)
    return linear(o, s["out_proj.weight"], s["out_proj.bias"])


class NumpyNet:
    """The network in NumPy; every normalization is a numbanorm layer."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.w = state
        # numbanorm's layers take PyTorch's state dict keys (strict: exact key sets)
        self.bn1 = nbn.BatchNorm(CH).eval().load_state_dict(sub(state, "conv.bn1."))
        self.gn2 = nbn.GroupNorm(GROUPS, CH).load_state_dict(sub(state, "conv.gn2."))
        self.ln1 = nbn.LayerNorm(D).load_state_dict(sub(state, "block.ln1."))
        self.rms2 = nbn.RMSNorm(D).load_state_dict(sub(state, "block.rms2."))  # eps=None as in torch
        self.norm = nbn.LayerNorm(D).load_state_dict(sub(state, "norm."))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        w = self.w
        # conv block (channels first, as in PyTorch)
        h = relu(self.bn1(conv2d(x, w["conv.conv1.weight"], w["conv.conv1.bias"])))
        h = relu(self.gn2(conv2d(h, w["conv.conv2.weight"], w["conv.conv2.bias"])))
        N, C, H, W = h.shape
        h = h.reshape(N, C, H // 2, 2, W // 2, 2).mean(axis=(3, 5))  # 2x2 average pool
        # (N, C, H', W') -> (N, H'W', C) tokens -> (N, L, D)
        t = linear(h.reshape(N, C, -1).transpose(0, 2, 1), w["proj.weight"], w["proj.bias"])
        # transformer block (pre-norm)
        t = t + attention(self.ln1(t), sub(w, "block.attn."), HEADS)
        m = silu(linear(self.rms2(t), w["block.fc1.weight"], w["block.fc1.bias"]))
        t = t + linear(m, w["block.fc2.weight"], w["block.fc2.bias"])
        return linear(self.norm(t).mean(axis=1), w["head.weight"], w["head.bias"])


# ---------------------------------------------------------------- PyTorch twin


def torch_net():
    """The same network in PyTorch (its state_dict keys are state_shapes()'s)."""
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(IN_CH, CH, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(CH)
            self.conv2 = nn.Conv2d(CH, CH, 3, padding=1)
            self.gn2 = nn.GroupNorm(GROUPS, CH)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            return nn.functional.avg_pool2d(torch.relu(self.gn2(self.conv2(x))), 2)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(D)
            self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
            self.rms2 = nn.RMSNorm(D)
            self.fc1 = nn.Linear(D, HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, D)

        def forward(self, t):
            a = self.ln1(t)
            t = t + self.attn(a, a, a, need_weights=False)[0]
            return t + self.fc2(nn.functional.silu(self.fc1(self.rms2(t))))

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ConvBlock()
            self.proj = nn.Linear(CH, D)
            self.block = Block()
            self.norm = nn.LayerNorm(D)
            self.head = nn.Linear(D, CLASSES)

        def forward(self, x):
            h = self.conv(x)
            t = self.proj(h.flatten(2).transpose(1, 2))
            return self.head(self.norm(self.block(t)).mean(dim=1))

    return TinyNet().eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", metavar="FILE.npz", help="weights, PyTorch state_dict keys (default: random)")
    p.add_argument("--out", metavar="DIR", help="where random weights are written (default: a temporary dir)")
    p.add_argument("--batch", type=int, default=4, help="images in the batch (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and input (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max allowed |numbanorm - PyTorch| (1e-4)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.weights
        if path is None:
            out = args.out or tmp
            os.makedirs(out, exist_ok=True)
            path = os.path.join(out, "tiny_net.npz")
            np.savez(path, **random_weights(args.seed))
            print(f"wrote random weights to {path}")
        with np.load(path) as f:
            state = {k: f[k] for k in f.files}
    missing = sorted(set(state_shapes()) - set(state))
    if missing:
        print(f"error: {path} lacks keys {missing}", file=sys.stderr)
        return 1

    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.batch, IN_CH, SIZE, SIZE), dtype=np.float32)
    logits = NumpyNet(state)(x)
    print(f"NumPy + numbanorm: logits {logits.shape} {logits.dtype}; first: {logits[0, :4].round(4)} ...")

    if args.no_torch:
        return 0
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: comparison skipped")
        return 0
    model = torch_net()
    # strict=True: the .npz must hold exactly the PyTorch model's keys
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(logits - ref).max())
    print(f"PyTorch {torch.__version__}: logits {ref.shape} {ref.dtype}; first: {ref[0, :4].round(4)} ...")
    print(f"max |numbanorm - PyTorch| = {diff:.2e} (tolerance {args.tolerance:g})")
    if not diff <= args.tolerance:
        print("error: the NumPy network does not match PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
