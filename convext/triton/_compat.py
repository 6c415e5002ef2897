"""Version fixes for the Triton interpreter (TRITON_INTERPRET=1), applied on import.

triton 3.6's interpreter turns a scalar kernel argument into a one-element NumPy array and gives
the tensor ``__index__ = int(array)``; NumPy 2.4 refuses ``int()`` of a 1-d array ("only
0-dimensional arrays can be converted to Python scalars"), so every ``range(n)`` over a runtime
scalar (the depth multiplier, a tap range) fails there.  triton 3.7 reads the scalar with
``.squeeze()`` first; this module installs that same ``__index__`` on interpreters that lack it.
Compiled (GPU) kernels are untouched: nothing here runs without the interpreter.
"""
import inspect
import os


def _index_of(t):
    return int(t.handle.data.squeeze())


def _patch_interpreter_index() -> bool:
    """Install the squeezing ``__index__`` in the interpreter's per-launch tensor patch.
    Returns True if it was needed (the interpreter's own one does not squeeze)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # no interpreter in this triton: nothing to fix
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_convext_patched", False):
        return False
    try:
        src = inspect.getsource(original)
    except (OSError, TypeError):
        return False
    if '"__index__"' not in src or "squeeze" in src:
        return False

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        # Through the scope, so the interpreter restores the class attribute after the launch.
        scope.set_attr(tensor, "__index__", _index_of)

    patch_lang_tensor._convext_patched = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


if os.environ.get("TRITON_INTERPRET", "0") == "1":
    _patch_interpreter_index()
