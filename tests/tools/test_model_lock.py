"""The per-model lock: re-entrant in the thread that holds it, exclusive for other threads and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from mlops_supervisor.tools.core import model_lock

_CHILD = """
import sys
from mlops_supervisor.tools.core import model_lock
print("ready", flush=True)
with model_lock(sys.argv[1], "m"):
    print("in", flush=True)
"""


def test_the_holder_may_take_it_again(tmp_path: Path) -> None:
    """A canary step that rolls back takes the lock it holds again; that must not wait on itself."""
    done = threading.Event()

    def nested() -> None:
        relative = Path(os.path.relpath(tmp_path))  # the same workspace, spelt another way
        with model_lock(tmp_path, "m"), model_lock(tmp_path, "m"), model_lock(relative, "m"):
            pass
        with model_lock(tmp_path, "m"):  # let go of fully after the nesting
            done.set()

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set()


def test_another_thread_and_another_process_wait_for_the_holder(tmp_path: Path) -> None:
    """While one thread holds a model's lock, another thread and another process block until it lets go."""
    entered = threading.Event()

    def other_thread() -> None:
        with model_lock(tmp_path, "m"):
            entered.set()

    child = [sys.executable, "-c", _CHILD, str(tmp_path)]
    with model_lock(tmp_path, "m"):
        threading.Thread(target=other_thread, daemon=True).start()
        process = subprocess.Popen(child, stdout=subprocess.PIPE, text=True)  # started while the lock is held
        assert process.stdout is not None
        try:
            assert process.stdout.readline().strip() == "ready"
            assert not entered.wait(1.5)
            assert process.poll() is None  # still waiting, not printed "in"
            with model_lock(tmp_path, "other-model"):  # other models are not held up
                pass
        except BaseException:
            process.kill()
            process.communicate()
            raise
    assert entered.wait(10)
    assert process.communicate(timeout=30)[0].strip() == "in"
    assert process.returncode == 0
