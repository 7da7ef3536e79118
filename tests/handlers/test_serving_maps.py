"""Map encodings: float16 round trip, quantised encodings, the size bounds used to refuse responses early."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from handlers.serving._maps import decode_array, encode_array, encoded_size_bound, resize_map


@pytest.fixture
def cam() -> torch.Tensor:
    return torch.rand(7, 7, generator=torch.Generator().manual_seed(0)) * 3.0


def test_float16_round_trip_within_half_precision(cam: torch.Tensor) -> None:
    gradients = (torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1)) * 1e-2).contiguous()
    for values in (cam, gradients):
        encoded = encode_array(values, "FLOAT16")
        assert encoded.encoding == "FLOAT16" and encoded.shape == tuple(values.shape)
        assert len(encoded.data) == 2 * values.numel()
        back = decode_array(encoded)
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, values.numpy(), rtol=1e-3, atol=1e-7)
        # exactly what numpy's float16 rounding gives
        assert np.array_equal(back, values.numpy().astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("magnitude", [1e-9, 1e-6, 1e6, 1e30])
def test_float16_out_of_normal_range_is_scaled_not_lost(magnitude: float) -> None:
    # e.g. the gradients of an untrained model (all below float16's normal range) or huge logit gradients.
    values = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(3)) * magnitude
    encoded = encode_array(values, "FLOAT16")
    assert encoded.encoding == "FLOAT16" and len(encoded.data) == 2 * values.numel()
    assert encoded.scale != 1.0 and math.log2(encoded.scale).is_integer()
    back = decode_array(encoded)
    peak = float(values.abs().max())
    np.testing.assert_allclose(back, values.numpy(), rtol=0, atol=peak * 2.0**-11)
    # In range, nothing is scaled; an all-zero map neither.
    assert encode_array(torch.ones(7, 7), "FLOAT16").scale == 1.0
    assert encode_array(torch.zeros(7, 7), "FLOAT16").scale == 1.0


def test_float32_is_exact(cam: torch.Tensor) -> None:
    assert np.array_equal(decode_array(encode_array(cam, "FLOAT32")), cam.numpy())


@pytest.mark.parametrize("encoding", ["UINT8", "PNG"])
@pytest.mark.parametrize("shape", [(7, 7), (3, 20, 30), (1, 5, 6)])
def test_quantised_encodings_round_trip(encoding: str, shape: tuple[int, ...]) -> None:
    values = torch.rand(*shape, generator=torch.Generator().manual_seed(2)) * 4.0 - 1.0
    encoded = encode_array(values, encoding)  # type: ignore[arg-type]
    assert encoded.value_min == pytest.approx(float(values.min()))
    assert encoded.value_max == pytest.approx(float(values.max()))
    back = decode_array(encoded)
    assert back.shape == shape
    step = (encoded.value_max - encoded.value_min) / 255
    assert np.abs(back - values.numpy()).max() <= step / 2 + 1e-6


def test_constant_map_quantises_to_zero_range() -> None:
    encoded = encode_array(torch.full((4, 4), 0.5), "UINT8")
    assert encoded.value_min == encoded.value_max == 0.5
    assert set(encoded.data) == {0}
    assert np.allclose(decode_array(encoded), 0.5)


@pytest.mark.parametrize("encoding", ["FLOAT16", "FLOAT32", "UINT8", "PNG"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 7), (64, 64), (3, 224, 224), (3, 300, 17)])
def test_size_bound_holds_for_incompressible_and_constant_maps(encoding: str, shape: tuple[int, ...]) -> None:
    bound = encoded_size_bound(shape, encoding)  # type: ignore[arg-type]
    noisy = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    for values in (noisy, torch.zeros(shape)):
        size = len(encode_array(values, encoding).data)  # type: ignore[arg-type]
        assert size <= bound
        if encoding != "PNG":
            assert size == bound
    # The PNG bound is tight for noise: within 1% + a few bytes of the real size.
    if encoding == "PNG":
        assert bound <= len(encode_array(noisy, "PNG").data) * 1.01 + 64


def test_resize_map_matches_bilinear_and_keeps_channels() -> None:
    grid = torch.arange(4.0).reshape(2, 2)
    up = resize_map(grid, (4, 4))
    assert up.shape == (4, 4)
    assert float(up[0, 0]) == 0.0 and float(up[-1, -1]) == 3.0
    rgb = torch.rand(3, 5, 5)
    assert resize_map(rgb, (10, 10)).shape == (3, 10, 10)
    assert resize_map(rgb, (5, 5)) is rgb
