"""``merits serve``: a trained run as an HTTP service with a web page (see :mod:`merits.serve.app`)."""

from merits.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def create_app(*args, **kwargs):
    from merits.serve.app import create_app as make  # FastAPI is imported only by what serves

    return make(*args, **kwargs)


def serve(*args, **kwargs):
    from merits.serve.app import serve as run

    return run(*args, **kwargs)
