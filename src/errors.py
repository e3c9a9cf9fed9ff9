"""The project's exceptions: one root, a subclass per kind of failure the edges map differently."""


class MiniProdError(Exception):
    """Root of every error this project raises on purpose."""


class DataError(MiniProdError):
    """Input data (a file or a request) is unusable; CLIs exit 2, the API answers 400."""


class ArtifactError(MiniProdError):
    """Training artifacts are missing, corrupt, or fail their manifest check."""
