"""Human preference collection (``lmforge rate``, the ``human-preferences`` source) and the
``evaluate/arena`` stage (pairwise comparisons of several models, Bradley–Terry ratings)."""
