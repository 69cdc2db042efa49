"""Errors a user can fix, found before or during a run: what is wrong, where (field path), and how to fix it."""

from __future__ import annotations


class WorkloadError(Exception):
    """A problem with the resource's spec or its data, named by field path, with a one-line fix."""

    def __init__(self, path: str, message: str, fix: str):
        self.path = path
        self.message = message
        self.fix = fix
        super().__init__(f"{path}: {message} (fix: {fix})")

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "fix": self.fix}
