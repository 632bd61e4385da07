"""Example games used by the tests (not shipped): proof that the rules interface
is not shaped around arena alone."""
