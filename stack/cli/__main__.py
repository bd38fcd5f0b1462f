from stack.cli import _entry

_entry()
