"""Bad annotations: an error naming the file and annotation, or, when the user
asks for skip_invalid=True, a count and one warning."""
from __future__ import annotations

import warnings


class AnnotationProblems:
    """Collects the problems of one annotation file.

    report() raises ValueError("<source>: <message>") unless skipping; then it
    records the message, and warn() later says how many were skipped.
    """

    def __init__(self, source: str, skip_invalid: bool):
        self.source = source
        self.skip_invalid = skip_invalid
        self.skipped: list[str] = []

    def report(self, message: str) -> None:
        if not self.skip_invalid:
            raise ValueError(f"{self.source}: {message}")
        self.skipped.append(message)

    def warn(self) -> None:
        if self.skipped:
            warnings.warn(
                f"{self.source}: skipped {len(self.skipped)} invalid annotation(s); first: {self.skipped[0]}",
                RuntimeWarning,
                stacklevel=3,
            )
