"""Controllers: a cache of what the watches saw, a work queue and one reconcile per kind (``base.py`` holds
what they share); each carries out its kind's plan from :mod:`trainserve.plans` and writes only changes."""
