"""A DetectionCheckpointer whose files are written atomically and read with clear errors.

detectron2 writes a checkpoint straight to its final name: a process killed while saving leaves
a truncated ``model_XXXX.pth`` that ``last_checkpoint`` may point to, and ``--resume`` then dies
in torch.load with an unzip error. Here every file the checkpointer writes (the checkpoint and
the ``last_checkpoint`` tag) goes to a temporary file in the same directory, is flushed to disk,
then renamed over the final name: a reader sees the old file or the new one, never half of one.
"""

import glob
import logging
import os
import pickle
import zipfile

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic import TEMPORARY_FILE_PATTERN, atomic_open

__all__ = ["AtomicDetectionCheckpointer", "CheckpointError"]


logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: truncated, corrupt, or of another model."""


class _AtomicWritesPathManager:
    """Wraps an iopath PathManager: local files opened for writing are written atomically."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path, mode="r", **kwargs):
        if "w" in mode and "://" not in str(path):
            return atomic_open(path, mode)
        return self._path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic writes and a clear error for an unusable file.

    Loading raises :class:`CheckpointError` naming the file when it is truncated or not a
    checkpoint, and when it gives the model no parameter (a checkpoint of another model:
    detectron2 would only warn and go on with random weights).
    """

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = _AtomicWritesPathManager(self.path_manager)
        self._current_file = None  # the file being loaded, for error messages

    def resume_or_load(self, path, *, resume=True):
        if resume and self.save_to_disk and self.save_dir:
            self._remove_files_of_interrupted_saves()
        return super().resume_or_load(path, resume=resume)

    def _remove_files_of_interrupted_saves(self):
        """Delete the temporary files of saves that a kill interrupted (checkpoint-sized each).

        Called before this run saves anything, so none of them can belong to a save under way.
        """
        for leftover in glob.glob(os.path.join(self.save_dir, TEMPORARY_FILE_PATTERN)):
            logger.info("Removing %s, left by a save that was interrupted.", leftover)
            os.unlink(leftover)

    def _load_model(self, checkpoint):
        checkpoint_keys = sorted(checkpoint["model"])
        incompatible = super()._load_model(checkpoint)
        # Judged on what was loaded, after detectron2 renamed the keys: an ImageNet .pkl (Caffe2
        # or torchvision names, "matching_heuristics") shares no key name with the model before
        # that renaming. Parameters only: detectron2 drops pixel_mean/pixel_std from the missing
        # keys, so those buffers would count as loaded from any file.
        not_loaded = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        parameters = [name for name, _ in self.model.named_parameters()]
        if checkpoint_keys and parameters and not_loaded.issuperset(parameters):
            raise CheckpointError(
                f"Checkpoint {self._current_file} gave the model no parameter: none of its "
                f"{len(checkpoint_keys)} keys (such as {checkpoint_keys[:3]}) matches one of the "
                f"model's (such as {sorted(parameters)[:3]}), even after detectron2's renaming. "
                "It belongs to another model: point MODEL.WEIGHTS at a checkpoint of this "
                "architecture, or an ImageNet backbone .pkl of its depth."
            )
        return incompatible

    def _load_file(self, filename):
        self._current_file = filename
        # Caught around _load_file, which every detectron2 has: the torch.load inside it is
        # DetectionCheckpointer._torch_load only after 0.6.
        try:
            return super()._load_file(filename)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise CheckpointError(
                f"Checkpoint {filename} cannot be read ({type(e).__name__}: {e}). It is "
                "truncated or not a checkpoint: point MODEL.WEIGHTS at a complete .pth file, "
                "or, when resuming, delete it and edit OUTPUT_DIR/last_checkpoint to name the "
                "previous checkpoint."
            ) from e
