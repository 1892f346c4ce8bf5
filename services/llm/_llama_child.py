"""The embedded model's child process: llama.cpp's own HTTP server through ``xllamacpp``.

:class:`~tandem.services.llm.LocalModelServer` runs this file as a script
(``python _llama_child.py --model ... --port ...``), not as a module of the
package, so the child imports ``xllamacpp`` and nothing of Tandem and starts in
well under a second before the model loads.

``xllamacpp.Server(params)`` loads the GGUF and serves llama.cpp's
OpenAI-compatible endpoints (``/v1/models``, ``/v1/chat/completions`` with
``response_format`` structured output) from C++ threads. The main thread then
only waits: for SIGTERM or SIGINT (the parent stopping it), or for the parent
to disappear (a killed Tandem must not leave a model server behind). Either
way it drops the server, which stops llama.cpp's loop and frees the model,
and exits 0.

Running it out of process keeps llama.cpp's own logging (C-level writes to
fd 2) in a log file instead of the user's terminal, and a crash of the native
code from taking Tandem down with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the child's command line.

    Parameters
    ----------
    argv : list of str or None
        Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns
    -------
    argparse.Namespace
        ``model``, ``alias``, ``host``, ``port``, ``n_ctx``, ``threads``,
        ``parallel``, ``verbosity``.
    """
    parser = argparse.ArgumentParser(prog="tandem-llama", description="llama.cpp server for Tandem (xllamacpp)")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="model name the server reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=8192, help="context length, tokens (all slots together)")
    parser.add_argument("--threads", type=int, default=-1, help="CPU threads; -1: llama.cpp decides")
    parser.add_argument("--parallel", type=int, default=1, help="slots (requests decoded at once)")
    parser.add_argument("--verbosity", type=int, default=3, help="llama.cpp log verbosity (0: errors only)")
    return parser.parse_args(argv)


def _wait_for_stop(parent: int) -> None:
    """Block until SIGTERM/SIGINT arrives or the parent process is gone."""
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    while os.getppid() == parent:
        if signal.sigtimedwait(stops, 1.0) is not None:
            return


def main(argv: list[str] | None = None) -> int:
    """Serve until told to stop; return the exit status.

    Raises
    ------
    SystemExit
        On bad arguments (argparse).
    """
    args = parse_args(argv)
    parent = os.getppid()
    # Block the stop signals before llama.cpp starts its threads, so they inherit
    # the mask and the signal is delivered to sigtimedwait, not to a random thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.n_ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.verbosity = args.verbosity
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:  # llama.cpp logged why (model file, context size) just before
        print(f"tandem-llama: llama.cpp could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"tandem-llama: serving {args.alias} on {server.listening_address}", file=sys.stderr, flush=True)
    try:
        _wait_for_stop(parent)
    finally:
        del server  # stops llama.cpp's main loop and frees the model
    print("tandem-llama: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
