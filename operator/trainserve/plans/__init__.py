"""Plans: pure functions from what is observed to the status to write, the children to change and the Events
to post; one module per kind, ``canary.py`` for automatic promotion, ``common.py`` for what both share."""
