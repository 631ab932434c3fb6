"""An image's identity across datasets: its file, never a bare image id.

Separate COCO files all number their images from 1, so an id names an image only within its
dataset. Wherever hnm_d2 needs to know that two records are the same image (the hard-negative
buffer's keys, a mining pool against the training set), it compares their files, spelled one
way: the real path, so that a relative or absolute spelling, or one through a symbolic link,
names the same image.
"""

import os

__all__ = ["image_identity"]


def image_identity(file_name) -> str:
    """The one spelling of an image file (its real path)."""
    return os.path.realpath(os.fspath(file_name))
