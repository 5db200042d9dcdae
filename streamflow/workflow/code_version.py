"""Which code a suspended instance failed in, so a worker with other code can run it again.

A fingerprint of a workflow version: its function's bytecode (nested functions included, set
constants in a stable order) and its module's source file. A redeploy that changes either
gives another fingerprint; an unchanged deploy (a restart, a rebalance) does not, so an
instance that fails deterministically is not run again for nothing.
"""

from __future__ import annotations

import hashlib
import sys
import types

from streamflow.workflow.api import WorkflowDef


def code_fingerprint(wdef: WorkflowDef) -> str:
    """What identifies the code a suspended instance failed in: its function's bytecode and
    its module's source. A worker whose fingerprint differs runs the instance again."""
    digest = hashlib.sha256()

    def walk(code: types.CodeType) -> None:
        digest.update(code.co_code)
        digest.update(repr(code.co_names).encode())
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const)
            elif isinstance(const, frozenset):
                digest.update(repr(sorted(map(repr, const))).encode())
            else:
                digest.update(repr(const).encode())

    code = getattr(wdef.fn, "__code__", None)
    if isinstance(code, types.CodeType):
        walk(code)
    module = sys.modules.get(getattr(wdef.fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if path:
        try:
            with open(path, "rb") as source:
                digest.update(source.read())
        except OSError:
            pass
    return digest.hexdigest()[:16]
