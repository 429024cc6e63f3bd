"""detkit.modeling.transform.check_images: what a detector accepts as images,
and the one-line error that names the image otherwise."""
import pytest
import torch

from detkit.modeling.transform import check_images


def test_float_rgb_images_of_any_size_pass():
    check_images([torch.rand(3, 5, 7), torch.rand(3, 64, 48, dtype=torch.float64)])
    check_images(torch.rand(2, 3, 8, 8))  # a batch tensor is a list of images


def test_finite_values_whose_sum_overflows_pass():
    """The NaN/inf check looks at the image's sum first; huge finite pixels overflow it and must still pass."""
    image = torch.full((3, 16, 16), 3e38)
    assert not torch.isfinite(image.sum())
    check_images([torch.rand(3, 4, 4), image])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0, 0), (2, 31, 17)])
def test_one_non_finite_pixel_is_named(value, where):
    image = torch.rand(3, 32, 18)
    image[where] = value
    with pytest.raises(ValueError, match=r"^images\[1\] contains NaN or inf$"):
        check_images([torch.rand(3, 4, 4), image])


@pytest.mark.parametrize("images, error, message", [
    ([], TypeError, r"non-empty list of Tensor\[3, H, W\]"),
    ("image.jpg", TypeError, r"non-empty list"),
    ([torch.rand(3, 4, 4), torch.rand(4, 4)], ValueError, r"images\[1\] must be a Tensor\[3, H, W\]"),
    ([torch.rand(1, 4, 4)], ValueError, r"images\[0\] has 1 channels"),
    ([torch.zeros(3, 4, 4, dtype=torch.uint8)], TypeError, r"images\[0\] must be float in \[0, 1\], got torch.uint8"),
], ids=["empty", "string", "two_dims", "one_channel", "uint8"])
def test_bad_images_are_named(images, error, message):
    with pytest.raises(error, match=message):
        check_images(images)
