"""Small utilities that import nothing of hnm_d2, so that every layer of the package may use
them: atomic file writes and strict JSON values (:mod:`hnm_d2.utils.atomic`)."""
