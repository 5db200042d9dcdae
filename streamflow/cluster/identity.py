"""A worker's stable identity and its exclusive claim on a state directory.

The transactional id must survive restarts of the same worker, so that a restarted worker
fences its own zombie (the broker bumps the epoch and aborts the zombie's open transaction);
it is kept in the state dir. Two live workers must never share a state dir (RocksDB locks, and
one transactional id would fence the other in a loop), so the dir is flock'ed for the process'
lifetime.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path
from typing import IO

from streamflow.errors import ConfigError


class WorkerIdentity:
    def __init__(self, app_dir: Path) -> None:
        app_dir.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] = open(app_dir / ".lock", "w")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(
                f"state dir {app_dir} is in use by another worker; give each worker its own "
                "--state-dir"
            ) from None
        id_file = app_dir / "worker.id"
        if id_file.exists():
            self.worker_id = id_file.read_text().strip()
        else:
            self.worker_id = uuid.uuid4().hex[:12]
            tmp = id_file.with_suffix(".tmp")
            tmp.write_text(self.worker_id)
            os.replace(tmp, id_file)

    def release(self) -> None:
        self._lock.close()
