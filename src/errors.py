"""The project's exceptions: one root, a subclass per kind of failure the edges map differently."""


class MiniProdError(Exception):
    """Root of every error this project raises on purpose."""


class DataError(MiniProdError):
    """Input data (a file or a request) is unusable; CLIs exit 2, the API answers 400."""


class ArtifactError(MiniProdError):
    """Training artifacts are missing, corrupt, or fail their manifest check."""


class RefusedError(MiniProdError):
    """An act its guards refused: the gate, the cooldown, a lock held too long, a move that
    another move came before, a rollback target that does not verify. CLIs exit 1."""


class UnreachableError(MiniProdError):
    """A dependency did not answer: the database, a webhook, the LLM. CLIs exit 3."""
