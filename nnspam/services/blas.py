"""One BLAS thread for the long-running services (``nnspam daemon``, ``nnspam serve``).

They score one message at a time: a 1 x n_inputs by n_inputs x hidden product, which
takes ~0.05-0.1 ms on one OpenBLAS thread but measured 8-20 ms with two threads handing
work to each other on a busy 2-core host (load average 10). So both limit BLAS to one
thread, the same way, here.
"""

from __future__ import annotations

import os

__all__ = ["BLAS_THREAD_VARS", "one_blas_thread"]

#: The variables OpenBLAS, OpenMP builds and MKL read when they are loaded.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Limit BLAS to one thread in this process and in the processes it starts.

    Two steps, because each covers what the other cannot: the environment variables
    (set only where the user has not set them) are read by a BLAS library when it is
    loaded, so they reach a NumPy imported later and child processes; threadpoolctl
    (a dependency of nnspam) changes a library that is already loaded, where
    the variables come too late: ``nnspam serve`` imports NumPy while it reads its
    settings, and setting the variables alone left it on every core. Forked workers
    inherit the limit."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)
