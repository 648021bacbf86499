"""The controller manager's controllers: each a level-triggered reconcile over shared informers."""
