"""Process entry points of the local serving backend (started by ``LocalBackend``).

MLOPS_SERVING_MODEL_URI=URI MLOPS_SERVING_TRACKING_URI=URI \
    python -m mlops_supervisor.tools.serving._main model --version N --port P
python -m mlops_supervisor.tools.serving._main router --routes FILE --samples FILE --port P

The model and tracking URIs come by environment, not as arguments: a tracking URI can hold
``user:password@`` (and a model URI a token), and a command line is readable by every user of
the machine (``ps``), a process's environment only by its owner.
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path

from mlops_supervisor.tools.serving._backend import MODEL_URI_VAR, TRACKING_URI_VAR

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Serve one model version or one router on loopback until terminated."""
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    parser = argparse.ArgumentParser(prog="mlops_supervisor.tools.serving._main")
    sub = parser.add_subparsers(dest="kind", required=True)
    model = sub.add_parser("model")
    model.add_argument("--version", required=True)
    model.add_argument("--port", type=int, required=True)
    model.add_argument("--fail-rate", type=float, default=0.0)
    router = sub.add_parser("router")
    router.add_argument("--routes", type=Path, required=True)
    router.add_argument("--samples", type=Path, required=True)
    router.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.kind == "model" and not (os.environ.get(MODEL_URI_VAR) and os.environ.get(TRACKING_URI_VAR)):
        parser.error(f"a model server needs {MODEL_URI_VAR} and {TRACKING_URI_VAR} in its environment")
    # One request is a few rows: OpenMP threads buy nothing there, and when the machine is
    # busy their spin-waiting costs whole cores (a loaded 2-core run spent minutes of CPU in
    # a model server's idle OpenMP workers). Set before numpy and scikit-learn load.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    if args.kind == "router":
        from mlops_supervisor.policies.pii import PresidioRedactor
        from mlops_supervisor.tools.serving._router import serve_router

        # The supervisor's redactor for the request samples: secrets and PII by pattern at once;
        # the NER model loads only if a sampled value reads as prose (a free-text feature).
        redactor = PresidioRedactor()
        _freeze_heap()
        serve_router(args.routes, samples_path=args.samples, redactor=redactor, host=_listen_host(), port=args.port)
        return

    import uvicorn

    from mlops_supervisor.tools.serving._model_server import build_model_app

    app = build_model_app(
        os.environ[MODEL_URI_VAR],
        tracking_uri=os.environ[TRACKING_URI_VAR],
        version=args.version,
        fail_rate=args.fail_rate,
    )
    _freeze_heap()
    uvicorn.run(
        app, host=_listen_host(), port=args.port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


def _listen_host() -> str:
    """Loopback, unless ``MLOPS_SERVING_HOST`` says otherwise: in a pod (the Kubernetes backend's manifests set
    ``0.0.0.0``) a Service reaches the server from outside the pod; on one machine nothing else should."""
    return os.environ.get("MLOPS_SERVING_HOST", "127.0.0.1")


def _freeze_heap() -> None:
    """Keep what loading made (MLflow, scikit-learn, the model: about 380,000 objects) out of GC passes.

    Without this a full collection walks all of it and pauses the server for 40 to 400 ms, which
    at 16 or more concurrent callers put the p99 of the model server at 230 to 440 ms (measured
    with a ``gc.callbacks`` timer); with it, the p99 stayed at 9 to 12 ms.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()
