"""Sources (kind ``source``): each factory takes its config and returns an iterable of record
dicts with ``describe()`` and ``check()`` (cheap existence checks run before any work) and a
``skipped`` counter of what it passed over, by reason."""
