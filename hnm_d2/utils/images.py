"""Image files as detectron2 reads them: upright, as their EXIF orientation says.

detectron2's ``read_image`` turns an image by its EXIF orientation tag before the model sees it,
so detections are in the coordinates of the upright image; whatever draws or exports them must
use the same size and pixels.
"""

from PIL import Image, ImageOps

__all__ = ["open_upright", "upright_size"]

# EXIF orientations that turn the image by 90 degrees (its width becomes its height).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = 0x0112


def open_upright(path):
    """The image at ``path`` as an RGB PIL image, turned upright."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def upright_size(path):
    """(width, height) of the upright image, read from the file's header only."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(_ORIENTATION_TAG) in _QUARTER_TURNS:
            return height, width
        return width, height
