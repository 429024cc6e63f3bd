"""detkit's roi_align (compiled CPU forward and backward) and
MultiScaleRoIAlign against torchvision's: outputs and gradients equal bit for
bit, on random and hostile inputs."""
import pytest
import torch
import torchvision
from torchvision.ops import roi_align as torchvision_roi_align

from detkit.modeling.poolers import MultiScaleRoIAlign
from detkit.ops import backend
from detkit.ops.roi_align import roi_align


def random_rois(n_images, count, extent, generator, dtype=torch.float32):
    corner = torch.rand(count, 2, generator=generator, dtype=dtype) * extent * 1.2 - 0.1 * extent
    size = torch.rand(count, 2, generator=generator, dtype=dtype) * extent * 0.6
    index = torch.randint(0, n_images, (count, 1), generator=generator).to(dtype)
    return torch.cat([index, corner, corner + size], dim=1)


def gradients(fn, x, rois, grad, *args):
    x = x.detach().requires_grad_(True)
    out = fn(x, rois, *args)
    (gx,) = torch.autograd.grad(out, x, grad)
    return out, gx


@pytest.mark.parametrize("out, scale, ratio, aligned, dtype", [
    (7, 0.25, 2, False, torch.float32),
    (7, 0.25, 2, True, torch.float32),
    (14, 0.5, 3, False, torch.float64),
    ((3, 5), 1.0, 1, False, torch.float32),
])
def test_forward_and_gradient_equal_torchvision(out, scale, ratio, aligned, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 21, 33, generator=g, dtype=dtype)
    rois = random_rois(3, 60, 33 / scale, g, dtype)
    rois = torch.cat([rois, torch.tensor([[0, 5, 5, 5, 5], [1, -50, -50, -20, -20], [2, 0, 0, 1e4, 1e4]],
                                         dtype=dtype)])  # zero-size, off the map, larger than the map
    size = (out, out) if isinstance(out, int) else out
    grad = torch.randn(len(rois), 6, *size, generator=g, dtype=dtype)
    theirs = gradients(torchvision_roi_align, x, rois, grad, out, scale, ratio, aligned)
    ours = gradients(roi_align, x, rois, grad, out, scale, ratio, aligned)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_inputs_the_compiled_backward_does_not_serve_take_torchvisions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 8, 8, generator=g)
    rois = random_rois(1, 5, 8, g)
    grad = torch.randn(5, 2, 2, 2, generator=g)
    for ratio in (-1, 0):  # adaptive sampling: torchvision's own path, same results
        assert torch.equal(gradients(roi_align, x, rois, grad, 2, 1.0, ratio)[1],
                           gradients(torchvision_roi_align, x, rois, grad, 2, 1.0, ratio)[1])
    assert torch.equal(roi_align(x, [rois[:, 1:]], 2, 1.0, 2), torchvision_roi_align(x, [rois[:, 1:]], 2, 1.0, 2))
    assert backend()["roi_align (backward)"] == "numba"


def test_multiscale_pooler_equals_torchvisions_in_training_and_inference():
    g = torch.Generator().manual_seed(2)
    image_sizes = [(256, 320), (240, 300)]
    names = ["0", "1", "2", "3"]
    features = {n: torch.randn(2, 4, 64 // 2 ** i, 80 // 2 ** i, generator=g) for i, n in enumerate(names)}
    boxes = []
    for count in (40, 25):
        xy = torch.rand(count, 2, generator=g) * 250
        wh = torch.rand(count, 2, generator=g) ** 2 * 600 + 1  # from 1 px to past the image: every level is used
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    ours, theirs = MultiScaleRoIAlign(names, 7, 2), torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    leaves = {n: f.clone().requires_grad_(True) for n, f in features.items()}
    twins = {n: f.clone().requires_grad_(True) for n, f in features.items()}
    out, expected = ours(leaves, boxes, image_sizes), theirs(twins, boxes, image_sizes)
    assert torch.equal(out, expected)
    grad = torch.randn(out.shape, generator=g)
    ours_grad = torch.autograd.grad(out, list(leaves.values()), grad)
    theirs_grad = torch.autograd.grad(expected, list(twins.values()), grad)
    assert all(torch.equal(a, b) for a, b in zip(ours_grad, theirs_grad))
    assert all(b.abs().sum() > 0 for b in theirs_grad)  # every level received boxes
    with torch.no_grad():
        assert torch.equal(ours(features, boxes, image_sizes), theirs(features, boxes, image_sizes))


def hostile_rois(n_images, extent, generator, dtype):
    """Random rois plus the edge cases: zero-size, off the map, larger than it,
    on the last row/column, reversed corners, a sub-pixel box."""
    edge = extent - 0.5
    special = torch.tensor([[0, 5, 5, 5, 5], [n_images - 1, -50, -50, -20, -20], [0, 0, 0, 1e4, 1e4],
                            [0, edge, edge, edge + 3, edge + 3], [n_images - 1, 9, 9, 3, 3], [0, 2.2, 2.3, 2.4, 2.5]],
                           dtype=dtype)
    return torch.cat([random_rois(n_images, 80, extent, generator, dtype), special])


@pytest.mark.parametrize("channels", [1, 3, 37, 256])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_forward_equals_torchvision_bit_for_bit(channels, aligned, dtype):
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 19, 27, generator=g, dtype=dtype)
    rois = hostile_rois(2, 27 * 4, g, dtype)
    for layout in (torch.contiguous_format, torch.channels_last):
        features = x.contiguous(memory_format=layout)
        for size, scale, ratio in (((7, 7), 0.25, 2), ((14, 14), 0.25, 2), ((3, 5), 0.5, 1), ((2, 2), 1.0, 3)):
            with torch.no_grad():
                ours = roi_align(features, rois, size, scale, ratio, aligned)
            assert torch.equal(ours, torchvision_roi_align(x, rois, size, scale, ratio, aligned)), (layout, size)
            assert ours.is_contiguous()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_thread_count_gives_the_same_forward(threads):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 16, 24, 24, generator=g)
    rois = hostile_rois(3, 96, g, torch.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            ours = roi_align(x, rois, 7, 0.25, 2)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ours, torchvision_roi_align(x, rois, 7, 0.25, 2))


