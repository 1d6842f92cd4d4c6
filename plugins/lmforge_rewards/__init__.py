"""lmforge plugin: rewards (``python-checks``, ``exact-match``, ``composite``, ``reward-model``)
and the ``subprocess`` sandbox that runs model-written code."""
