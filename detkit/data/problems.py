"""Bad annotations: an error naming the file and the record, or, when the user
asks for skip_invalid=True, a count and one warning.

Two kinds of fault, as the datasets tell them apart:
- an invalid record (a box outside its image, an unknown category, a field of
  the wrong type) is reported: it raises, or under skip_invalid is skipped;
- a broken file (not JSON or XML, a section that is not a list, a record that
  is not an object, duplicate ids) fails: it always raises, since skipping
  would leave a dataset that means something else than the file.
"""
from __future__ import annotations

import warnings
from typing import NoReturn


class AnnotationError(ValueError):
    """An annotation file or record that cannot be used; the message starts
    with the file and names the record (annotation id, image, XML tag)."""


class AnnotationProblems:
    """Collects the problems of one annotation file.

    report() raises AnnotationError("<source>: <message>") unless skipping;
    then it records the message, and warn() later says how many were skipped.
    fail() always raises.
    """

    def __init__(self, source: str, skip_invalid: bool):
        self.source = source
        self.skip_invalid = skip_invalid
        self.skipped: list[str] = []

    def report(self, message: str) -> None:
        if not self.skip_invalid:
            raise AnnotationError(f"{self.source}: {message}")
        self.skipped.append(message)

    def fail(self, message: str) -> NoReturn:
        raise AnnotationError(f"{self.source}: {message}")

    def warn(self) -> None:
        if self.skipped:
            warnings.warn(
                f"{self.source}: skipped {len(self.skipped)} invalid annotation(s); first: {self.skipped[0]}",
                RuntimeWarning,
                stacklevel=3,
            )