def test_forward_edge_inputs_equal_torchvision():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 10, 12, generator=g)
    with torch.no_grad():
        empty = roi_align(x, torch.zeros(0, 5), 7, 1.0, 2)
    assert empty.shape == (0, 4, 7, 7)
    # an inf at the first pixel: torchvision's off-map samples read it with weight 0 (NaN), in-map ones do not
    x[1, :, 0, 0] = float("inf")
    rois = torch.tensor([[1, -40.0, -40.0, -30.0, -30.0], [1, 4.0, 4.0, 9.0, 8.0], [0, -3.0, -3.0, 5.0, 5.0]])
    with torch.no_grad():
        ours = roi_align(x, rois, 2, 1.0, 2)
    theirs = torchvision_roi_align(x, rois, 2, 1.0, 2)
    assert torch.equal(ours.isnan(), theirs.isnan()) and ours.isnan().any()
    assert torch.equal(ours.nan_to_num(), theirs.nan_to_num())
    assert backend()["roi_align"] == "numba"


@pytest.mark.parametrize("rois, message", [
    (torch.tensor([[2.0, 0, 0, 4, 4]]), r"rois\[:, 0\] must be image indices in \[0, 2\), got values in \[2, 2\]"),
    (torch.tensor([[0.0, 0, 0, 4, 4], [-1.0, 0, 0, 4, 4]]), r"image indices in \[0, 2\), got values in \[-1, 0\]"),
    (torch.zeros(3, 4), r"rois must be Tensor\[K, 5\]"),
], ids=["index_past_the_batch", "negative_index", "four_columns"])
def test_rois_that_would_read_outside_the_maps_are_refused(rois, message):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=message), torch.no_grad():
        roi_align(x, rois, 2, 1.0, 2)
    with pytest.raises(ValueError, match=message):
        roi_align(x.requires_grad_(True), rois, 2, 1.0, 2)


def test_multiscale_pooler_takes_images_without_boxes():
    features = {"0": torch.randn(2, 4, 16, 16), "1": torch.randn(2, 4, 8, 8)}
    boxes = [torch.zeros(0, 4), torch.tensor([[2.0, 2.0, 30.0, 40.0]])]
    ours, theirs = MultiScaleRoIAlign(["0", "1"], 7, 2), torchvision.ops.MultiScaleRoIAlign(["0", "1"], 7, 2)
    with torch.no_grad():
        out = ours(features, boxes, [(64, 64), (64, 64)])
        assert out.shape == (1, 4, 7, 7) and torch.equal(out, theirs(features, boxes, [(64, 64), (64, 64)]))
        assert ours(features, [torch.zeros(0, 4)] * 2, [(64, 64)] * 2).shape == (0, 4, 7, 7)


def test_index_truncates_as_torchvisions_and_other_rois_go_to_torchvision():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 8, 8, generator=g)
    rois = torch.tensor([[-0.5, 1.0, 1.0, 6.0, 6.0], [1.9, 0.0, 2.0, 5.0, 7.0]])  # int(): images 0 and 1
    with torch.no_grad():
        assert torch.equal(roi_align(x, rois, 2, 1.0, 2), torchvision_roi_align(x, rois, 2, 1.0, 2))
    # rois of another dtype than the maps: torchvision's own call, so its own error
    with pytest.raises(RuntimeError) as ours, torch.no_grad():
        roi_align(x, rois.double(), 2, 1.0, 2)
    with pytest.raises(RuntimeError) as theirs:
        torchvision_roi_align(x, rois.double(), 2, 1.0, 2)
    assert str(ours.value) == str(theirs.value)


def test_sliced_and_transposed_maps_equal_torchvision():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(2, 6, 20, 24, generator=g)
    rois = hostile_rois(2, 24, g, torch.float32)
    for x in (base[:, 1:5], base[:, :, 2:18, 3:], base.transpose(2, 3)):
        with torch.no_grad():
            assert torch.equal(roi_align(x, rois, 7, 1.0, 2), torchvision_roi_align(x.contiguous(), rois, 7, 1.0, 2))
