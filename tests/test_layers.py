"""Layers: PyTorch-compatible state, train/eval, momentum=None, state dicts."""

from __future__ import annotations

import numpy as np
import pytest

import numbanorm as nbn


def test_batchnorm_running_stats_follow_pytorch_formula(rng):
    bn = nbn.BatchNorm(3, momentum=0.1, dtype=np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    for i in range(4):
        x = rng.standard_normal((6, 3, 5)) * (i + 1) + i
        y = bn(x)
        mean = x.mean(axis=(0, 2))
        var = x.var(axis=(0, 2))
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * x.var(axis=(0, 2), ddof=1)
        ref = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5)
        np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 4
    bn.eval()
    x = rng.standard_normal((6, 3, 5))
    ref = (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-5)
    np.testing.assert_allclose(bn(x), ref, rtol=1e-9, atol=1e-12)


def test_batchnorm_momentum_none_is_cumulative_average(rng):
    bn = nbn.BatchNorm(2, momentum=None, dtype=np.float64)
    means = []
    for i in range(3):
        x = rng.standard_normal((10, 2)) + 3 * i
        bn(x)
        means.append(x.mean(axis=0))
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)


def test_state_dict_roundtrip_and_errors(rng):
    bn = nbn.BatchNorm(4)
    bn(rng.standard_normal((8, 4)).astype(np.float32))
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    other = nbn.BatchNorm(4).load_state_dict(sd)
    for k in sd:
        np.testing.assert_array_equal(other.state_dict()[k], sd[k])
    with pytest.raises(ValueError, match="missing keys"):
        nbn.BatchNorm(4).load_state_dict({"weight": np.ones(4)})
    bad = dict(sd, weight=np.ones(5))
    with pytest.raises(ValueError, match="weight"):
        nbn.BatchNorm(4).load_state_dict(bad)
    assert list(nbn.LayerNorm(3, bias=False).state_dict()) == ["weight"]
    assert list(nbn.InstanceNorm(3).state_dict()) == []


def test_layers_match_functional(rng):
    x = rng.standard_normal((2, 6, 7))
    np.testing.assert_allclose(nbn.LayerNorm(7, dtype=np.float64)(x), nbn.layer_norm(x, 7))
    np.testing.assert_allclose(nbn.GroupNorm(3, 6, dtype=np.float64)(x), nbn.group_norm(x, 3))
    np.testing.assert_allclose(nbn.RMSNorm(7, dtype=np.float64)(x), nbn.rms_norm(x, 7))
    np.testing.assert_allclose(nbn.InstanceNorm(6)(x), nbn.instance_norm(x))
    with pytest.raises(ValueError, match="num_groups"):
        nbn.GroupNorm(4, 6)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_layers_match_torch(rng, momentum):
    torch = pytest.importorskip("torch")
    tb = torch.nn.BatchNorm2d(4, momentum=momentum).double()
    nb = nbn.BatchNorm(4, momentum=momentum, dtype=np.float64)
    for i in range(3):
        x = rng.standard_normal((5, 4, 3, 3)) * (i + 1) + i
        np.testing.assert_allclose(nb(x), tb(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12)
    for k, v in nb.state_dict().items():
        np.testing.assert_allclose(v, tb.state_dict()[k].numpy(), rtol=1e-12)
    nb.eval()
    tb.eval()
    x = rng.standard_normal((5, 4, 3, 3))
    np.testing.assert_allclose(nb(x), tb(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12)
    loaded = nbn.BatchNorm(4, dtype=np.float64).load_state_dict(tb.state_dict()).eval()
    np.testing.assert_allclose(loaded(x), tb(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12)

    ti = torch.nn.InstanceNorm1d(4, track_running_stats=True, affine=True).double()
    ni = nbn.InstanceNorm(4, track_running_stats=True, affine=True, dtype=np.float64)
    x = rng.standard_normal((3, 4, 10))
    np.testing.assert_allclose(ni(x), ti(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12)
    for k, v in ni.state_dict().items():
        np.testing.assert_allclose(v, ti.state_dict()[k].numpy(), rtol=1e-12)
    tl = torch.nn.LayerNorm(10).double()
    with torch.no_grad():
        tl.weight.normal_()
    nl = nbn.LayerNorm(10, dtype=np.float64).load_state_dict(tl.state_dict())
    np.testing.assert_allclose(nl(x), tl(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12)
    tr = torch.nn.RMSNorm(10).double()
    np.testing.assert_allclose(
        nbn.RMSNorm(10, dtype=np.float64)(x), tr(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12
    )


def test_a_rejected_batch_is_not_counted(rng):
    # num_batches_tracked (and the momentum=None average it drives) counts the
    # batches a call accepted: a rejected x leaves the layer as it was
    bn = nbn.BatchNorm(3, momentum=None, dtype=np.float64)
    x = rng.standard_normal((8, 3))
    bn(x)
    state = {k: np.array(v, copy=True) for k, v in bn.state_dict().items()}
    for bad in (rng.standard_normal((8, 4)), np.ma.masked_invalid(x)):
        with pytest.raises((ValueError, TypeError)):
            bn(bad)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    bn(x)  # the second accepted batch: the cumulative average of two
    assert int(bn.num_batches_tracked) == 2
    np.testing.assert_allclose(bn.running_mean, x.mean(0), rtol=1e-12)
